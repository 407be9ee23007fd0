"""REST API for live data. Writes go through tracking.services."""

from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from dispatch.api import OrganizationTimezoneMixin
from dispatch.models import Driver, Membership
from dispatch.selectors import membership_for
from tracking.serializers import FixInput, LocationBatchInput, LocationBatchResult
from tracking.services import location_record_batch


class IsDriver(BasePermission):
    message = "This endpoint is for drivers of an organisation."

    def has_permission(self, request, view) -> bool:
        membership = membership_for(request.user)
        return membership is not None and membership.role == Membership.Role.DRIVER


def _reason(detail) -> str:
    """DRF's nested error detail as one sentence: "lat: A valid number is required."."""
    if isinstance(detail, dict):
        return " ".join(
            f"{field}: {' '.join(map(str, errors if isinstance(errors, list) else [errors]))}"
            if field != "non_field_errors"
            else " ".join(map(str, errors))
            for field, errors in detail.items()
        )
    return " ".join(map(str, detail if isinstance(detail, list) else [detail]))


class DriverLocationsView(OrganizationTimezoneMixin, APIView):
    """POST a batch of GPS fixes (at most 500), each with a client-made uuid.

    Answers 200 with how many were new, how many were duplicates (already sent), which were
    rejected (index + reason; the rest are still stored) and how many were stored but flagged.
    The fixes are always the logged-in driver's: a body naming another driver (`driver` or
    `driver_id`, on the batch or on a fix) is refused with 400 and nothing is stored (ING-6).
    """

    permission_classes = [IsDriver]

    @extend_schema(request=LocationBatchInput, responses={200: LocationBatchResult})
    def post(self, request):
        envelope = LocationBatchInput(data=request.data)
        envelope.is_valid(raise_exception=True)
        driver = Driver.objects.filter(user=request.user).first()
        if driver is None:
            raise PermissionDenied("Your account has no driver profile; ask your dispatcher to add one.")
        claimed = (
            {request.data.get(k) for k in ("driver", "driver_id")}
            if isinstance(request.data, dict)
            else set()
        )
        for raw in envelope.validated_data["fixes"]:
            if isinstance(raw, dict):
                claimed |= {raw.get(k) for k in ("driver", "driver_id")}
        if {str(c) for c in claimed if c is not None} - {str(driver.pk)}:
            raise ValidationError(
                {"driver": "Positions are recorded for the signed-in driver only; leave out driver ids."}
            )

        # One serializer instance, run per item: a malformed fix rejects only itself.
        item, valid, indexes, rejected = FixInput(), [], [], []
        for index, raw in enumerate(envelope.validated_data["fixes"]):
            try:
                valid.append(item.run_validation(raw))
                indexes.append(index)
            except ValidationError as exc:
                raw_uuid = raw.get("uuid") if isinstance(raw, dict) else None
                rejected.append(
                    {
                        "index": index,
                        "uuid": None if raw_uuid is None else str(raw_uuid),
                        "reason": _reason(exc.detail),
                    }
                )
        result = location_record_batch(driver=driver, fixes=valid, source=envelope.validated_data["source"])
        for entry in result["rejected"]:
            entry["index"] = indexes[entry["index"]]  # back to the position in the request body
        result["rejected"] = sorted(rejected + result["rejected"], key=lambda entry: entry["index"])
        return Response(result)
