"""Reads for live data: the driver app (scoped to one driver) and the dispatcher's dashboard
(scoped to one organisation)."""

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Max, Prefetch, QuerySet, Sum
from django.utils import timezone

from dispatch.models import Depot, Driver, Organization, Route, Stop, StopEvent
from dispatch.timeutils import local_day_bounds, local_today
from pod.models import ProofOfDelivery
from tracking.geo import distance_m
from tracking.links import settings_for
from tracking.models import Alert, DriverPosition, LocationPing, Source

# The routes a driver sees in the app; a completed route stays reachable so a late action on it
# is answered "already completed" (409) rather than "not found".
DRIVER_ROUTE_STATUSES = (Route.Status.PUBLISHED, Route.Status.IN_PROGRESS, Route.Status.COMPLETED)


def driver_routes(*, driver: Driver, now: datetime | None = None) -> QuerySet[Route]:
    """The driver's own routes for the organisation-local today (drafts excluded)."""
    today = local_today(driver.organization.tzinfo, now)
    return Route.objects.filter(driver=driver, date=today, status__in=DRIVER_ROUTE_STATUSES)


def driver_stops(*, driver: Driver, now: datetime | None = None) -> QuerySet[Stop]:
    """Stops the driver may act on: those of his own routes for today. Anything else is a 404."""
    today = local_today(driver.organization.tzinfo, now)
    return Stop.objects.filter(
        route__driver=driver, route__date=today, route__status__in=DRIVER_ROUTE_STATUSES
    ).select_related("order", "route")


def driver_route_today(*, driver: Driver, now: datetime | None = None) -> Route | None:
    """The driver's published or started route for today, stops in order with their orders."""
    return (
        driver_routes(driver=driver, now=now)
        .filter(status__in=[Route.Status.PUBLISHED, Route.Status.IN_PROGRESS])
        .select_related("depot", "vehicle")
        .prefetch_related(
            Prefetch("stops", queryset=Stop.objects.select_related("order").order_by("sequence"))
        )
        .first()
    )


@dataclass
class ArrivalSuggestion:
    stop: Stop
    since: datetime


# How far back the dwell is traced, and at most how many fixes: a "since" older than this is
# shown as this old.
ARRIVAL_LOOKBACK = timedelta(minutes=15)
ARRIVAL_MAX_FIXES = 1000
# The last known position holds until then: a phone standing still may send no new fix.
ARRIVAL_FIX_FRESH = timedelta(minutes=5)
SUGGESTIBLE_STOP_STATUSES = (Stop.Status.PENDING, Stop.Status.EN_ROUTE)


def arrival_suggestion(
    *, driver: Driver, route: Route, now: datetime | None = None
) -> ArrivalSuggestion | None:
    """The open stop (pending or en route) of `route` the driver seems to be at, or None.

    He is at it when his good fixes of the last ARRIVAL_DWELL_S seconds, up to his latest one,
    all lie within ARRIVAL_RADIUS_M of it. Only offered to the driver, never applied. One
    query: `route`'s stops and orders must be prefetched (driver_route_today does).
    """
    now = now or timezone.now()
    dwell = timedelta(seconds=getattr(settings, "ARRIVAL_DWELL_S", 60))
    radius = getattr(settings, "ARRIVAL_RADIUS_M", 75.0)
    candidates = [
        stop
        for stop in route.stops.all()
        if stop.status in SUGGESTIBLE_STOP_STATUSES
        and stop.order.lat is not None
        and stop.order.lng is not None
    ]
    if route.driver_id != driver.pk or not candidates:
        return None
    fixes = list(
        LocationPing.objects.filter(
            driver=driver, flags="", recorded_at__gte=now - ARRIVAL_LOOKBACK, recorded_at__lte=now
        )
        .order_by("-recorded_at")
        .values_list("lat", "lng", "recorded_at")[:ARRIVAL_MAX_FIXES]
    )
    if not fixes or fixes[0][2] < now - ARRIVAL_FIX_FRESH:
        return None
    for stop in sorted(candidates, key=lambda s: s.sequence):
        since = None
        for lat, lng, recorded_at in fixes:  # newest first, back to where he came from
            if distance_m(lat, lng, stop.order.lat, stop.order.lng) > radius:
                break
            since = recorded_at
        if since is not None and since <= now - dwell:
            return ArrivalSuggestion(stop=stop, since=since)
    return None


