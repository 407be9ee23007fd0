"""Django admin for the core domain: platform staff only.

The admin is open to is_staff users alone (Django's default, AUTHZ-5), and only platform staff
get is_staff, so querysets here are deliberately NOT scoped to an organisation: staff see and
search every tenant. Organisation members use the portal, whose selectors scope every read.

Status fields are read-only everywhere: status changes go through dispatch.services only, so
that every one is a legal transition and leaves a StopEvent. Order edits go through
order_create / order_update for the same reason; StopEvent, the audit log, cannot be changed.
"""

import zoneinfo
from datetime import datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.core.exceptions import ValidationError
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import SimpleTemplateResponse
from django.utils import timezone
from django.utils.translation import ngettext

from dispatch.models import (
    ApiKey,
    Contact,
    Depot,
    Driver,
    IdempotencyRecord,
    Membership,
    Order,
    Organization,
    Plan,
    Route,
    Shift,
    Stop,
    StopEvent,
    Vehicle,
)
from dispatch.services import (
    ORDER_EDITABLE_FIELDS,
    IllegalTransition,
    order_cancel,
    order_create,
    order_update,
    sessions_end,
)

User = get_user_model()

admin.site.site_header = "Doorstep admin"
admin.site.site_title = "Doorstep admin"


def _local(value: datetime | None, organization: Organization, fmt: str) -> str | None:
    """`value` on the organisation's clock; staff usually have no zone of their own (UTC)."""
    if value is None:
        return None
    return value.astimezone(organization.tzinfo).strftime(fmt)


# --- Shared bases ---------------------------------------------------------------------------


class TenantForm(forms.ModelForm):
    """Refuses a reference to another organisation's row, as the services do for the portal."""

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        organization = cleaned.get("organization")
        organization_id = organization.pk if organization else self.instance.organization_id
        if organization_id is None:
            return cleaned
        for name, value in list(cleaned.items()):
            other = getattr(value, "organization_id", None)
            if other is not None and other != organization_id:
                self.add_error(name, "This belongs to another organisation than the row itself.")
        return cleaned


class TenantAdmin(admin.ModelAdmin):
    """A row that belongs to one organisation; shown and edited on that organisation's clock."""

    form = TenantForm

    def get_readonly_fields(self, request: HttpRequest, obj=None) -> tuple[str, ...]:
        fields = tuple(super().get_readonly_fields(request, obj))
        # Moving a row to another tenant would leave its references behind in the old one.
        if obj is not None and "organization" not in fields:
            fields += ("organization",)
        return fields

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        # Date-times on the form are shown and read in the row's organisation's zone, as in
        # the portal: a window typed as 09:00 means 09:00 where the delivery happens.
        tz = self._organization_tz(request, object_id)
        if tz is None:
            return super().changeform_view(request, object_id, form_url, extra_context)
        with timezone.override(tz):
            response = super().changeform_view(request, object_id, form_url, extra_context)
            if isinstance(response, SimpleTemplateResponse):
                response.render()  # inside the override: rendering is otherwise deferred
        return response

    def _organization_tz(self, request: HttpRequest, object_id: str | None) -> zoneinfo.ZoneInfo | None:
        try:
            if object_id:
                rows = self.model._default_manager.filter(pk=object_id)
                name = rows.values_list("organization__timezone", flat=True).first()
            else:
                organization_id = request.POST.get("organization") or request.GET.get("organization")
                if not organization_id:
                    return None
                rows = Organization.objects.filter(pk=organization_id)
                name = rows.values_list("timezone", flat=True).first()
            return zoneinfo.ZoneInfo(name) if name else None
        except (ValueError, ValidationError, zoneinfo.ZoneInfoNotFoundError):
            return None  # a malformed id: let the admin answer it as usual


