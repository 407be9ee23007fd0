"""The ETA engine: when service will start at each remaining stop of a route in progress.

For each route in progress on its organisation's local today, in a fixed number of queries
whatever the number of routes (docs/eta.md):

1. Where and when the driver is: the latest good position (DriverPosition), unless the last
   stop closed or the route's start at the depot is newer; a driver at an arrived stop leaves
   it when its service ends.
2. What is left, in the order it will be worked: the open stops in planned sequence. A driver
   who worked a later stop while earlier ones are open has jumped ahead: the stops after the
   one worked last come first, in planned order, then the skipped-over ones, in planned order.
3. Travel time of each leg from the planner's model (dispatch.planner.matrix), times the
   route's pace factor: the mean of its own completed legs' actual / model time, a leg of a
   minute or less in the model counting for less, blended towards 1 while few legs are known
   and clamped to PACE_BOUNDS. The rest of the leg being driven also goes at what the part
   already driven says (the position against the last departure), blended with the pace.
4. Each stop's ETA is arrival, or its window's start when the driver would be early; the
   driver leaves after the order's service minutes.

The ETAs are written by dispatch.services.stops_eta_set in one UPDATE.
"""

import functools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.utils import timezone
from django_q.tasks import async_task

from dispatch.models import Route, Stop
from dispatch.planner.matrix import EARTH_RADIUS_M, UNREACHABLE, travel_model
from dispatch.services import stops_eta_set
from dispatch.sqlrows import column, table
from dispatch.timeutils import local_today
from tracking.models import DriverPosition

Point = tuple[float, float]

OPEN = (Stop.Status.PENDING, Stop.Status.EN_ROUTE)
PACE_BOUNDS = (0.6, 2.0)
# The model's own pace (1.0) weighs as much as this many legs (of the weights below) driven.
PACE_PRIOR_LEGS = 2
# A leg this long in the model counts half a leg in the pace's mean, a long one nearly a whole
# one: a few seconds of timing (parking, tapping "arrived") swing a short leg's ratio. Weighting
# by length instead (the ratio of the sums) let one long leg with a jam in it set the day's pace.
PACE_HALF_WEIGHT_S = 60.0
# The leg being driven: its part already driven (last departure → latest position) is blended
# with the route's pace as if this many model seconds more had been driven at that pace.
CURRENT_LEG_PRIOR_S = 300.0
# One leg's actual / model time is held inside these before it counts: a leg with a lunch or a
# wrong turn in it says little about how fast the driver goes.
LEG_RATIO_BOUNDS = (0.3, 3.0)
# Legs shorter than this in the model (next door) carry no information about pace.
MIN_MODEL_LEG_S = 30.0
# After a batch of positions, at most one recompute per driver (so per route) this often.
DEBOUNCE_SECONDS = 30


@dataclass
class _Stop:
    pk: int
    sequence: int
    status: str
    point: Point | None
    arrived_at: datetime | None
    departed_at: datetime | None
    window_start: datetime | None
    service_s: float


@dataclass
class _Route:
    pk: int
    driver_id: int
    depot: Point
    started_at: datetime | None
    stops: list[_Stop] = field(default_factory=list)
    # Filled by _prepare: where the driver starts from and when, what is left, the legs driven.
    start: Point | None = None
    start_at: datetime | None = None
    remaining: list[_Stop] = field(default_factory=list)
    unreachable: list[int] = field(default_factory=list)
    driven: list[tuple[Point, Point, float]] = field(default_factory=list)  # (from, to, seconds)
    # The leg being driven, up to the latest position: (from, position, seconds since leaving).
    current: tuple[Point, Point, float] | None = None


