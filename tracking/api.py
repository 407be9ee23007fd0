"""REST API for live data. Writes go through tracking.services.

The driver's POSTs are idempotent by their own client ids (each fix's uuid, each action's and
capture's uuid). An `Idempotency-Key` header adds the integration endpoints' layer on top
(dispatch.api_base.IdempotencyMixin): the first answer replayed, 422 for a different body, 409
while in flight; a POST without the header costs no extra query. The tracker protocol is left
out: it has no user to scope a key by, and tracker apps send no such header.
"""

import hashlib

from django.conf import settings
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.permissions import AllowAny, BasePermission
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from dispatch.api import OrganizationTimezoneMixin
from dispatch.api_base import IdempotencyMixin
from dispatch.models import Driver, Membership
from dispatch.selectors import membership_for
from pod.images import ImageRejected
from pod.selectors import proof_summary
from pod.uploads import ProofUploadLimit
from tracking.eta import eta_refresh_soon
from tracking.links import tracking_link_lookup, tracking_link_seen
from tracking.osmand import OsmAndError, osmand_key, osmand_parse
from tracking.public_views import retry_after
from tracking.selectors import (
    arrival_suggestion,
    customer_view,
    driver_route_today,
    driver_routes,
    driver_stops,
)
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
    StopProofInput,
    StopProofResult,
)
from tracking.services import (
    driver_route_event,
    driver_stop_event,
    driver_stop_proof,
    location_record_batch,
    tracker_device_for_key,
    tracker_location_record,
)


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