# --- The dispatcher's live dashboard ------------------------------------------------------------
# Polled every few seconds by every open browser, so its reads are a fixed number of queries
# whatever the number of drivers and stops (bench/ measures it). Scoped to one organisation.

# A fix older than this is drawn greyed out: the driver's phone may have lost signal.
STALE_AFTER = timedelta(minutes=5)
ROUTE_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]
OPEN_STOP_STATUSES = (Stop.Status.PENDING, Stop.Status.EN_ROUTE, Stop.Status.ARRIVED)
FAILED_STOP_STATUSES = (Stop.Status.FAILED, Stop.Status.SKIPPED)


def dashboard_fingerprint(*, organization: Organization, day: date, now: datetime) -> str:
    """A cheap summary of everything the live dashboard shows, for its ETag (three queries).

    Stop transitions bump Route.version and write a StopEvent; new positions move
    DriverPosition.received_at. The minute is part of it because ages, staleness and lateness
    change with the clock alone.
    """
    positions = DriverPosition.objects.filter(organization=organization).aggregate(
        n=Count("pk"), last=Max("received_at")
    )
    routes = Route.objects.filter(organization=organization, date=day).aggregate(
        n=Count("pk"), versions=Sum("version"), last_pk=Max("pk")
    )
    # Anything that changes today's orders or stops writes an event today (order created or
    # moved to today, stop arrived, delivered, failed...).
    start, _end = local_day_bounds(day, organization.tzinfo)
    events = StopEvent.objects.filter(organization=organization, recorded_at__gte=start).aggregate(
        n=Count("pk"), last=Max("recorded_at")
    )
    # Raising, acknowledging and resolving each write a time: their maximum moves on any change.
    alerts = Alert.objects.filter(organization=organization, resolved_at=None).aggregate(
        n=Count("pk"), last=Max("raised_at"), acknowledged=Max("acknowledged_at")
    )
    last_position = positions["last"].timestamp() if positions["last"] else 0
    last_event = events["last"].timestamp() if events["last"] else 0
    last_alert = max((t.timestamp() for t in (alerts["last"], alerts["acknowledged"]) if t), default=0)
    return (
        f"{organization.pk}-{day:%Y%m%d}-{int(now.timestamp() // 60)}"
        f"-p{positions['n']}.{last_position}"
        f"-r{routes['n']}.{routes['versions'] or 0}.{routes['last_pk'] or 0}"
        f"-e{events['n']}.{last_event}"
        f"-a{alerts['n']}.{last_alert}"
    )


def dashboard_alerts(*, organization: Organization, limit: int = 30) -> dict[str, Any]:
    """Open alerts nobody has acknowledged yet, newest first (two queries), and how many open
    ones were acknowledged (still going on, but seen)."""
    open_alerts = Alert.objects.filter(organization=organization, resolved_at=None)
    unseen = list(
        open_alerts.filter(acknowledged_at=None)
        .select_related("route__driver__user", "stop")
        .order_by("-raised_at")[:limit]
    )
    return {"unseen": unseen, "seen_count": open_alerts.exclude(acknowledged_at=None).count()}


def alerts_visible_to(*, organization: Organization) -> QuerySet[Alert]:
    return Alert.objects.filter(organization=organization)


@dataclass
class RouteRow:
    route: Route
    colour: str
    stops: list[Stop]
    total: int = 0
    done: int = 0
    completed: int = 0
    failed: int = 0
    late: int = 0
    projected_finish: datetime | None = None
    position: DriverPosition | None = None
    live: dict[str, Any] = field(default_factory=dict)  # the driver's map entry, if any


def _stop_state(stop: Stop) -> str:
    if stop.status == Stop.Status.COMPLETED:
        return "done"
    if stop.status in FAILED_STOP_STATUSES:
        return "failed"
    return "pending"


def _is_late(stop: Stop, now: datetime) -> bool:
    """An open stop planned after its window closes, or whose window has already closed."""
    if stop.status not in OPEN_STOP_STATUSES:
        return False
    window_end = stop.order.window_end
    if window_end is None:
        return False
    if stop.planned_arrival is not None and stop.planned_arrival > window_end:
        return True
    return window_end < now