def eta_recompute(
    *, route_ids: list[int] | None = None, driver_ids: list[int] | None = None, now: datetime | None = None
) -> dict:
    """Recompute the ETAs of the open stops of today's routes in progress (or only of
    `route_ids` / `driver_ids`). Four queries for any number of routes. Safe to run twice.

    Returns {"routes": n, "stops": m} (m = stops whose ETA was written).
    """
    now = now or timezone.now()
    routes = _routes(route_ids=route_ids, driver_ids=driver_ids, now=now)
    if not routes:
        return {"routes": 0, "stops": 0}
    positions = {
        driver_id: ((lat, lng), at)
        for driver_id, lat, lng, at in DriverPosition.objects.filter(
            driver_id__in=[r.driver_id for r in routes.values()]
        ).values_list("driver_id", "lat", "lng", "recorded_at")
    }
    _load_stops(routes)
    plans = [_prepare(route, positions.get(route.driver_id)) for route in routes.values()]
    etas: dict[int, datetime | None] = {}
    for route, seconds in zip(plans, _leg_seconds(plans), strict=True):
        etas |= _etas(route, seconds, now=now)
    written = stops_eta_set(etas=etas, now=now)
    return {"routes": len(plans), "stops": written}


@functools.cache
def _claim_sql() -> str:
    # Plain SQL, built once per process: on the ingest path the ORM's update() took longer to
    # build and compile than the database took to run it.
    driver, queued = (column(DriverPosition, name) for name in ("driver", "eta_queued_at"))
    return (
        f"UPDATE {table(DriverPosition)} SET {queued} = %s "
        f"WHERE {driver} = %s AND ({queued} IS NULL OR {queued} <= %s)"
    )


def eta_refresh_soon(*, driver_id: int, now: datetime | None = None) -> bool:
    """After a batch of the driver's positions: queue a recompute of the driver's route once the
    transaction commits, at most once per DEBOUNCE_SECONDS whatever the number of processes
    (JOB-7). Returns whether it queued one.

    Two gates. The cache's add lets one call per driver per DEBOUNCE_SECONDS through in each
    process (a local-memory cache is per process; Redis shares it); behind it, a conditional
    UPDATE of the driver's DriverPosition.eta_queued_at claims the 30 s for all processes, and
    only the claimer queues. So the ingest path pays one cache operation, plus one statement per
    driver per process per 30 s. A driver without a position (no good fix yet) gets none: nothing
    the ETA reads has changed, and the every-minute tracking.tasks.recompute_etas covers him.
    A driver works one live route a day, so per driver is per route.
    """
    if not cache.add(f"eta:driver:{driver_id}", 1, DEBOUNCE_SECONDS):
        return False
    now = now or timezone.now()
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.execute(
            _claim_sql(), [adapt(now), driver_id, adapt(now - timedelta(seconds=DEBOUNCE_SECONDS))]
        )
        if not cursor.rowcount:
            return False
    transaction.on_commit(lambda: async_task("tracking.tasks.recompute_driver_etas", driver_id))
    return True


# --- Reading -------------------------------------------------------------------------------------


def _routes(*, route_ids: list[int] | None, driver_ids: list[int] | None, now: datetime) -> dict[int, _Route]:
    utc_day = now.astimezone(UTC).date()  # every organisation's today is this day or one beside it
    rows = Route.objects.filter(
        status=Route.Status.IN_PROGRESS,
        date__range=(utc_day - timedelta(days=1), utc_day + timedelta(days=1)),
    )
    if route_ids is not None:
        rows = rows.filter(pk__in=route_ids)
    if driver_ids is not None:
        rows = rows.filter(driver_id__in=driver_ids)
    routes, zones = {}, {}
    for pk, day, tz_name, driver_id, lat, lng, started_at in rows.values_list(
        "pk", "date", "organization__timezone", "driver_id", "depot__lat", "depot__lng", "started_at"
    ):
        if tz_name not in zones:
            zones[tz_name] = local_today(ZoneInfo(tz_name), now)
        if day == zones[tz_name]:
            routes[pk] = _Route(pk=pk, driver_id=driver_id, depot=(lat, lng), started_at=started_at)
    return routes


def _load_stops(routes: dict[int, _Route]) -> None:
    rows = (
        Stop.objects.filter(route_id__in=list(routes))
        .order_by("route_id", "sequence")
        .values_list(
            "pk", "route_id", "sequence", "status", "arrived_at", "departed_at",
            "order__lat", "order__lng", "order__window_start", "order__service_minutes",
        )
    )  # fmt: skip
    for pk, route_id, sequence, status, arrived, departed, lat, lng, window_start, minutes in rows:
        point = None if lat is None or lng is None else (lat, lng)
        routes[route_id].stops.append(
            _Stop(pk, sequence, status, point, arrived, departed, window_start, minutes * 60.0)
        )