class ReadOnlyAdmin(admin.ModelAdmin):
    """Evidence and logs (events, GPS history, proofs, messages): shown, never edited here."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def get_readonly_fields(self, request: HttpRequest, obj=None) -> tuple[str, ...]:
        return tuple(self.fields)

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


# --- Organisations and people ---------------------------------------------------------------


class OrganizationMembershipInline(admin.TabularInline):
    model = Membership
    fields = ("user", "role", "created_at")
    readonly_fields = ("created_at",)
    autocomplete_fields = ("user",)
    extra = 0

    def get_queryset(self, request: HttpRequest) -> QuerySet[Membership]:
        return super().get_queryset(request).select_related("user")


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "timezone", "member_count", "created_at")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("created_at",)
    inlines = (OrganizationMembershipInline,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Organization]:
        return super().get_queryset(request).annotate(member_count=Count("memberships"))

    @admin.display(description="members", ordering="member_count")
    def member_count(self, organization: Organization) -> int:
        return organization.member_count


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "organization", "role", "created_at")
    list_filter = ("role", "organization")
    search_fields = (
        "user__username",
        "user__email",
        "user__first_name",
        "user__last_name",
        "organization__name",
    )
    list_select_related = ("user", "organization")
    autocomplete_fields = ("user", "organization")
    readonly_fields = ("created_at",)


class UserMembershipInline(admin.StackedInline):
    model = Membership
    fields = ("organization", "role")
    autocomplete_fields = ("organization",)
    extra = 0
    max_num = 1  # one organisation per user (Membership.user is one-to-one)


if admin.site.is_registered(User):
    admin.site.unregister(User)


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    # Sessions have no admin page of their own: a session's key is its login cookie, and an
    # admin page would show it to anyone allowed to view sessions. Staff end them per user.
    actions = ["sign_out_everywhere"]

    def get_inlines(self, request: HttpRequest, obj=None) -> list:
        # Not on the add form: create the user first, then give them an organisation.
        return [UserMembershipInline] if obj is not None else []

    @admin.action(description="Sign selected users out everywhere", permissions=["change"])
    def sign_out_everywhere(self, request: HttpRequest, queryset: QuerySet) -> None:
        ended = sessions_end(users=queryset)
        self.message_user(
            request,
            ngettext("Ended %d session.", "Ended %d sessions.", ended) % ended,
            messages.SUCCESS,
        )


# --- Fleet and address book -----------------------------------------------------------------


@admin.register(Depot)
class DepotAdmin(TenantAdmin):
    list_display = ("name", "organization", "address", "lat", "lng", "is_active")
    list_filter = ("is_active", "organization")
    search_fields = ("name", "address")
    list_select_related = ("organization",)
    autocomplete_fields = ("organization",)


@admin.register(Vehicle)
class VehicleAdmin(TenantAdmin):
    list_display = ("name", "registration", "organization", "depot", "capacity", "is_active")
    list_filter = ("is_active", "organization")
    search_fields = ("name", "registration")
    list_select_related = ("organization", "depot")
    autocomplete_fields = ("organization", "depot")


@admin.register(Driver)
class DriverAdmin(TenantAdmin):
    list_display = (
        "name",
        "user",
        "organization",
        "phone",
        "depot",
        "default_vehicle",
        "is_active",
    )
    list_filter = ("is_active", "organization")
    search_fields = (
        "user__username",
        "user__first_name",
        "user__last_name",
        "user__email",
        "phone",
    )
    list_select_related = ("user", "organization", "depot", "default_vehicle")
    autocomplete_fields = ("organization", "user", "depot", "default_vehicle")

    @admin.display(description="name", ordering="user__first_name")
    def name(self, driver: Driver) -> str:
        return driver.name


@admin.register(Shift)
class ShiftAdmin(TenantAdmin):
    list_display = ("driver", "date", "starts", "ends", "break_minutes", "vehicle", "organization")
    list_filter = ("date", "organization")
    search_fields = (
        "driver__user__username",
        "driver__user__first_name",
        "driver__user__last_name",
    )
    date_hierarchy = "date"
    list_select_related = ("driver__user", "organization", "vehicle")
    autocomplete_fields = ("organization", "driver", "vehicle")

    @admin.display(description="starts (local)", ordering="starts_at")
    def starts(self, shift: Shift) -> str | None:
        return _local(shift.starts_at, shift.organization, "%H:%M %Z")

    @admin.display(description="ends (local)", ordering="ends_at")
    def ends(self, shift: Shift) -> str | None:
        return _local(shift.ends_at, shift.organization, "%H:%M %Z")


@admin.register(Contact)
class ContactAdmin(TenantAdmin):
    list_display = ("name", "company", "address", "phone", "email", "organization", "located")
    list_filter = ("organization",)
    search_fields = ("name", "company", "address", "phone", "email")
    list_select_related = ("organization",)
    autocomplete_fields = ("organization",)
    readonly_fields = ("created_at", "updated_at")

    @admin.display(description="on the map", boolean=True)
    def located(self, contact: Contact) -> bool:
        return contact.lat is not None and contact.lng is not None


# --- Orders ---------------------------------------------------------------------------------


class NeedsLocationFilter(admin.SimpleListFilter):
    title = "location"
    parameter_name = "needs_location"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Needs a location"), ("no", "On the map")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Order]) -> QuerySet[Order]:
        missing = Q(lat__isnull=True) | Q(lng__isnull=True)
        if self.value() == "yes":
            return queryset.filter(missing)
        if self.value() == "no":
            return queryset.exclude(missing)
        return queryset


class OrderStopInline(ReadOnlyInline):
    model = Stop
    verbose_name_plural = "visits"
    fields = ("route", "sequence", "status", "eta", "arrived_at", "departed_at", "failure_reason")
    ordering = ("pk",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Stop]:
        return super().get_queryset(request).select_related("route__driver__user", "order")


class OrderEventInline(ReadOnlyInline):
    model = StopEvent
    verbose_name_plural = "history"
    fields = ("at", "kind", "from_status", "to_status", "reason", "note", "stop", "actor")
    ordering = ("at", "pk")

    def get_queryset(self, request: HttpRequest) -> QuerySet[StopEvent]:
        return (
            super().get_queryset(request).select_related("actor", "stop__route__driver__user", "stop__order")
        )


def _window(order: Order) -> str | None:
    if order.window_start is None and order.window_end is None:
        return None
    tz = order.organization.tzinfo
    start = order.window_start.astimezone(tz) if order.window_start else None
    end = order.window_end.astimezone(tz) if order.window_end else None
    if start and end:
        return f"{start:%H:%M}–{end:%H:%M} {end:%Z}"
    if start:
        return f"from {start:%H:%M %Z}"
    return f"until {end:%H:%M %Z}"


@admin.register(Order)
class OrderAdmin(TenantAdmin):
    list_display = (
        "reference",
        "recipient_name",
        "organization",
        "service_date",
        "window",
        "status",
        "priority",
        "kind",
        "needs_location",
    )
    list_filter = (
        "status",
        NeedsLocationFilter,
        "kind",
        "priority",
        "service_date",
        "organization",
    )
    search_fields = (
        "external_ref",
        "recipient_name",
        "recipient_phone",
        "recipient_email",
        "address",
    )
    date_hierarchy = "service_date"
    list_select_related = ("organization",)
    autocomplete_fields = ("organization", "contact", "depot", "required_driver")
    fieldsets = (
        (None, {"fields": ("organization", "kind", "external_ref", "status", "priority")}),
        (
            "Recipient",
            {"fields": ("contact", "recipient_name", "recipient_phone", "recipient_email")},
        ),
        ("Where", {"fields": ("depot", "address", ("lat", "lng"))}),
        (
            "When",
            {"fields": ("service_date", "window_start", "window_end", "window", "service_minutes")},
        ),
        ("Load and assignment", {"fields": ("parcels", "required_driver", "instructions")}),
        (
            "Record",
            {"fields": ("public_id", "cancel_reason", "version", "created_at", "updated_at")},
        ),
    )
    readonly_fields = (
        "status",
        "window",
        "public_id",
        "cancel_reason",
        "version",
        "created_at",
        "updated_at",
    )
    inlines = (OrderStopInline, OrderEventInline)
    actions = ("cancel_selected",)

    def get_readonly_fields(self, request: HttpRequest, obj=None) -> tuple[str, ...]:
        fields = super().get_readonly_fields(request, obj)
        if obj is not None and not obj.is_open:
            # order_update refuses closed orders; show it all rather than a form that fails.
            return fields + tuple(sorted(ORDER_EDITABLE_FIELDS - set(fields)))
        return fields

    @admin.display(description="reference", ordering="external_ref")
    def reference(self, order: Order) -> str:
        return order.external_ref or f"#{order.pk}"

    @admin.display(description="window (local)", ordering="window_start")
    def window(self, order: Order) -> str | None:
        return _window(order)

    @admin.display(description="needs location", boolean=True)
    def needs_location(self, order: Order) -> bool:
        return order.needs_location

    def save_model(self, request: HttpRequest, obj: Order, form: forms.ModelForm, change: bool):
        # Through the services, so that the edit bumps `version` (a dispatcher's stale form
        # is then refused) and leaves a "created"/"updated" StopEvent naming the staff user.
        if change:
            fields = {
                name: form.cleaned_data[name] for name in form.changed_data if name in ORDER_EDITABLE_FIELDS
            }
            if fields:
                order_update(order=obj, by=request.user, **fields)
            obj.refresh_from_db()
            return
        fields = {name: getattr(obj, name) for name in ORDER_EDITABLE_FIELDS}
        created = order_create(organization=obj.organization, by=request.user, **fields)
        obj.pk, obj.public_id, obj._state.adding = created.pk, created.public_id, False
        obj.refresh_from_db()

    @admin.action(description="Cancel selected orders", permissions=["change"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        cancelled, refused = 0, []
        for order in queryset.order_by("pk"):
            try:
                order_cancel(order=order, by=request.user, reason="Cancelled by staff in the admin.")
            except IllegalTransition as exc:
                refused.append(f"{order}: {exc}")
            else:
                cancelled += 1
        if cancelled:
            self.message_user(
                request,
                ngettext("Cancelled %d order.", "Cancelled %d orders.", cancelled) % cancelled,
                messages.SUCCESS,
            )
        if refused:
            shown = "; ".join(refused[:20])
            more = f"; and {len(refused) - 20} more" if len(refused) > 20 else ""
            self.message_user(
                request,
                f"Refused to cancel {len(refused)}: {shown}{more}",
                messages.WARNING,
            )


# --- Planning, routes and stops -------------------------------------------------------------


@admin.register(Plan)
class PlanAdmin(TenantAdmin):
    list_display = (
        "__str__",
        "date",
        "organization",
        "depot",
        "status",
        "objective",
        "created_by",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "objective", "date", "organization")
    search_fields = ("depot__name", "organization__name", "created_by__username")
    date_hierarchy = "created_at"
    list_select_related = ("organization", "depot", "created_by")
    autocomplete_fields = ("organization", "depot")
    raw_id_fields = ("created_by",)
    # The planner run owns these; a hand edit would misreport what the solver did.
    readonly_fields = (
        "status",
        "progress",
        "result",
        "error",
        "created_at",
        "started_at",
        "finished_at",
    )


class RouteStopInline(ReadOnlyInline):
    """The route's stops in driving order. Resequencing belongs to planning, not to a grid."""

    model = Stop
    fields = (
        "sequence",
        "order",
        "address",
        "status",
        "planned_arrival",
        "eta",
        "arrived_at",
        "departed_at",
        "failure_reason",
    )
    ordering = ("sequence",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Stop]:
        return super().get_queryset(request).select_related("order")

    @admin.display(description="address")
    def address(self, stop: Stop) -> str:
        return stop.order.address


