"""The driver app: today's route on a phone. Actions and positions go through the driver API
from static/js/driver.js, which queues them while offline (see docs in that file)."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from dispatch.models import Route, Stop
from dispatch.permissions import driver_view
from dispatch.timeutils import local_today
from pod.services import policy_for, proof_requirements, requirements_list

FAILURE_REASONS = [
    ("not_home", "Nobody home"),
    ("refused", "Refused"),
    ("address_not_found", "Address not found"),
    ("access_problem", "Access problem"),
    ("damaged", "Damaged"),
    ("other", "Other (say what in the note)"),
]

# The driver page may use the phone's location and camera; every other page denies both.
DRIVER_PERMISSIONS_POLICY = "geolocation=(self), camera=(self), microphone=(), payment=(), usb=()"


@require_GET
@driver_view
def driver_home(request: HttpRequest) -> HttpResponse:
    today = local_today(request.organization.tzinfo)
    route = (
        Route.objects.filter(
            driver__user=request.user,
            date=today,
            status__in=[Route.Status.PUBLISHED, Route.Status.IN_PROGRESS, Route.Status.COMPLETED],
        )
        .select_related("depot", "vehicle")
        .order_by("-status")
        .first()
    )
    stops = list(route.stops.select_related("order").order_by("sequence")) if route else []
    open_stops = [
        s for s in stops if s.status in (Stop.Status.PENDING, Stop.Status.EN_ROUTE, Stop.Status.ARRIVED)
    ]
    # What each delivery needs (photo, signature, pin, barcode): the app asks for it up front,
    # so an offline capture is complete before it waits to be sent. The server checks again.
    policy = policy_for(request.organization.pk)
    for stop in open_stops:
        needs = proof_requirements(order=stop.order, policy=policy)
        stop.proof_needs = " ".join(sorted(needs))
        stop.proof_needs_text = requirements_list(needs) if needs else ""
    response = render(
        request,
        "tracking/driver_home.html",
        {
            "today": today,
            "route": route,
            "stops": stops,
            "done": len(stops) - len(open_stops),
            "reasons": FAILURE_REASONS,
            "scan_needed": any(stop.order.parcel_codes for stop in open_stops),
        },
    )
    response._permissions_policy_override = DRIVER_PERMISSIONS_POLICY
    return response