# --- Deciding what is left and where the driver is ---------------------------------------------


def _prepare(route: _Route, position: tuple[Point, datetime] | None) -> _Route:
    visited = sorted((s for s in route.stops if s.arrived_at is not None), key=lambda s: s.arrived_at)
    open_stops = [s for s in route.stops if s.status in OPEN]
    route.unreachable = [s.pk for s in open_stops if s.point is None]
    open_stops = [s for s in open_stops if s.point is not None]

    # Jumped ahead: continue after the stop worked last, then go back for the skipped-over ones.
    if visited:
        last = visited[-1].sequence
        route.remaining = [s for s in open_stops if s.sequence > last] + [
            s for s in open_stops if s.sequence < last
        ]
    else:
        route.remaining = open_stops

    route.driven = _driven_legs(route, visited)
    route.current = None

    here = next((s for s in reversed(visited) if s.status == Stop.Status.ARRIVED and s.point), None)
    if here is not None:
        # At a stop now: leaves it when its service ends (marked at _etas, which knows `now`).
        route.start, route.start_at = here.point, None
        route.remaining = [here, *route.remaining]
        return route
    candidates: list[tuple[datetime, Point]] = []
    if route.started_at is not None:
        candidates.append((route.started_at, route.depot))
    left = [s for s in visited if s.departed_at is not None and s.point is not None]
    if left:
        last_left = max(left, key=lambda s: s.departed_at)
        candidates.append((last_left.departed_at, last_left.point))
    if position is not None:
        candidates.append((position[1], position[0]))
    if candidates:
        route.start_at, route.start = max(candidates, key=lambda c: c[0])
    else:
        route.start = route.depot
    if position is not None and len(candidates) > 1 and route.start_at == position[1]:
        # On the road: the part of this leg driven so far, unless a stop was closed on the way.
        since, where = max(candidates[:-1], key=lambda c: c[0])
        closed_unvisited = [s.departed_at for s in route.stops if s.arrived_at is None and s.departed_at]
        if not any(since < t <= position[1] for t in closed_unvisited):
            route.current = (where, position[0], (position[1] - since).total_seconds())
    return route


def _driven_legs(route: _Route, visited: list[_Stop]) -> list[tuple[Point, Point, float]]:
    """The legs driven so far: from the previous departure (or the route's start at the depot)
    to each arrival, in the order they happened. A leg during which another stop was closed
    without an arrival (failed or skipped from the road) is left out: it may hold a visit."""
    closed_unvisited = [s.departed_at for s in route.stops if s.arrived_at is None and s.departed_at]
    legs = []
    since, where = route.started_at, route.depot
    for stop in visited:
        if since is not None and where is not None and stop.point is not None:
            interrupted = any(since < t < stop.arrived_at for t in closed_unvisited)
            seconds = (stop.arrived_at - since).total_seconds()
            if not interrupted and seconds >= 0:
                legs.append((where, stop.point, seconds))
        if stop.departed_at is None:
            break
        since, where = stop.departed_at, stop.point
    return legs


# --- The travel-time model ----------------------------------------------------------------------


def _leg_seconds(routes: list[_Route]) -> list[np.ndarray]:
    """Model seconds of every route's legs: first the driven ones, then the part of the current
    leg driven so far (when on the road), then start → remaining.

    The default model is computed for all routes' legs at once (NumPy); with ROUTING_URL, one
    OSRM table per route through travel_model().
    """
    legs_per_route = [_legs(route) for route in routes]
    if getattr(settings, "ROUTING_URL", ""):
        return [_osrm_seconds(legs) for legs in legs_per_route]
    flat = [(*a, *b) for legs in legs_per_route for a, b in legs]
    if not flat:
        return [np.zeros(0) for _ in routes]
    seconds = _straight_line_seconds(np.asarray(flat, dtype=np.float64))
    return np.split(seconds, np.cumsum([len(legs) for legs in legs_per_route])[:-1])


def _legs(route: _Route) -> list[tuple[Point, Point]]:
    ahead = [s.point for s in route.remaining]
    driven = [(a, b) for a, b, _ in route.driven] + ([route.current[:2]] if route.current else [])
    return driven + list(zip([route.start, *ahead], ahead, strict=False))


