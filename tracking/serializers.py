"""Input and output shapes of the tracking API. Plausibility rules live in tracking.services."""

from django.utils.dateparse import parse_datetime
from rest_framework import serializers

from dispatch.models import Depot, Order, Route, Stop
from tracking.models import Source
from tracking.services import FAILURE_REASONS

MAX_FIXES = 500


class OffsetDateTimeField(serializers.DateTimeField):
    """ISO 8601 with a UTC offset: a phone's local time without one is ambiguous."""

    def to_internal_value(self, value):
        parsed = parse_datetime(value) if isinstance(value, str) else None
        if parsed is not None and parsed.tzinfo is None:
            self.fail("no_offset")
        return super().to_internal_value(value)

    default_error_messages = {
        "no_offset": "Give the time with its UTC offset, e.g. 2026-11-24T09:15:00+01:00 or …Z.",
    }


class FixInput(serializers.Serializer):
    """One fix. Unknown keys (a driver id, say) are ignored: identity is the caller's login."""

    uuid = serializers.UUIDField()
    recorded_at = OffsetDateTimeField()
    lat = serializers.FloatField()
    lng = serializers.FloatField()
    accuracy = serializers.FloatField(required=False, allow_null=True)
    speed = serializers.FloatField(required=False, allow_null=True)
    heading = serializers.FloatField(required=False, allow_null=True)


class LocationBatchInput(serializers.Serializer):
    """The envelope only; each fix is validated on its own so one bad fix rejects only itself."""

    fixes = serializers.ListField(
        child=serializers.JSONField(),
        allow_empty=False,
        max_length=MAX_FIXES,
        error_messages={
            "max_length": f"At most {MAX_FIXES} fixes per request; send the rest in another request.",
            "empty": "Send at least one fix.",
        },
    )
    source = serializers.ChoiceField(choices=Source.choices, default=Source.BROWSER)


class RejectedFix(serializers.Serializer):
    index = serializers.IntegerField()
    uuid = serializers.CharField(allow_null=True)
    reason = serializers.CharField()


class LocationBatchResult(serializers.Serializer):
    accepted = serializers.IntegerField(help_text="New fixes stored by this request.")
    duplicates = serializers.IntegerField(help_text="Fixes already stored earlier (same uuid).")
    rejected = RejectedFix(many=True)
    flagged = serializers.IntegerField(help_text="Stored fixes flagged low-accuracy or speed-jump.")


# --- The driver working a route (issue #4) ---------------------------------------------------


class DriverOrderSerializer(serializers.ModelSerializer):
    """What a driver needs to find the customer and hand over the parcels; nothing more."""

    class Meta:
        model = Order
        fields = [
            "external_ref",
            "kind",
            "recipient_name",
            "recipient_phone",
            "address",
            "lat",
            "lng",
            "window_start",
            "window_end",
            "parcels",
            "service_minutes",
            "instructions",
            "customer_instructions",  # what the customer asked on the tracking page, shown apart
        ]


class DriverStopSerializer(serializers.ModelSerializer):
    order = DriverOrderSerializer()

    class Meta:
        model = Stop
        fields = ["id", "sequence", "status", "planned_arrival", "order"]


class DriverDepotSerializer(serializers.ModelSerializer):
    class Meta:
        model = Depot
        fields = ["name", "address", "lat", "lng"]


class DriverRouteSummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = Route
        fields = ["id", "date", "status", "started_at", "completed_at"]


class ArrivalSuggestionSerializer(serializers.Serializer):
    """tracking.selectors.ArrivalSuggestion: the open stop the driver seems to be at."""

    stop = serializers.IntegerField(source="stop.pk")
    sequence = serializers.IntegerField(source="stop.sequence")
    address = serializers.CharField(source="stop.order.address")
    since = serializers.DateTimeField(help_text="His first position near it, of the last 15 minutes.")


class DriverRouteSerializer(serializers.ModelSerializer):
    """Today's route with its stops in planned order (the selector prefetches them)."""

    depot = DriverDepotSerializer()
    vehicle = serializers.CharField(source="vehicle.name", default=None)
    stops = DriverStopSerializer(many=True)
    # Set on the route by DriverRouteView from tracking.selectors.arrival_suggestion.
    arrival_suggestion = ArrivalSuggestionSerializer(
        read_only=True,
        allow_null=True,
        default=None,
        help_text="The stop the driver seems to have reached: offer to mark it arrived. Null if none.",
    )

    class Meta:
        model = Route
        fields = [
            "id",
            "date",
            "status",
            "started_at",
            "completed_at",
            "depot",
            "vehicle",
            "stops",
            "arrival_suggestion",
        ]