@admin.register(Route)
class RouteAdmin(TenantAdmin):
    list_display = (
        "__str__",
        "date",
        "driver",
        "organization",
        "depot",
        "vehicle",
        "status",
        "stop_count",
        "locked",
    )
    list_filter = ("status", "date", "locked", "organization")
    search_fields = (
        "driver__user__username",
        "driver__user__first_name",
        "driver__user__last_name",
        "vehicle__name",
        "vehicle__registration",
        "depot__name",
    )
    date_hierarchy = "date"
    list_select_related = ("organization", "driver__user", "depot", "vehicle")
    autocomplete_fields = ("organization", "driver", "depot", "vehicle")
    raw_id_fields = ("plan",)
    readonly_fields = ("status", "version", "started_at", "completed_at", "created_at")
    inlines = (RouteStopInline,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Route]:
        return super().get_queryset(request).annotate(stop_count=Count("stops"))

    @admin.display(description="stops", ordering="stop_count")
    def stop_count(self, route: Route) -> int:
        return route.stop_count

    def save_model(self, request: HttpRequest, obj: Route, form: forms.ModelForm, change: bool):
        if change:
            obj.version += 1  # a copy someone opened before this save is now stale
        super().save_model(request, obj, form, change)


class StopEventsInline(ReadOnlyInline):
    model = StopEvent
    verbose_name_plural = "history"
    fields = ("at", "kind", "from_status", "to_status", "reason", "note", "lat", "lng", "actor")
    ordering = ("at", "pk")

    def get_queryset(self, request: HttpRequest) -> QuerySet[StopEvent]:
        return super().get_queryset(request).select_related("actor")


