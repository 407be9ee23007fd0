"""Django admin for live data: platform staff only (not scoped to an organisation, as in
dispatch.admin). GPS history is evidence: LocationPing is read-only; positions are written by
tracking.services.location_record_batch alone, so DriverPosition is read-only too."""

from django.contrib import admin
from django.http import HttpRequest

from tracking.models import Alert, DriverAction, DriverPosition, LocationPing, TrackerDevice


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


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
