"""The path a driver actually drove on a route, simplified for the route page's map.

Built from the driver's good fixes (LocationPing.flags == "", the same fixes the ingest counts
into Route.travelled_distance_m) between the route's start and its end (or now), simplified
with Douglas–Peucker to at most a few hundred points, and stored on the route through
dispatch.services.route_travelled_paths_set. Rebuilt when the driver ends the route
(tracking.services.driver_route_event) and every few minutes for routes in progress
(tracking.tasks.refresh_travelled_paths); a rebuild from the same fixes gives the same path,
so running it twice is harmless.
"""

import math
from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np
from django.db.models import Q
from django.utils import timezone

from dispatch.geo import EARTH_RADIUS_M
from dispatch.models import Route
from dispatch.services import TRAVELLED_PATH_MAX_POINTS, route_travelled_paths_set
from tracking.models import LocationPing

# A path drawn at street level needs no more detail than this; the tolerance doubles until the
# path fits in MAX_POINTS.
TOLERANCE_M = 8.0
MAX_POINTS = 300
# At most this many routes a run of the periodic job (one fix query each).
REFRESH_LIMIT = 500
# Routes completed this recently are rebuilt by the job too, in case the end hook was missed
# (a route closed by a dispatcher or the simulator rather than the driver app).
RECENTLY_COMPLETED = timedelta(hours=1)

assert MAX_POINTS <= TRAVELLED_PATH_MAX_POINTS


def _douglas_peucker(xy: np.ndarray, tolerance: float) -> np.ndarray:
    """Indices of the points kept (first and last always), iteratively, without recursion."""
    n = len(xy)
    keep = np.zeros(n, dtype=bool)
    keep[0] = keep[-1] = True
    stack = [(0, n - 1)]
    while stack:
        first, last = stack.pop()
        if last - first < 2:
            continue
        start, end = xy[first], xy[last]
        segment = end - start
        length = math.hypot(*segment)
        inner = xy[first + 1 : last]
        if length == 0:
            distances = np.hypot(*(inner - start).T)
        else:
            # Distance of each inner point from the line through start and end.
            offset = inner - start
            distances = np.abs(segment[0] * offset[:, 1] - segment[1] * offset[:, 0]) / length
        worst = int(np.argmax(distances))
        if distances[worst] > tolerance:
            index = first + 1 + worst
            keep[index] = True
            stack.append((first, index))
            stack.append((index, last))
    return np.flatnonzero(keep)


def simplify_path(
    points: Sequence[tuple[float, float]], *, tolerance_m: float = TOLERANCE_M, max_points: int = MAX_POINTS
) -> list[list[float]]:
    """[(lat, lng), …] in time order → at most `max_points` [lat, lng] that stay within
    `tolerance_m` (or the smallest doubling of it that fits) of the original path."""
    if len(points) < 3:
        return [[float(lat), float(lng)] for lat, lng in points]
    lat = np.array([p[0] for p in points], dtype=float)
    lng = np.array([p[1] for p in points], dtype=float)
    # Local equirectangular metres: exact enough over a city for a drawing tolerance.
    ref = math.radians(float(lat.mean()))
    xy = np.column_stack((np.radians(lng) * math.cos(ref) * EARTH_RADIUS_M, np.radians(lat) * EARTH_RADIUS_M))
    tolerance = tolerance_m
    while True:
        kept = _douglas_peucker(xy, tolerance)
        if len(kept) <= max_points:
            return [[float(lat[i]), float(lng[i])] for i in kept]
        tolerance *= 2


def _path_of(route: Route, now: datetime) -> list[list[float]]:
    if route.started_at is None:
        return []
    fixes = LocationPing.objects.filter(
        driver_id=route.driver_id,
        flags="",
        recorded_at__gte=route.started_at,
        recorded_at__lte=route.completed_at or now,
    ).order_by("recorded_at", "pk")
    return simplify_path(list(fixes.values_list("lat", "lng")))


def route_path_build(*, route: Route, now: datetime | None = None) -> list[list[float]]:
    """Rebuild and store one route's travelled path (two queries). Returns the stored path."""
    path = _path_of(route, now or timezone.now())
    route_travelled_paths_set(paths={route.pk: path})
    return path


def travelled_paths_refresh(*, now: datetime | None = None, limit: int = REFRESH_LIMIT) -> int:
    """Rebuild the paths of routes in progress and of routes completed in the last hour.

    One query for the routes, one for each route's fixes (at most `limit` routes, oldest start
    first), one UPDATE per 100 routes. Returns how many routes were rebuilt.
    """
    now = now or timezone.now()
    routes = list(
        Route.objects.filter(started_at__isnull=False)
        .filter(
            Q(status=Route.Status.IN_PROGRESS)
            | Q(status=Route.Status.COMPLETED, completed_at__gte=now - RECENTLY_COMPLETED)
        )
        .only("pk", "driver_id", "started_at", "completed_at")
        .order_by("started_at", "pk")[:limit]
    )
    paths = {route.pk: _path_of(route, now) for route in routes}
    route_travelled_paths_set(paths=paths)
    return len(paths)