@admin.register(Stop)
class StopAdmin(TenantAdmin):
    list_display = (
        "__str__",
        "sequence",
        "status",
        "planned",
        "eta_local",
        "arrived",
        "organization",
    )
    list_filter = ("status", "route__date", "organization")
    search_fields = ("order__external_ref", "order__recipient_name", "order__address")
    date_hierarchy = "route__date"
    list_select_related = ("organization", "route__driver__user", "order")
    raw_id_fields = ("route", "order")
    # Set by stop_transition along with the status; a hand edit would contradict the log.
    readonly_fields = ("status", "public_id", "arrived_at", "departed_at", "failure_reason")
    inlines = (StopEventsInline,)

    @admin.display(description="planned (local)", ordering="planned_arrival")
    def planned(self, stop: Stop) -> str | None:
        return _local(stop.planned_arrival, stop.organization, "%H:%M %Z")

    @admin.display(description="ETA (local)", ordering="eta")
    def eta_local(self, stop: Stop) -> str | None:
        return _local(stop.eta, stop.organization, "%H:%M %Z")

    @admin.display(description="arrived (local)", ordering="arrived_at")
    def arrived(self, stop: Stop) -> str | None:
        return _local(stop.arrived_at, stop.organization, "%H:%M %Z")


# --- The audit log --------------------------------------------------------------------------


