"""Django admin for live data: platform staff only (not scoped to an organisation, as in
dispatch.admin). GPS history is evidence: LocationPing is read-only; positions are written by
tracking.services.location_record_batch alone, so DriverPosition is read-only too."""

from django.contrib import admin
from django.http import HttpRequest

from dispatch.admin import ReadOnlyAdmin
from tracking.models import (
    Alert,
    CustomerRequest,
    DriverAction,
    DriverPosition,
    InboundCallback,
    LocationPing,
    Notification,
    NotificationOptOut,
    TrackerDevice,
    TrackingLink,
    TrackingSettings,
    WebhookEndpoint,
)


@admin.register(LocationPing)
class LocationPingAdmin(ReadOnlyAdmin):
    list_display = ["driver", "recorded_at", "received_at", "lat", "lng", "accuracy_m", "source", "flags"]
    list_filter = ["source", "flags", "organization"]
    search_fields = ["uuid", "driver__user__username", "driver__user__last_name"]
    date_hierarchy = "recorded_at"
    list_select_related = ["driver__user"]
    show_full_result_count = False  # count(*) over the whole ping history is slow


@admin.register(DriverPosition)
class DriverPositionAdmin(ReadOnlyAdmin):
    list_display = ["driver", "recorded_at", "received_at", "lat", "lng", "accuracy_m", "source"]
    list_filter = ["source", "organization"]
    search_fields = ["driver__user__username", "driver__user__last_name"]
    list_select_related = ["driver__user"]


@admin.register(DriverAction)
class DriverActionAdmin(ReadOnlyAdmin):
    """The driver's actions as the app sent them: evidence for disputes, so read-only."""

    list_display = ["driver", "kind", "stop", "recorded_at", "received_at"]
    list_filter = ["kind", "organization"]
    search_fields = ["uuid", "driver__user__username", "driver__user__last_name", "stop__order__external_ref"]
    date_hierarchy = "received_at"
    list_select_related = ["driver__user", "stop__order", "stop__route__driver__user"]
    show_full_result_count = False


@admin.register(TrackerDevice)
class TrackerDeviceAdmin(admin.ModelAdmin):
    """Keys are made and revoked in the portal (the key is shown once there); here: who and when."""

    list_display = ["name", "driver", "key_hint", "created_at", "last_seen_at", "revoked_at"]
    list_filter = ["organization", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "key_hint", "driver__user__username", "driver__user__last_name"]
    readonly_fields = ["organization", "driver", "key_hint", "created_at", "created_by", "last_seen_at"]
    list_select_related = ["driver__user"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    """Raised and resolved by tracking.alerts, acknowledged on the dashboard: a read-only log."""

    list_display = ["kind", "message", "raised_at", "acknowledged_at", "resolved_at"]
    list_filter = ["kind", "organization", ("resolved_at", admin.EmptyFieldListFilter)]
    search_fields = ["message", "key"]
    date_hierarchy = "raised_at"
    list_select_related = ["route__driver__user"]
    show_full_result_count = False


@admin.register(TrackingSettings)
class TrackingSettingsAdmin(admin.ModelAdmin):
    """What an organisation's customers see and receive: link expiry, the driver on the map,
    the windows they may ask for, which messages go out on which channel, quiet hours, wording."""

    list_display = [
        "organization",
        "link_expiry_days",
        "show_driver_within_stops",
        "quiet_from",
        "quiet_until",
    ]
    search_fields = ["organization__name"]


@admin.register(TrackingLink)
class TrackingLinkAdmin(ReadOnlyAdmin):
    """Links are issued and revoked from the order page; the token itself is never stored."""

    list_display = ["order", "created_at", "expires_at", "revoked_at", "views", "last_seen_at"]
    list_filter = ["organization", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["order__external_ref", "order__recipient_name"]
    exclude = ["salt", "token_hash"]
    list_select_related = ["order"]
    show_full_result_count = False


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    """The outbox: every message to a customer, as sent, with its attempts and last error."""

    list_display = ["order", "event", "channel", "status", "recipient", "attempts", "sent_at", "created_at"]
    list_filter = ["status", "event", "channel", "organization"]
    search_fields = ["key", "recipient", "order__external_ref"]
    date_hierarchy = "created_at"
    list_select_related = ["order"]
    show_full_result_count = False


@admin.register(NotificationOptOut)
class NotificationOptOutAdmin(ReadOnlyAdmin):
    list_display = ["order", "via", "created_at"]
    list_filter = ["via", "organization"]
    search_fields = ["order__external_ref"]


@admin.register(CustomerRequest)
class CustomerRequestAdmin(ReadOnlyAdmin):
    """What customers asked for on the tracking page; decided on the dashboard or order page."""

    list_display = ["order", "kind", "status", "rating", "created_at", "decided_at"]
    list_filter = ["kind", "status", "organization"]
    search_fields = ["order__external_ref", "text"]
    date_hierarchy = "created_at"
    list_select_related = ["order"]
    show_full_result_count = False


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ReadOnlyAdmin):
    """Managed in the portal (/webhooks/) and the API, where secrets are shown and rotated;
    here: which exist, their state and failures. The secrets are never shown."""

    list_display = ["url", "organization", "active", "consecutive_failures", "disabled_reason", "created_at"]
    list_filter = ["active", "organization"]
    search_fields = ["url", "description"]
    exclude = ["secret", "previous_secret"]
    list_select_related = ["organization"]


@admin.register(InboundCallback)
class InboundCallbackAdmin(ReadOnlyAdmin):
    """Provider callbacks already handled: a replay with the same event id is not acted on."""

    list_display = ["source", "event_id", "received_at"]
    list_filter = ["source"]
    search_fields = ["event_id"]
    date_hierarchy = "received_at"
