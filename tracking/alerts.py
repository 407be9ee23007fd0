"""Alerts for dispatchers: raise, resolve, acknowledge, and the sweep that finds them.

Writes, like tracking.services; kept apart because the sweep is long. Each situation has a key
("late:stop:12"); the partial unique constraint on open alerts makes raising idempotent, so the
minute sweep, a signal and a second worker running at once never raise one situation twice.

Situations and what resolves them:
- running late: an open stop projected to arrive after its window closes → it closes, or the
  projection is back inside the window;
- idle: a driver on a route in progress has not moved beyond ALERT_IDLE_RADIUS_M for
  ALERT_IDLE_MINUTES, away from every stop of the route and the depot → the driver moves;
- off route: farther than ALERT_OFF_ROUTE_M from the path through the remaining stops → back
  near it, or the route ends;
- no positions: a route in progress whose driver's fixes stopped (or never started) arriving
  for ALERT_NO_FIXES_MINUTES → a fix arrives, or the route ends;
- failed delivery: a stop failed today → acknowledged by a dispatcher (nothing else clears it).
"""

import logging
import math
from collections import defaultdict
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from dispatch.geo import distance_m
from dispatch.models import Organization, Route, Stop
from dispatch.timeutils import local_today
from tracking.models import Alert, DriverPosition, LocationPing

logger = logging.getLogger(__name__)

OPEN_STOP_STATUSES = (Stop.Status.PENDING, Stop.Status.EN_ROUTE, Stop.Status.ARRIVED)
# A driver this close to a stop or the depot is working, not idle.
AT_STOP_RADIUS_M = 150
# Alerts a dispatcher resolves by acknowledging: nothing in the data clears them.
CLEARED_BY_ACKNOWLEDGING = (Alert.Kind.FAILED, Alert.Kind.CUSTOMER_REQUEST, Alert.Kind.NOTIFICATION)


# --- Raising, resolving, acknowledging ----------------------------------------------------------


def alert_raise(
    *,
    organization_id: int,
    kind: str,
    key: str,
    message: str,
    route_id: int | None = None,
    stop_id: int | None = None,
    driver_id: int | None = None,
    details: dict | None = None,
    now: datetime | None = None,
) -> Alert | None:
    """Open an alert for the situation `key`, or return None when one is open already."""
    try:
        with transaction.atomic():
            return Alert.objects.create(
                organization_id=organization_id,
                kind=kind,
                key=key,
                message=message[:300],
                route_id=route_id,
                stop_id=stop_id,
                driver_id=driver_id,
                details=details or {},
                raised_at=now or timezone.now(),
            )
    except IntegrityError:
        return None  # the same situation is open: one alert until it is resolved


def alerts_resolve(*, organization_id: int, keys: set[str] | list[str], now: datetime | None = None) -> int:
    """Resolve the open alerts of these situations (one UPDATE). Returns how many."""
    if not keys:
        return 0
    return Alert.objects.filter(organization_id=organization_id, key__in=keys, resolved_at=None).update(
        resolved_at=now or timezone.now()
    )


def alert_acknowledge(*, alert: Alert, by: AbstractBaseUser | None, now: datetime | None = None) -> Alert:
    """A dispatcher has seen it. It leaves the dashboard's list; a failed delivery or a customer
    request is then resolved too, the others stay open (no new alert) until the situation clears."""
    now = now or timezone.now()
    updates = {"acknowledged_at": now, "acknowledged_by": by}
    if alert.kind in CLEARED_BY_ACKNOWLEDGING:
        updates["resolved_at"] = now
    Alert.objects.filter(pk=alert.pk, acknowledged_at=None).update(**updates)
    alert.refresh_from_db()
    return alert


# --- Reacting to a stop as it changes (dispatch.signals.stop_status_changed) ------------------


def stop_changed(*, stop_id: int, organization_id: int, status: str, now: datetime | None = None) -> None:
    """A failed stop raises its alert at once; a closed stop resolves its lateness."""
    if status == Stop.Status.FAILED:
        stop = Stop.objects.select_related("order", "route__driver__user").filter(pk=stop_id).first()
        if stop is not None:
            _raise_failed(stop, now=now)
    if status not in OPEN_STOP_STATUSES:
        alerts_resolve(organization_id=organization_id, keys={f"late:stop:{stop_id}"}, now=now)


def on_stop_status_changed(sender, *, stop_id, organization_id, status, **kwargs) -> None:
    # Runs after the driver's transaction committed: never let an alert break the driver's request.
    try:
        stop_changed(stop_id=stop_id, organization_id=organization_id, status=status)
    except Exception:  # the minute sweep raises it instead
        logger.exception("Could not raise the alert for stop %s now; the sweep will.", stop_id)