@admin.register(StopEvent)
class StopEventAdmin(admin.ModelAdmin):
    """Append-only: reports and disputes rely on it, so nobody adds, edits or deletes here."""

    list_display = (
        "when",
        "kind",
        "order",
        "stop_label",
        "from_status",
        "to_status",
        "reason",
        "actor",
        "organization",
        "notified_at",
    )
    list_filter = ("kind", ("notified_at", admin.EmptyFieldListFilter), "organization")
    search_fields = (
        "order__external_ref",
        "order__recipient_name",
        "reason",
        "note",
        "actor__username",
    )
    date_hierarchy = "at"
    list_select_related = ("organization", "order", "stop", "actor")
    fields = readonly_fields = (
        "organization",
        "order",
        "stop",
        "kind",
        "from_status",
        "to_status",
        "reason",
        "note",
        "lat",
        "lng",
        "at",
        "actor",
        "recorded_at",
        "notified_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description="at (local)", ordering="at")
    def when(self, event: StopEvent) -> str | None:
        return _local(event.at, event.organization, "%Y-%m-%d %H:%M:%S %Z")

    @admin.display(description="stop", ordering="stop__sequence")
    def stop_label(self, event: StopEvent) -> str | None:
        if event.stop is None:
            return None
        return f"#{event.stop.sequence} on route {event.stop.route_id}"


# --- Integrations ----------------------------------------------------------------------------


@admin.register(ApiKey)
class ApiKeyAdmin(ReadOnlyAdmin):
    """Keys are made and revoked in the portal (/settings/api-keys/, the key shown once there);
    here: which exist, who made them and when they were last used. The hash is never shown."""

    list_display = ["name", "organization", "prefix", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["organization", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix"]
    exclude = ["key_hash"]
    list_select_related = ["organization"]


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(ReadOnlyAdmin):
    """The first answers to POSTs with an Idempotency-Key (purged after IDEMPOTENCY_KEY_HOURS)."""

    list_display = ["key", "principal", "method", "path", "status_code", "created_at", "completed_at"]
    list_filter = ["organization", "method", "status_code"]
    search_fields = ["key", "path", "principal"]
    date_hierarchy = "created_at"
    show_full_result_count = False
