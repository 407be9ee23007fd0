from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from rest_framework import serializers

from dispatch.models import Contact, Depot, Driver, Order, Plan, Route, Shift, Stop, StopEvent
from dispatch.planning import MAX_BUDGET_SECONDS
from dispatch.timeutils import local_datetime


class LocalDateTimeField(serializers.DateTimeField):
    """A time with an offset is taken as sent; one without is wall-clock time in the
    organisation's zone, under the same DST rule as the portal (dispatch.timeutils)."""

    def to_internal_value(self, value):
        parsed = super().to_internal_value(value)
        # Far-off years are typos, and the zone's local-mean-time offsets of centuries ago
        # (e.g. +00:53:28 in Berlin) cannot be written in ISO 8601 / RFC 3339 answers.
        if not 1970 <= parsed.year <= 2200:
            raise serializers.ValidationError("Give a time between the years 1970 and 2200.")
        return parsed

    def enforce_timezone(self, value):
        if timezone.is_aware(value):
            return super().enforce_timezone(value)
        try:
            return local_datetime(value.date(), value.time(), timezone.get_current_timezone())
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from exc


class OrderSerializer(serializers.ModelSerializer):
    """What integrators read. Times are ISO 8601 with offset, in the organisation's zone."""

    id = serializers.IntegerField(read_only=True)
    depot = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    required_driver = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    needs_location = serializers.BooleanField(read_only=True)
    # Blank when not known: a plain string, or the schema's "email" format would not hold.
    recipient_email = serializers.CharField(read_only=True)

    class Meta:
        model = Order
        fields = [
            "id", "public_id", "external_ref", "kind", "status", "recipient_name", "recipient_phone",
            "recipient_email", "address", "lat", "lng", "needs_location", "service_date",
            "window_start", "window_end", "service_minutes", "parcels", "priority", "depot",
            "required_driver", "instructions", "high_value", "parcel_codes", "require_pin", "cancel_reason",
            "version", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields


class OrderInput(serializers.Serializer):
    """What integrators send to create or change an order. Times need an offset or are read
    in the organisation's zone; `depot` and `required_driver` are ids in your organisation."""

    kind = serializers.ChoiceField(choices=Order.Kind.choices, required=False)
    external_ref = serializers.CharField(max_length=100, required=False, allow_blank=True)
    recipient_name = serializers.CharField(max_length=200)
    recipient_phone = serializers.CharField(max_length=32, required=False, allow_blank=True)
    recipient_email = serializers.EmailField(required=False, allow_blank=True)
    address = serializers.CharField(max_length=300)
    lat = serializers.FloatField(min_value=-90, max_value=90, required=False, allow_null=True)
    lng = serializers.FloatField(min_value=-180, max_value=180, required=False, allow_null=True)
    service_date = serializers.DateField()
    window_start = LocalDateTimeField(required=False, allow_null=True)
    window_end = LocalDateTimeField(required=False, allow_null=True)
    service_minutes = serializers.IntegerField(min_value=0, max_value=600, required=False)
    parcels = serializers.IntegerField(min_value=0, max_value=10000, required=False)
    priority = serializers.ChoiceField(choices=Order.Priority.choices, required=False)
    depot = serializers.IntegerField(required=False, allow_null=True)
    required_driver = serializers.IntegerField(required=False, allow_null=True)
    instructions = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    high_value = serializers.BooleanField(required=False, help_text="The stricter proof policy applies.")
    parcel_codes = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False, max_length=100,
        help_text="Barcodes on the parcels; the driver's scan must match one.",
    )  # fmt: skip
    require_pin = serializers.BooleanField(
        required=False, help_text="The driver must type the PIN the customer was sent."
    )
    version = serializers.IntegerField(
        required=False, help_text="The version you read; a stale one is refused with 409."
    )

    def validate(self, attrs):
        start, end = attrs.get("window_start"), attrs.get("window_end")
        if start and end and end <= start:
            raise serializers.ValidationError({"window_end": "The window must end after it starts."})
        return attrs


class OrderCancelInput(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=300)


class BulkResult(serializers.Serializer):
    created = serializers.IntegerField()
    orders = OrderSerializer(many=True)


class BulkItemError(serializers.Serializer):
    index = serializers.IntegerField(help_text="0-based position of the item in the array you sent.")
    field = serializers.CharField(help_text="The field at fault; `non_field_errors` for the item as a whole.")
    messages = serializers.ListField(child=serializers.CharField())


class BulkErrors(serializers.Serializer):
    detail = serializers.CharField()
    errors = BulkItemError(many=True, required=False, help_text="Absent when the body is not a JSON array.")


class OrderEventSerializer(serializers.ModelSerializer):
    """One entry of an order's history (created, planned, arrived, delivered, failed…)."""

    stop = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)

    class Meta:
        model = StopEvent
        fields = ["id", "kind", "from_status", "to_status", "reason", "note", "lat", "lng", "at", "stop"]
        read_only_fields = fields


class PlanSerializer(serializers.ModelSerializer):
    """A planning run: `progress` while it runs, `result` (routes, left-out orders with reasons,
    totals) when it has succeeded."""

    depot = serializers.PrimaryKeyRelatedField(read_only=True)

    class Meta:
        model = Plan
        fields = [
            "id", "date", "depot", "status", "objective", "time_budget_seconds", "options",
            "progress", "result", "error", "created_at", "started_at", "finished_at",
        ]  # fmt: skip
        read_only_fields = fields