def _raise_failed(stop: Stop, *, now: datetime | None) -> Alert | None:
    key = f"failed:stop:{stop.pk}"
    # Once per failed visit, ever: an acknowledged (resolved) one is not raised again.
    if Alert.objects.filter(organization_id=stop.organization_id, key=key).exists():
        return None
    reason = stop.failure_reason or "no reason given"
    return alert_raise(
        organization_id=stop.organization_id,
        kind=Alert.Kind.FAILED,
        key=key,
        message=f"{stop.route.driver.name}: stop {stop.sequence} failed, {stop.order.address} ({reason}).",
        route_id=stop.route_id,
        stop_id=stop.pk,
        driver_id=stop.route.driver_id,
        details={"order": stop.order_id, "reason": reason},
        now=now,
    )


# --- The sweep ----------------------------------------------------------------------------------


def _to_segment_m(point: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    """Distance from a point to the segment a–b, on a local flat projection (fine within a city)."""
    scale = math.cos(math.radians(point[0]))
    px, py = point[1] * scale, point[0]
    ax, ay, bx, by = a[1] * scale, a[0], b[1] * scale, b[0]
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / length2))
    nearest = (ay + t * dy, (ax + t * dx) / scale)
    return distance_m(point[0], point[1], nearest[0], nearest[1])


def _projected_arrivals(stops: list[Stop], now: datetime) -> dict[int, datetime]:
    """When each open stop will be reached: its live ETA when the ETA engine set one, else the
    plan shifted by how late the route already is (the next open stop planned in the past)."""
    open_stops = [s for s in stops if s.status in OPEN_STOP_STATUSES]
    if not open_stops:
        return {}
    delay = timedelta(0)
    first = next((s for s in open_stops if s.status != Stop.Status.ARRIVED), None)
    if first is not None and first.planned_arrival is not None and first.planned_arrival < now:
        delay = now - first.planned_arrival
    projected = {}
    for stop in open_stops:
        if stop.eta is not None:
            projected[stop.pk] = stop.eta
        elif stop.status == Stop.Status.ARRIVED:
            projected[stop.pk] = stop.arrived_at or now
        elif stop.planned_arrival is not None:
            projected[stop.pk] = stop.planned_arrival + delay
    return projected


def _late(route: Route, stops: list[Stop], now: datetime) -> tuple[dict[str, dict], set[str]]:
    raise_, clear = {}, set()
    projected = _projected_arrivals(stops, now)
    for stop in stops:
        key = f"late:stop:{stop.pk}"
        window_end = stop.order.window_end
        arrival = projected.get(stop.pk)
        # A driver already at the stop is no longer "going to be" late.
        waiting = stop.status in (Stop.Status.PENDING, Stop.Status.EN_ROUTE)
        if waiting and window_end is not None and arrival is not None and arrival > window_end:
            minutes = max(1, round((arrival - window_end).total_seconds() / 60))
            raise_[key] = {
                "kind": Alert.Kind.LATE,
                "stop_id": stop.pk,
                "message": (
                    f"{route.driver.name}: stop {stop.sequence}, {stop.order.address}, "
                    f"projected {minutes} min after its window closes "
                    f"({timezone.localtime(window_end, route.organization.tzinfo):%H:%M})."
                ),
                "details": {"projected": arrival.isoformat(), "window_end": window_end.isoformat()},
            }
            continue
        clear.add(key)
    return raise_, clear


def _recent_fixes(driver_ids: list[int], since: datetime) -> dict[int, list[tuple]]:
    """Good fixes since `since` per driver, oldest first (one query)."""
    fixes = defaultdict(list)
    rows = (
        LocationPing.objects.filter(driver_id__in=driver_ids, flags="", recorded_at__gte=since)
        .order_by("driver_id", "recorded_at")
        .values_list("driver_id", "recorded_at", "lat", "lng")
    )
    for driver_id, at, lat, lng in rows.iterator(chunk_size=5000):
        fixes[driver_id].append((at, lat, lng))
    return fixes


def _stationary_since(fixes: list[tuple], radius_m: float) -> datetime | None:
    """When the driver came to rest where the latest fix is: the first of the unbroken run of
    fixes within `radius_m` of it. None when there are no fixes."""
    if not fixes:
        return None
    _at, lat, lng = fixes[-1]
    since = fixes[-1][0]
    for at, flat, flng in reversed(fixes):
        if distance_m(lat, lng, flat, flng) > radius_m:
            break
        since = at
    return since


def _route_path(route: Route, stops: list[Stop]) -> list[tuple[float, float]]:
    """The way still to go: from the last stop closed (or the depot), through the open stops,
    back to the depot."""
    depot = (route.depot.lat, route.depot.lng)
    located = [s for s in stops if s.order.lat is not None and s.order.lng is not None]
    closed = [s for s in located if s.status not in OPEN_STOP_STATUSES]
    start = (closed[-1].order.lat, closed[-1].order.lng) if closed else depot
    return [start, *((s.order.lat, s.order.lng) for s in located if s.status in OPEN_STOP_STATUSES), depot]