def _age_text(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min ago"


def _position_json(p: DriverPosition, route_id: int | None, now: datetime) -> dict[str, Any]:
    age = (now - p.recorded_at).total_seconds()
    return {
        "id": p.driver_id,
        "name": p.driver.name,
        "route": route_id,
        "lat": p.lat,
        "lng": p.lng,
        "heading": p.heading_deg,
        "speed": p.speed_mps,
        "source": p.source,
        "source_label": "via tracker app" if p.source == Source.TRACKER else "via driver app",
        "recorded_at": p.recorded_at.isoformat(),
        "age_s": int(age),
        "age": _age_text(age),
        "stale": age > STALE_AFTER.total_seconds(),
    }


def dashboard_live(*, organization: Organization, day: date, now: datetime) -> dict[str, Any]:
    """Today's routes with progress, drivers' latest positions and depots (four queries).

    Returns {"rows": [RouteRow], "idle_positions": [DriverPosition with .live], "map": dict}.
    """
    routes = list(
        Route.objects.filter(organization=organization, date=day)
        .select_related("driver__user", "depot", "vehicle")
        .prefetch_related(
            Prefetch(
                "stops",
                queryset=Stop.objects.select_related("order").order_by("sequence"),
                to_attr="ordered_stops",
            )
        )
        .order_by("driver__user__first_name", "driver__user__last_name", "driver__user__username", "pk")
    )
    positions = {
        p.driver_id: p
        for p in DriverPosition.objects.filter(organization=organization).select_related("driver__user")
    }
    depots = list(Depot.objects.filter(organization=organization, is_active=True))

    rows = []
    for i, route in enumerate(routes):
        stops = route.ordered_stops
        states = [_stop_state(s) for s in stops]
        last_arrival = stops[-1].planned_arrival if stops else None
        row = RouteRow(
            route=route,
            colour=ROUTE_COLOURS[i % len(ROUTE_COLOURS)],
            stops=stops,
            total=len(stops),
            done=sum(1 for s in stops if s.status not in OPEN_STOP_STATUSES),
            completed=states.count("done"),
            failed=states.count("failed"),
            late=sum(1 for s in stops if _is_late(s, now)),
            projected_finish=route.planned_end or last_arrival,
            position=positions.get(route.driver_id),
        )
        if row.position:
            row.live = _position_json(row.position, route.pk, now)
        rows.append(row)
    on_route = {row.route.driver_id for row in rows}
    idle_positions = sorted(
        (p for p in positions.values() if p.driver_id not in on_route), key=lambda p: p.driver.name
    )
    for p in idle_positions:
        p.live = _position_json(p, None, now)

    map_data = {
        "now": now.isoformat(),
        "depots": [{"id": d.pk, "name": d.name, "lat": d.lat, "lng": d.lng} for d in depots],
        "drivers": [row.live for row in rows if row.live] + [p.live for p in idle_positions],
        "routes": [
            {
                "id": row.route.pk,
                "driver": row.route.driver_id,
                "name": row.route.driver.name,
                "colour": row.colour,
                "depot": [row.route.depot.lat, row.route.depot.lng],
                "stops": [
                    {
                        "id": s.pk,
                        "n": s.sequence,
                        "lat": s.order.lat,
                        "lng": s.order.lng,
                        "state": _stop_state(s),
                        "label": s.order.address,
                    }
                    for s in row.stops
                    if s.order.lat is not None
                ],
            }
            for row in rows
        ],
    }
    return {"rows": rows, "idle_positions": idle_positions, "map": map_data}


# --- The customer's tracking page (issue #6) -----------------------------------------------------
# Only this order's own facts: never another customer's address or stop, never the driver's
# full name or phone, and the driver's position only while close and on the way here (TRK-3).

CUSTOMER_EVENTS = {
    StopEvent.Kind.CREATED: "Order received",
    StopEvent.Kind.DELIVERED: "Delivered",
    StopEvent.Kind.PICKED_UP: "Picked up",
    StopEvent.Kind.FAILED: "Delivery attempt failed",
    StopEvent.Kind.CANCELLED: "Cancelled",
}
CUSTOMER_STATUSES = {"assigned": "Scheduled on a route", "out_for_delivery": "Out for delivery"}
OPEN_FOR_CUSTOMER = (Stop.Status.PENDING, Stop.Status.EN_ROUTE, Stop.Status.ARRIVED)


def _round_to(moment: datetime, minutes: int = 5) -> datetime:
    seconds = minutes * 60
    return datetime.fromtimestamp(round(moment.timestamp() / seconds) * seconds, tz=moment.tzinfo)


def _eta_window(eta: datetime, stops_before: int) -> tuple[datetime, datetime]:
    """A window around the ETA that widens with the stops still to come before this one."""
    margin = timedelta(minutes=min(30, 10 + 2 * stops_before))
    return _round_to(eta - margin), _round_to(eta + margin)


def customer_view(*, link, now: datetime) -> dict[str, Any]:
    """Everything the tracking page and GET /api/v1/track/<token>/ show, as plain data.

    A fixed number of queries. Times are ISO 8601 in the organisation's zone.
    """
    order = link.order
    organization = order.organization
    tz = organization.tzinfo
    options = settings_for(organization.pk)

    def local(moment: datetime | None) -> str | None:
        return moment.astimezone(tz).isoformat() if moment else None

    stop = (
        Stop.objects.filter(order=order)
        .select_related("route__driver__user", "route__vehicle")
        .order_by("-pk")
        .first()
    )
    timeline = []
    for event in order.events.filter(kind__in=[*CUSTOMER_EVENTS, StopEvent.Kind.STATUS]).order_by("at", "pk"):
        label = CUSTOMER_EVENTS.get(event.kind) or CUSTOMER_STATUSES.get(event.to_status)
        if label:
            timeline.append({"label": label, "at": local(event.at), "reason": event.reason or ""})

    data: dict[str, Any] = {
        "organization": {"name": organization.name, "contact": options.contact_text},
        "order": {
            "reference": order.external_ref or str(order.pk),
            "kind": order.kind,
            "status": order.status,
            "status_label": order.get_status_display(),
            "recipient_name": order.recipient_name,
            "address": order.address,
            "lat": order.lat,
            "lng": order.lng,
            "window_start": local(order.window_start),
            "window_end": local(order.window_end),
            "service_date": order.service_date.isoformat(),
            "customer_instructions": order.customer_instructions,
        },
        "timeline": timeline,
        "eta": None,
        "stops_before": None,
        "driver": None,
        "proof": None,
        "final": order.status in ("delivered", "picked_up", "cancelled"),
    }
    route = stop.route if stop else None
    live = (
        stop is not None
        and stop.status in OPEN_FOR_CUSTOMER
        and route.status in (Route.Status.PUBLISHED, Route.Status.IN_PROGRESS)
        and route.date == local_today(tz, now)
    )
    if live:
        started = route.status == Route.Status.IN_PROGRESS
        before = (
            route.stops.filter(sequence__lt=stop.sequence, status__in=OPEN_FOR_CUSTOMER).count()
            if started
            else None
        )
        estimate = stop.eta or stop.planned_arrival
        if estimate is not None:
            start, end = _eta_window(estimate, before or 0)
            updated = stop.eta_updated_at if stop.eta else None
            data["eta"] = {
                "start": local(start),
                "end": local(end),
                "live": stop.eta is not None,
                "updated_at": local(updated),
                "updated_minutes_ago": int((now - updated).total_seconds() // 60) if updated else None,
            }
        data["stops_before"] = before
        driver = {
            "first_name": route.driver.user.first_name or "Your driver",
            "vehicle": (route.vehicle.name if route.vehicle else ""),
            "registration": (route.vehicle.registration if route.vehicle else ""),
            "position": None,
        }
        # Shown only on the way here and close: never while earlier customers are far ahead.
        if started and before is not None and before <= options.show_driver_within_stops:
            position = DriverPosition.objects.filter(driver_id=route.driver_id).first()
            if position is not None:
                driver["position"] = {
                    "lat": round(position.lat, 5),
                    "lng": round(position.lng, 5),
                    "recorded_at": local(position.recorded_at),
                }
        data["driver"] = driver
    if stop is not None and stop.status == Stop.Status.COMPLETED:
        proof = ProofOfDelivery.objects.filter(stop=stop).prefetch_related("photos").first()
        if proof is not None:
            data["proof"] = {
                "public_id": str(proof.public_id),
                "recipient_name": proof.recipient_name,
                "captured_at": local(proof.captured_at),
                "photos": [str(photo.public_id) for photo in proof.photos.all()],
                "signature": bool(proof.signature),
            }
    return data