class DriverLocationsView(IdempotencyMixin, APIView):
    """POST a batch of GPS fixes (at most 500), each with a client-made uuid.

    Answers 200 with how many were new, how many were duplicates (already sent), which were
    rejected (index + reason; the rest are still stored) and how many were stored but flagged.
    The fixes are always the logged-in driver's: a body naming another driver (`driver` or
    `driver_id`, on the batch or on a fix) is refused with 400 and nothing is stored (ING-6).

    The hottest endpoint, so it reads as little as it can: the token's query also loads the
    membership and the driver profile (dispatch.api_auth.UserTokenAuthentication), and the
    organisation's zone is not activated (OrganizationTimezoneMixin) because nothing here
    depends on it: a time without an offset is refused, and the answer holds no times.
    """

    permission_classes = [IsDriver]

    @extend_schema(request=LocationBatchInput, responses={200: LocationBatchResult})
    def post(self, request):
        envelope = LocationBatchInput(data=request.data)
        envelope.is_valid(raise_exception=True)
        try:
            driver = request.user.driver  # loaded with the token; a query for a session user
        except Driver.DoesNotExist:
            driver = None
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
        if result["accepted"]:
            eta_refresh_soon(driver_id=driver.pk)
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

    Answers {"route": null} when there is none (not yet published, or already ended). The route's
    "arrival_suggestion" names the open stop the driver's positions have stayed near for
    ARRIVAL_DWELL_S seconds, for the app to offer "mark arrived?"; null otherwise.
    """

    permission_classes = [IsDriver]

    @extend_schema(responses={200: DriverRouteToday})
    def get(self, request):
        driver = _driver(request)
        route = driver_route_today(driver=driver)
        if route is not None:
            route.arrival_suggestion = arrival_suggestion(driver=driver, route=route)
        return Response({"route": DriverRouteSerializer(route).data if route else None})


class DriverRouteEventsView(IdempotencyMixin, OrganizationTimezoneMixin, APIView):
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


class DriverStopEventsView(IdempotencyMixin, OrganizationTimezoneMixin, APIView):
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


class DriverStopProofView(IdempotencyMixin, OrganizationTimezoneMixin, APIView):
    """POST multipart: complete a stop (or record a failed attempt) with its proof of delivery.

    Fields: uuid, kind (delivered | failed), at, reason (when failed), note, recipient_name,
    pin, scanned_code, lat, lng, accuracy, photos (one or more files), signature (a PNG).
    The stop's change and its proof are saved together or not at all. 400 names what is missing
    or wrong (the organisation's policy, a wrong PIN, a parcel that is not this order's); 413 an
    upload over the size limit; 415 a file that is not a JPEG, PNG or WebP image. A repeated
    uuid answers the first result with "duplicate": true.
    """

    permission_classes = [IsDriver]

    def initialize_request(self, request, *args, **kwargs):
        # Before DRF parses the body: stop reading a file as soon as it passes its limit.
        request.upload_handlers.insert(0, ProofUploadLimit(request))
        return super().initialize_request(request, *args, **kwargs)

    @extend_schema(
        request={"multipart/form-data": StopProofInput},
        responses={200: StopProofResult, 400: None, 404: None, 409: None, 413: None, 415: None},
    )
    def post(self, request, stop_id: int):
        driver = _driver(request)
        stop = get_object_or_404(driver_stops(driver=driver), pk=stop_id)
        data = StopProofInput(
            data={**request.data.dict(), "photos": request.FILES.getlist("photos")}
            if hasattr(request.data, "dict")
            else request.data
        )
        too_large = getattr(request._request, "upload_too_large", None)
        if too_large:
            limit = (
                settings.POD_SIGNATURE_MAX_BYTES
                if too_large == "signature"
                else settings.POD_MAX_UPLOAD_BYTES
            )
            return Response(
                {too_large: [f"This file is larger than {limit / 1_000_000:g} MB; send a smaller one."]},
                status=413,
            )
        data.is_valid(raise_exception=True)
        try:
            result = driver_stop_proof(driver=driver, stop=stop, **data.validated_data)
        except ImageRejected as rejected:
            return Response({rejected.field: [rejected.message]}, status=rejected.status)
        return Response(
            {
                "stop": DriverStopSerializer(result.stop).data,
                "duplicate": result.duplicate,
                "proof": proof_summary(result.stop),
            }
        )


# --- Tracker apps over the OsmAnd protocol (issue #4 item 4) ----------------------------------


class TrackerThrottle(SimpleRateThrottle):
    """Per device key (hashed: keys never reach the cache), else per IP address.

    An app flushing its offline buffer sends one request per fix back to back, so the default is
    generous; a 429 only makes the app keep the fix and try again later.
    Set REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["tracker"] to change it.
    """

    scope = "tracker"
    DEFAULT_RATE = "600/min"

    def get_rate(self) -> str:
        return self.THROTTLE_RATES.get(self.scope) or self.DEFAULT_RATE

    def get_cache_key(self, request, view) -> str:
        key = osmand_key(query=request.query_params, body=request.body, content_type=request.content_type)
        ident = f"key:{hashlib.sha256(key.encode()).hexdigest()}" if key else f"ip:{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


_OSMAND_PARAMETERS = [
    OpenApiParameter(
        "id", str, description="The device key shown when the tracker was added (or `deviceid`)."
    ),
    OpenApiParameter(
        "timestamp",
        str,
        description="Unix seconds, unix milliseconds or ISO 8601 (UTC when no offset). "
        "Missing: the time of arrival.",
    ),
    OpenApiParameter("lat", float, description="Latitude in degrees."),
    OpenApiParameter("lon", float, description="Longitude in degrees."),
    OpenApiParameter("speed", float, description="Speed in knots (the OsmAnd protocol's unit)."),
    OpenApiParameter("bearing", float, description="Heading in degrees (or `heading`)."),
    OpenApiParameter("accuracy", float, description="Horizontal accuracy in metres."),
    OpenApiParameter("altitude", float, description="Accepted and ignored."),
    OpenApiParameter("batt", float, description="Battery level in %; accepted and ignored."),
]
_OSMAND_JSON = inline_serializer(
    name="OsmAndJsonInput",
    fields={
        "device_id": serializers.CharField(help_text="The device key."),
        "location": inline_serializer(
            name="OsmAndJsonLocation",
            fields={
                "timestamp": serializers.DateTimeField(),
                "coords": inline_serializer(
                    name="OsmAndJsonCoords",
                    fields={
                        "latitude": serializers.FloatField(),
                        "longitude": serializers.FloatField(),
                        "accuracy": serializers.FloatField(required=False, help_text="Metres."),
                        "speed": serializers.FloatField(required=False, help_text="m/s; negative = unknown."),
                        "heading": serializers.FloatField(
                            required=False, help_text="Degrees; negative = unknown."
                        ),
                        "altitude": serializers.FloatField(required=False),
                    },
                ),
                "is_moving": serializers.BooleanField(required=False),
                "odometer": serializers.FloatField(required=False),
                "event": serializers.CharField(required=False),
                "battery": serializers.DictField(required=False),
            },
        ),
    },
)
_OSMAND_ERROR = inline_serializer(name="OsmAndError", fields={"detail": serializers.CharField()})
_OSMAND_RESPONSES = {
    200: LocationBatchResult,
    400: OpenApiResponse(_OSMAND_ERROR, description="The request cannot be read (says why)."),
    401: OpenApiResponse(_OSMAND_ERROR, description="Unknown or revoked device key; nothing stored."),
}


class TrackerOsmAndView(APIView):
    """GPS fixes from a tracker app (Traccar Client, OsmAnd…) over the OsmAnd protocol.

    No log-in: the device key a dispatcher created on the driver's Trackers page is the app's
    device identifier and its only credential. GET or POST with query parameters (or a form
    body), or POST JSON as Traccar Client 9+ sends it. 200 answers like driver/locations/: how
    many fixes were new, duplicates (a retry), rejected with the reason (e.g. a time in the
    future), or flagged. 401 for an unknown or revoked key, 400 for an unreadable request;
    neither stores anything.
    """

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [TrackerThrottle]

    @extend_schema(
        operation_id="tracker_osmand_get", parameters=_OSMAND_PARAMETERS, responses=_OSMAND_RESPONSES
    )
    def get(self, request):
        return self._record(request)

    @extend_schema(
        operation_id="tracker_osmand_post",
        parameters=_OSMAND_PARAMETERS,
        request={"application/json": _OSMAND_JSON, "application/x-www-form-urlencoded": OpenApiTypes.OBJECT},
        responses=_OSMAND_RESPONSES,
        examples=[
            OpenApiExample(
                "Traccar Client (JSON)",
                request_only=True,
                media_type="application/json",
                value={
                    "device_id": "<device key>",
                    "location": {
                        "timestamp": "2026-11-24T09:59:30.000Z",
                        "coords": {
                            "latitude": 52.52,
                            "longitude": 13.405,
                            "accuracy": 6,
                            "speed": 8.3,
                            "heading": 90,
                        },
                        "is_moving": True,
                        "battery": {"level": 0.8, "is_charging": False},
                    },
                },
            )
        ],
    )
    def post(self, request):
        return self._record(request)

    def _record(self, request) -> Response:
        body, content_type = request.body, request.content_type or ""
        key = osmand_key(query=request.query_params, body=body, content_type=content_type)
        if not key:
            return self._unauthorized(
                "No device key: set the app's device identifier to the key shown on the driver's "
                "Trackers page (sent as id=… or device_id)."
            )
        device = tracker_device_for_key(key)
        if device is None:
            return self._unauthorized(
                "Unknown or revoked device key: ask your dispatcher for a new key on the driver's "
                "Trackers page."
            )
        now = timezone.now()
        try:
            message = osmand_parse(query=request.query_params, body=body, content_type=content_type, now=now)
        except OsmAndError as exc:
            return Response({"detail": str(exc)}, status=400)
        result = tracker_location_record(device=device, fixes=message.fixes, now=now)
        if result["accepted"]:
            eta_refresh_soon(driver_id=device.driver_id)
        return Response(result)

    @staticmethod
    def _unauthorized(detail: str) -> Response:
        return Response(
            {"detail": detail}, status=401, headers={"WWW-Authenticate": 'DeviceKey realm="tracker"'}
        )


# --- The customer's tracking data (issue #6) ----------------------------------------------------


class TrackView(APIView):
    """GET the tracking page's data as JSON: the same facts, nothing more (no login: the token
    is the key). 404 for an unknown or revoked token, 410 once the link expired, 429 with
    Retry-After when one address asks too often."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        responses={
            200: OpenApiResponse(description="Status, promised and live ETA window, stops before yours, "
                                 "the driver's first name, vehicle and (when close) position, the proof."),
            404: OpenApiResponse(description="No such link."),
            410: OpenApiResponse(description="The link expired."),
            429: OpenApiResponse(description="Too many requests; see Retry-After."),
        }
    )  # fmt: skip
    def get(self, request, token: str):
        wait = retry_after(request._request)
        if wait is not None:
            response = Response({"detail": "Too many requests: wait and try again."}, status=429)
            response["Retry-After"] = str(wait)
            return response
        link, state = tracking_link_lookup(token)
        if link is None:
            return Response({"detail": "This tracking link does not exist."}, status=404)
        if state == "expired":
            return Response({"detail": "This tracking link has expired."}, status=410)
        now = timezone.now()
        tracking_link_seen(link=link, now=now)
        response = Response(customer_view(link=link, now=now))
        response["Cache-Control"] = "private, no-store"
        response["Referrer-Policy"] = "no-referrer"
        return response