class PlanInput(serializers.Serializer):
    date = serializers.DateField()
    depot = serializers.IntegerField()
    drivers = serializers.ListField(
        child=serializers.IntegerField(),
        required=False,
        help_text="Driver ids; default: everyone with a shift that day.",
    )
    orders = serializers.ListField(
        child=serializers.IntegerField(),
        required=False,
        help_text="Order ids; default: every open order of the day.",
    )
    objective = serializers.ChoiceField(choices=Plan.Objective.choices, default=Plan.Objective.TIME)
    time_budget_seconds = serializers.IntegerField(min_value=1, max_value=MAX_BUDGET_SECONDS, default=10)
    balance = serializers.BooleanField(default=False)


class PlanPublishResult(serializers.Serializer):
    published = serializers.ListField(
        child=serializers.IntegerField(), help_text="Ids of the routes published."
    )


# --- Routes, fleet and address book ---------------------------------------------------------


class StopSerializer(serializers.ModelSerializer):
    order = serializers.PrimaryKeyRelatedField(read_only=True)
    external_ref = serializers.CharField(source="order.external_ref", read_only=True)

    class Meta:
        model = Stop
        fields = [
            "id", "order", "external_ref", "sequence", "status", "planned_arrival", "planned_wait_s",
            "eta", "arrived_at", "departed_at", "failure_reason",
        ]  # fmt: skip
        read_only_fields = fields


class RouteSerializer(serializers.ModelSerializer):
    depot = serializers.PrimaryKeyRelatedField(read_only=True)
    driver = serializers.PrimaryKeyRelatedField(read_only=True)
    vehicle = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    plan = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    stops = StopSerializer(many=True, read_only=True)

    class Meta:
        model = Route
        fields = [
            "id", "date", "status", "depot", "driver", "vehicle", "plan", "locked", "planned_start",
            "planned_end", "planned_distance_m", "planned_duration_s", "travelled_distance_m",
            "started_at", "completed_at", "version", "stops",
        ]  # fmt: skip
        read_only_fields = fields


class DriverSerializer(serializers.ModelSerializer):
    name = serializers.CharField(read_only=True)
    depot = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    default_vehicle = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)

    class Meta:
        model = Driver
        fields = ["id", "name", "phone", "depot", "default_vehicle", "is_active"]
        read_only_fields = fields


class DepotSerializer(serializers.ModelSerializer):
    class Meta:
        model = Depot
        fields = ["id", "name", "address", "lat", "lng", "is_active"]
        read_only_fields = fields


class DepotInput(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    address = serializers.CharField(max_length=300)
    lat = serializers.FloatField(min_value=-90, max_value=90)
    lng = serializers.FloatField(min_value=-180, max_value=180)
    is_active = serializers.BooleanField(required=False)


class ContactSerializer(serializers.ModelSerializer):
    email = serializers.CharField(read_only=True, help_text="Blank when not known.")

    class Meta:
        model = Contact
        fields = [
            "id", "name", "company", "phone", "email", "address", "lat", "lng", "default_instructions",
            "default_service_minutes", "notes", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields


class ContactInput(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    company = serializers.CharField(max_length=200, required=False, allow_blank=True)
    phone = serializers.CharField(max_length=32, required=False, allow_blank=True)
    email = serializers.EmailField(required=False, allow_blank=True)
    address = serializers.CharField(max_length=300)
    lat = serializers.FloatField(min_value=-90, max_value=90, required=False, allow_null=True)
    lng = serializers.FloatField(min_value=-180, max_value=180, required=False, allow_null=True)
    default_instructions = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    default_service_minutes = serializers.IntegerField(min_value=0, max_value=600, required=False)
    notes = serializers.CharField(required=False, allow_blank=True, max_length=2000)


class ShiftSerializer(serializers.ModelSerializer):
    driver = serializers.PrimaryKeyRelatedField(read_only=True)
    vehicle = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)

    class Meta:
        model = Shift
        fields = [
            "id", "driver", "date", "starts_at", "ends_at", "break_starts_at", "break_minutes", "vehicle",
            "start_lat", "start_lng", "end_lat", "end_lng",
        ]  # fmt: skip
        read_only_fields = fields


class ShiftInput(serializers.Serializer):
    """A driver's availability. Times need an offset or are read in the organisation's zone."""

    driver = serializers.IntegerField(help_text="A driver id in your organisation.")
    date = serializers.DateField()
    starts_at = LocalDateTimeField()
    ends_at = LocalDateTimeField()
    break_starts_at = LocalDateTimeField(required=False, allow_null=True)
    break_minutes = serializers.IntegerField(min_value=0, max_value=600, required=False)
    vehicle = serializers.IntegerField(required=False, allow_null=True)
    start_lat = serializers.FloatField(min_value=-90, max_value=90, required=False, allow_null=True)
    start_lng = serializers.FloatField(min_value=-180, max_value=180, required=False, allow_null=True)
    end_lat = serializers.FloatField(min_value=-90, max_value=90, required=False, allow_null=True)
    end_lng = serializers.FloatField(min_value=-180, max_value=180, required=False, allow_null=True)

    def validate(self, attrs):
        start, end = attrs.get("starts_at"), attrs.get("ends_at")
        if start and end and end <= start:
            raise serializers.ValidationError({"ends_at": "The shift must end after it starts."})
        brk = attrs.get("break_starts_at")
        if brk and start and end and not start <= brk < end:
            raise serializers.ValidationError({"break_starts_at": "The break must start during the shift."})
        return attrs
