"""Input and output shapes of the tracking API. Plausibility rules live in tracking.services."""

from django.utils.dateparse import parse_datetime
from rest_framework import serializers

from tracking.models import Source

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