class DriverRouteToday(serializers.Serializer):
    route = DriverRouteSerializer(allow_null=True)


# Module-level so config.settings' SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"] can name them.
ROUTE_EVENT_KINDS = [("start", "Start"), ("end", "End")]
STOP_EVENT_KINDS = [
    ("arrived", "Arrived"),
    ("delivered", "Delivered"),
    ("failed", "Failed"),
    ("skipped", "Skipped"),
]
FAILURE_REASON_CHOICES = list(FAILURE_REASONS.items())


class RouteEventInput(serializers.Serializer):
    uuid = serializers.UUIDField(
        help_text="Made by the app, one per action; a replay is answered, not redone."
    )
    kind = serializers.ChoiceField(choices=ROUTE_EVENT_KINDS)
    at = OffsetDateTimeField(help_text="When the driver did it, by the phone's clock.")


class StopOutcomeChecks:
    """What a stop action and a stop's proof both require: a reason to fail, words for "other",
    and a position given whole or not at all."""

    def validate(self, data):
        if data["kind"] == "failed" and not data["reason"]:
            raise serializers.ValidationError({"reason": "Choose why the stop failed."})
        if data["reason"] == "other" and not data["note"].strip():
            raise serializers.ValidationError({"note": "Say what went wrong when the reason is “other”."})
        if (data["lat"] is None) != (data["lng"] is None):
            raise serializers.ValidationError({"lat": "Send lat and lng together, or neither."})
        return data


class StopEventInput(StopOutcomeChecks, serializers.Serializer):
    uuid = serializers.UUIDField(
        help_text="Made by the app, one per action; a replay is answered, not redone."
    )
    kind = serializers.ChoiceField(
        choices=[
            ("arrived", "Arrived"),
            ("delivered", "Delivered"),
            ("failed", "Failed"),
            ("skipped", "Skipped"),
        ]
    )
    at = OffsetDateTimeField(help_text="When the driver did it, by the phone's clock.")
    reason = serializers.ChoiceField(
        choices=FAILURE_REASON_CHOICES,
        required=False,
        allow_blank=True,
        default="",
        help_text="Why it failed; required when kind is failed.",
    )
    note = serializers.CharField(required=False, allow_blank=True, default="", max_length=1000)
    lat = serializers.FloatField(required=False, allow_null=True, default=None, min_value=-90, max_value=90)
    lng = serializers.FloatField(required=False, allow_null=True, default=None, min_value=-180, max_value=180)


class StopEventResult(serializers.Serializer):
    stop = DriverStopSerializer()
    duplicate = serializers.BooleanField(
        help_text="True when this uuid was already recorded; nothing changed."
    )


class RouteEventResult(serializers.Serializer):
    route = DriverRouteSummarySerializer()
    duplicate = serializers.BooleanField(
        help_text="True when this uuid was already recorded; nothing changed."
    )


class StopProofInput(StopOutcomeChecks, serializers.Serializer):
    """The multipart form of a stop's completion (or failed attempt) with its proof."""

    uuid = serializers.UUIDField(help_text="Made by the app per capture; a retry returns the first result.")
    kind = serializers.ChoiceField(
        choices=[("delivered", "Delivered"), ("failed", "Failed")], default="delivered"
    )
    at = OffsetDateTimeField(help_text="When the driver captured it, by the phone's clock.")
    reason = serializers.ChoiceField(
        choices=FAILURE_REASON_CHOICES, required=False, allow_blank=True, default="",
        help_text="Why it failed; required when kind is failed.",
    )  # fmt: skip
    note = serializers.CharField(required=False, allow_blank=True, default="", max_length=1000)
    recipient_name = serializers.CharField(required=False, allow_blank=True, default="", max_length=200)
    pin = serializers.CharField(required=False, allow_blank=True, default="", max_length=10)
    scanned_code = serializers.CharField(required=False, allow_blank=True, default="", max_length=100)
    lat = serializers.FloatField(required=False, allow_null=True, default=None, min_value=-90, max_value=90)
    lng = serializers.FloatField(required=False, allow_null=True, default=None, min_value=-180, max_value=180)
    accuracy = serializers.FloatField(required=False, allow_null=True, default=None, min_value=0)
    photos = serializers.ListField(
        child=serializers.FileField(allow_empty_file=True), required=False, default=list,
        help_text="JPEG, PNG or WebP; the server re-encodes them without metadata.",
    )  # fmt: skip
    signature = serializers.FileField(required=False, allow_null=True, default=None, allow_empty_file=True)


class StopProofResult(serializers.Serializer):
    stop = DriverStopSerializer()
    duplicate = serializers.BooleanField()
    proof = serializers.DictField(help_text="public_id, outcome, photos, signature, hashes, flags")