def alerts_sweep(*, now: datetime | None = None, organization: Organization | None = None) -> dict[str, int]:
    """Raise and resolve every alert for today's routes. Safe to run twice or in parallel.

    A fixed number of queries per organisation, whatever the number of routes and stops.
    Returns {"raised": n, "resolved": m}.
    """
    now = now or timezone.now()
    idle_after = timedelta(minutes=settings.ALERT_IDLE_MINUTES)
    no_fixes_after = timedelta(minutes=settings.ALERT_NO_FIXES_MINUTES)
    organizations = [organization] if organization else Organization.objects.all()
    raised = resolved = 0
    for org in organizations:
        today = local_today(org.tzinfo, now)
        routes = list(
            Route.objects.filter(organization=org, date=today, status=Route.Status.IN_PROGRESS)
            .select_related("driver__user", "depot", "organization")
            .prefetch_related("stops__order")
        )
        driver_ids = [route.driver_id for route in routes]
        positions = {p.driver_id: p for p in DriverPosition.objects.filter(driver_id__in=driver_ids)}
        fixes = _recent_fixes(driver_ids, now - idle_after - timedelta(minutes=5))
        want: dict[str, dict] = {}
        clear: set[str] = set()
        for route in routes:
            stops = sorted(route.stops.all(), key=lambda s: s.sequence)
            late, not_late = _late(route, stops, now)
            want |= {key: {**value, "route": route} for key, value in late.items()}
            clear |= not_late
            for stop in stops:
                if stop.status == Stop.Status.FAILED:
                    want[f"failed:stop:{stop.pk}"] = {"failed": stop, "route": route}

            position = positions.get(route.driver_id)
            quiet_since = position.received_at if position else route.started_at
            key = f"no_fixes:route:{route.pk}"
            if quiet_since is not None and now - quiet_since >= no_fixes_after:
                minutes = int((now - quiet_since).total_seconds() // 60)
                want[key] = {
                    "kind": Alert.Kind.NO_FIXES,
                    "route": route,
                    "message": f"{route.driver.name}: no position for {minutes} min; the phone may be "
                    "off, out of signal or not sharing its location.",
                }
            else:
                clear.add(key)

            driver_fixes = fixes.get(route.driver_id, [])
            key = f"idle:route:{route.pk}"
            since = _stationary_since(driver_fixes, settings.ALERT_IDLE_RADIUS_M)
            # Fixes that stopped coming are "no positions", not idle: the phone may be moving.
            resting = (
                since is not None and now - driver_fixes[-1][0] < no_fixes_after and now - since >= idle_after
            )
            if resting:
                here = (driver_fixes[-1][1], driver_fixes[-1][2])
                places = [(route.depot.lat, route.depot.lng)] + [
                    (s.order.lat, s.order.lng) for s in stops if s.order.lat is not None
                ]
                if all(distance_m(*here, *place) > AT_STOP_RADIUS_M for place in places):
                    minutes = int((now - since).total_seconds() // 60)
                    want[key] = {
                        "kind": Alert.Kind.IDLE,
                        "route": route,
                        "message": f"{route.driver.name} has not moved for {minutes} min, "
                        "away from any stop.",
                        "details": {"lat": here[0], "lng": here[1], "since": since.isoformat()},
                    }
                else:
                    clear.add(key)
            else:
                clear.add(key)

            key = f"off_route:route:{route.pk}"
            path = _route_path(route, stops)
            if position is not None and len(path) >= 2:
                here = (position.lat, position.lng)
                away = min(_to_segment_m(here, a, b) for a, b in zip(path, path[1:], strict=False))
                if away > settings.ALERT_OFF_ROUTE_M:
                    want[key] = {
                        "kind": Alert.Kind.OFF_ROUTE,
                        "route": route,
                        "message": f"{route.driver.name} is {away / 1000:.1f} km off the way to the "
                        "remaining stops.",
                        "details": {"lat": here[0], "lng": here[1], "away_m": round(away)},
                    }
                else:
                    clear.add(key)
            else:
                clear.add(key)

        # Situations of routes no longer in progress end with them.
        live_route_ids = [route.pk for route in routes]
        stale = (
            Alert.objects.filter(organization=org, resolved_at=None)
            .filter(kind__in=[Alert.Kind.IDLE, Alert.Kind.OFF_ROUTE, Alert.Kind.NO_FIXES, Alert.Kind.LATE])
            .filter(~Q(route_id__in=live_route_ids) | Q(route_id=None))
        )
        resolved += stale.update(resolved_at=now)
        resolved += alerts_resolve(organization_id=org.pk, keys=clear - set(want), now=now)

        open_keys = set(
            Alert.objects.filter(organization=org, key__in=list(want))
            .filter(Q(resolved_at=None) | Q(kind=Alert.Kind.FAILED))
            .values_list("key", flat=True)
        )
        for key, value in want.items():
            if key in open_keys:
                continue
            if "failed" in value:
                raised += _raise_failed(value["failed"], now=now) is not None
                continue
            route = value["route"]
            raised += (
                alert_raise(
                    organization_id=org.pk,
                    kind=value["kind"],
                    key=key,
                    message=value["message"],
                    route_id=route.pk,
                    stop_id=value.get("stop_id"),
                    driver_id=route.driver_id,
                    details=value.get("details"),
                    now=now,
                )
                is not None
            )
    return {"raised": raised, "resolved": resolved}
