from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from rest_framework import serializers

from dispatch.models import Order, Plan
from dispatch.planning import MAX_BUDGET_SECONDS
from dispatch.timeutils import local_datetime


class LocalDateTimeField(serializers.DateTimeField):
    """A time with an offset is taken as sent; one without is wall-clock time in the
    organisation's zone, under the same DST rule as the portal (dispatch.timeutils)."""

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
    depot = serializers.PrimaryKeyRelatedField(read_only=True)
    required_driver = serializers.PrimaryKeyRelatedField(read_only=True)
    needs_location = serializers.BooleanField(read_only=True)

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