def _straight_line_seconds(legs: np.ndarray) -> np.ndarray:
    """dispatch.planner.matrix.StraightLineModel for a list of legs (lat1, lng1, lat2, lng2)."""
    lat1, lng1, lat2, lng2 = np.radians(legs).T
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lng2 - lng1) / 2) ** 2
    metres = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0))) * float(settings.ROUTING_DETOUR)
    return metres / (float(settings.ROUTING_SPEED_KMH) / 3.6)


def _osrm_seconds(legs: list[tuple[Point, Point]]) -> np.ndarray:
    points = list(dict.fromkeys(p for leg in legs for p in leg))
    if not points:
        return np.zeros(0)
    index = {p: i for i, p in enumerate(points)}
    durations, _ = travel_model().matrices(points)
    return np.array([durations[index[a], index[b]] for a, b in legs], dtype=np.float64)


# --- Putting it together ------------------------------------------------------------------------


def pace_factor(driven: list[tuple[float, float]]) -> float:
    """How much slower (> 1) or faster (< 1) than the model this route drives, from its legs
    (actual seconds, model seconds): the weighted mean of the legs' ratios, each held inside
    LEG_RATIO_BOUNDS and weighing model / (model + PACE_HALF_WEIGHT_S) legs, blended towards 1
    as if PACE_PRIOR_LEGS legs had gone exactly to plan."""
    legs = [(actual, model) for actual, model in driven if model >= MIN_MODEL_LEG_S]
    if not legs:
        return 1.0
    weights = [model / (model + PACE_HALF_WEIGHT_S) for _, model in legs]
    ratios = [_leg_ratio(actual, model) for actual, model in legs]
    n = sum(weights)
    mean = sum(w * r for w, r in zip(weights, ratios, strict=True)) / n
    blended = (n * mean + PACE_PRIOR_LEGS) / (n + PACE_PRIOR_LEGS)
    return _clamp(blended, PACE_BOUNDS)


def current_leg_pace(pace: float, *, elapsed: float, covered: float) -> float:
    """The pace for the rest of the leg being driven: `elapsed` seconds since leaving for
    `covered` model seconds of it so far (held inside LEG_RATIO_BOUNDS), blended with the
    route's `pace` as if CURRENT_LEG_PRIOR_S more model seconds had gone at it."""
    if not 0 < covered < UNREACHABLE:
        return pace
    actual = _leg_ratio(elapsed, covered) * covered
    return _clamp((actual + CURRENT_LEG_PRIOR_S * pace) / (covered + CURRENT_LEG_PRIOR_S), PACE_BOUNDS)


def _leg_ratio(actual: float, model: float) -> float:
    return _clamp(actual / model, LEG_RATIO_BOUNDS)


def _clamp(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


def _etas(route: _Route, seconds: np.ndarray, *, now: datetime) -> dict[int, datetime | None]:
    driven = len(route.driven)
    pace = pace_factor(
        [(leg[2], float(model)) for leg, model in zip(route.driven, seconds[:driven], strict=True)]
    )
    first_pace = pace  # for the first leg ahead; the part of it driven so far may say otherwise
    if route.current is not None:
        first_pace = current_leg_pace(pace, elapsed=route.current[2], covered=float(seconds[driven]))
        driven += 1
    etas: dict[int, datetime | None] = dict.fromkeys(route.unreachable)
    clock = route.start_at or now
    for i, (stop, travel) in enumerate(zip(route.remaining, seconds[driven:], strict=True)):
        if stop.status == Stop.Status.ARRIVED:  # the driver is here: leaves when service ends
            begun = max(stop.arrived_at, stop.window_start or stop.arrived_at)
            clock = max(now, begun + timedelta(seconds=stop.service_s))
            continue
        if travel >= UNREACHABLE:  # OSRM found no road there: no honest ETA
            etas[stop.pk] = None
            continue
        # Not there yet, so not before now (the newest position may be a few minutes old).
        leg_pace = first_pace if i == 0 else pace
        arrival = max(now, clock + timedelta(seconds=float(travel) * leg_pace))
        service = max(arrival, stop.window_start) if stop.window_start else arrival
        etas[stop.pk] = service
        clock = service + timedelta(seconds=stop.service_s)
    return etas
