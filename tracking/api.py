"""REST API for live data. Writes go through tracking.services."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from dispatch.api import OrganizationTimezoneMixin
from dispatch.models import Driver, Membership
from dispatch.selectors import membership_for
from tracking.selectors import driver_route_today, driver_routes, driver_stops
from tracking.serializers import (
    DriverRouteSerializer,
    DriverRouteSummarySerializer,
    DriverRouteToday,
    DriverStopSerializer,
    FixInput,
    LocationBatchInput,
    LocationBatchResult,
    RouteEventInput,
    RouteEventResult,
    StopEventInput,
    StopEventResult,
)
from tracking.services import driver_route_event, driver_stop_event, location_record_batch


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


# --- The driver working a route (issue #4) ---------------------------------------------------


def _driver(request) -> Driver:
    driver = Driver.objects.select_related("organization", "user").filter(user=request.user).first()
    if driver is None:
        raise PermissionDenied("Your account has no driver profile; ask your dispatcher to add one.")
    return driver


class DriverRouteView(OrganizationTimezoneMixin, APIView):
    """GET the signed-in driver's published or started route for today, stops in planned order.

    Answers {"route": null} when there is none (not yet published, or already ended).
    """

    permission_classes = [IsDriver]

    @extend_schema(responses={200: DriverRouteToday})
    def get(self, request):
        route = driver_route_today(driver=_driver(request))
        return Response({"route": DriverRouteSerializer(route).data if route else None})


class DriverRouteEventsView(OrganizationTimezoneMixin, APIView):
    """POST {uuid, kind: start|end, at} for one of the driver's routes today (else 404).

    409 when the route cannot change that way (e.g. ending it while stops are open). A repeated
    uuid answers the route as it is now with "duplicate": true and changes nothing.
    """

    permission_classes = [IsDriver]

    @extend_schema(request=RouteEventInput, responses={200: RouteEventResult})
    def post(self, request, route_id: int):
        driver = _driver(request)
        route = get_object_or_404(driver_routes(driver=driver), pk=route_id)
        data = RouteEventInput(data=request.data)
        data.is_valid(raise_exception=True)
        result = driver_route_event(driver=driver, route=route, **data.validated_data)
        return Response(
            {"route": DriverRouteSummarySerializer(result.route).data, "duplicate": result.duplicate}
        )


class DriverStopEventsView(OrganizationTimezoneMixin, APIView):
    """POST {uuid, kind: arrived|delivered|failed|skipped, at, reason?, note?, lat?, lng?}.

    Only for stops of the driver's own routes today (anything else is a 404). 400 names the bad
    field (a failure needs a reason; "other" needs a note); 409 when the stop cannot change that
    way (e.g. it is already delivered). A repeated uuid answers the stop as it is now with
    "duplicate": true and records nothing new.
    """

    permission_classes = [IsDriver]

    @extend_schema(request=StopEventInput, responses={200: StopEventResult})
    def post(self, request, stop_id: int):
        driver = _driver(request)
        stop = get_object_or_404(driver_stops(driver=driver), pk=stop_id)
        data = StopEventInput(data=request.data)
        data.is_valid(raise_exception=True)
        result = driver_stop_event(driver=driver, stop=stop, **data.validated_data)
        return Response({"stop": DriverStopSerializer(result.stop).data, "duplicate": result.duplicate})
