"""Writes for live data. Views, API views, the simulator and tests all call these."""

import functools
import hashlib
import logging
import math
import secrets
import uuid as uuid_lib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from dispatch.models import Driver, Organization, Route, Stop
from dispatch.services import IllegalTransition, route_transition, route_travelled_set, stop_transition
from dispatch.sqlrows import column, table
from dispatch.timeutils import local_day_bounds, local_today
from pod import services as pod_services
from tracking.geo import distance_m, path_length_m
from tracking.models import DriverAction, DriverPosition, LocationPing, Source, TrackerDevice
from tracking.osmand import fix_uuid
from tracking.paths import route_path_build

MAX_FUTURE = timedelta(minutes=5)
MAX_AGE = timedelta(days=7)
MAX_SPEED_KMH = 250


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _check(fix: Any, *, now: datetime) -> tuple[dict | None, str]:
    """A clean fix, or None and the reason it is implausible (Traccar's FilterHandler rules)."""
    if not isinstance(fix, dict):
        return None, "A fix must be an object with uuid, recorded_at, lat and lng."
    try:
        fix_uuid = (
            fix["uuid"] if isinstance(fix.get("uuid"), uuid_lib.UUID) else uuid_lib.UUID(str(fix["uuid"]))
        )
    except (KeyError, ValueError, TypeError, AttributeError):
        return None, "uuid is missing or not a UUID."
    recorded_at = fix.get("recorded_at")
    if not isinstance(recorded_at, datetime) or timezone.is_naive(recorded_at):
        return None, "recorded_at is missing or has no UTC offset."
    lat, lng = _number(fix.get("lat")), _number(fix.get("lng"))
    if lat is None or lng is None:
        return None, "lat and lng must both be numbers."
    if not -90 <= lat <= 90:
        return None, f"lat {lat} is outside -90…90."
    if not -180 <= lng <= 180:
        return None, f"lng {lng} is outside -180…180."
    if lat == 0 and lng == 0:
        return None, "(0, 0) is the position of a GPS without a fix, not a real place."
    if recorded_at > now + MAX_FUTURE:
        return None, "recorded_at is more than 5 minutes in the future; check the device clock."
    if recorded_at < now - MAX_AGE:
        return None, "recorded_at is more than 7 days old; such fixes are no longer accepted."
    accuracy = _number(fix.get("accuracy"))
    if accuracy is not None and accuracy < 0:
        return None, "accuracy must not be negative."
    return {
        "uuid": fix_uuid,
        "recorded_at": recorded_at,
        "lat": lat,
        "lng": lng,
        "accuracy_m": accuracy,
        "speed_mps": _number(fix.get("speed")),
        "heading_deg": _number(fix.get("heading")),
    }, ""


# savepoint=False: inside a caller's transaction (an Idempotency-Key's) an error here rolls that
# back too, which is what every caller wants, and a request saves two round trips.
@transaction.atomic(savepoint=False)
def location_record_batch(
    *, driver: Driver, fixes: list[dict], source: str = Source.BROWSER, now: datetime | None = None
) -> dict:
    """Store a batch of GPS fixes for `driver` and move its DriverPosition forward.

    Each fix is a dict with uuid, recorded_at (aware datetime), lat, lng and optional accuracy
    (m), speed (m/s) and heading (degrees). Each is judged on its own: an implausible one is
    listed in "rejected" with its index and reason, the others are stored. A fix whose uuid this
    driver already sent is a duplicate and stores nothing. Low-accuracy and speed-jump fixes are
    stored with flags and never become the position. The driver is always the caller's
    (identity never comes from the fix). Raises nothing for bad fixes; enqueues nothing.

    Returns {"accepted", "duplicates", "rejected": [{"index", "uuid", "reason"}], "flagged"}.
    Under concurrent replays of one batch both requests may count a fix as accepted; the
    unique (driver, uuid) constraint still stores it once.

    Whatever its size, a new batch of a driver on his route costs one read (_batch_context),
    the insert, the route's travelled distance and the position, between BEGIN and COMMIT.
    """
    now = now or timezone.now()
    max_accuracy = getattr(settings, "GPS_MAX_ACCURACY_M", 500)
    max_speed_mps = MAX_SPEED_KMH / 3.6

    rejected, clean = [], []
    for index, fix in enumerate(fixes):
        row, reason = _check(fix, now=now)
        if row is None:
            raw_uuid = fix.get("uuid") if isinstance(fix, dict) else None
            rejected.append(
                {"index": index, "uuid": None if raw_uuid is None else str(raw_uuid), "reason": reason}
            )
        else:
            clean.append(row)
    if not clean:
        return {"accepted": 0, "duplicates": 0, "rejected": rejected, "flagged": 0}

    # Speed is judged against the previous good fix in device time: for a late offline buffer
    # that is the good fix stored just before it, not the (newer) current position. Read before
    # the insert: the newest good fix stored so far (context.route) tells an append from a late
    # buffer.
    start = min(row["recorded_at"] for row in clean)
    context = _batch_context(driver_id=driver.pk, uuids={row["uuid"] for row in clean}, before=start, now=now)
    seen = context.stored
    new = []
    for row in clean:
        if row["uuid"] not in seen:  # also catches a uuid repeated inside the batch
            seen.add(row["uuid"])
            new.append(row)
    duplicates = len(clean) - len(new)
    if not new:
        return {"accepted": 0, "duplicates": duplicates, "rejected": rejected, "flagged": 0}

    new.sort(key=lambda row: row["recorded_at"])
    previous = context.previous
    if new[0]["recorded_at"] != start:
        # The batch's earliest fixes were duplicates: the good fix just before the new ones may
        # be later than the one read (one of those duplicates, say).
        previous = (
            LocationPing.objects.filter(driver=driver, flags="", recorded_at__lt=new[0]["recorded_at"])
            .order_by("-recorded_at")
            .values("lat", "lng", "recorded_at")
            .first()
        )
    stored_previous = previous
    pings, flagged, newest_good, good = [], 0, None, []
    for row in new:
        flags = []
        if row["accuracy_m"] is not None and row["accuracy_m"] > max_accuracy:
            flags.append(LocationPing.Flag.LOW_ACCURACY)
        if previous is not None:
            seconds = (row["recorded_at"] - previous["recorded_at"]).total_seconds()
            metres = distance_m(previous["lat"], previous["lng"], row["lat"], row["lng"])
            # Two fixes at the same instant more than 50 m apart cannot both be right.
            if (seconds > 0 and metres / seconds > max_speed_mps) or (seconds <= 0 and metres > 50):
                flags.append(LocationPing.Flag.SPEED_JUMP)
        if flags:
            flagged += 1
        else:
            previous = newest_good = row
            good.append(row)
        pings.append({**row, "flags": ",".join(flags)})
    _pings_insert(driver=driver, rows=pings, source=source, now=now)
    if good and context.route is not None:
        _route_travel_extend(
            driver=driver,
            route=context.route,
            good=good,
            previous=stored_previous,
            batch_start=new[0]["recorded_at"],
        )
    if newest_good is not None:
        _position_advance(driver=driver, row=newest_good, source=source, now=now)
    return {"accepted": len(new), "duplicates": duplicates, "rejected": rejected, "flagged": flagged}


_PING_FIELDS = (
    "organization",
    "driver",
    "uuid",
    "recorded_at",
    "received_at",
    "lat",
    "lng",
    "accuracy_m",
    "speed_mps",
    "heading_deg",
    "source",
    "flags",
)


@functools.cache
def _pings_insert_sql(rows: int) -> str:
    # Plain SQL for the same reason as _batch_context_sql: for a one-fix request the ORM's
    # bulk_create took longer to build its INSERT than the database took to run it. A uuid
    # the driver sent already (a concurrent replay) stores nothing, as ignore_conflicts would.
    columns = ", ".join(column(LocationPing, name) for name in _PING_FIELDS)
    values = ", ".join(["(" + ", ".join(["%s"] * len(_PING_FIELDS)) + ")"] * rows)
    return f"INSERT INTO {table(LocationPing)} ({columns}) VALUES {values} ON CONFLICT DO NOTHING"


def _pings_insert(*, driver: Driver, rows: list[dict], source: str, now: datetime) -> None:
    """INSERT the checked fixes `rows` (_check's dicts plus "flags"), in as few statements as the
    backend's parameter limit allows."""
    uuid_field = LocationPing._meta.get_field("uuid")
    adapt = connection.ops.adapt_datetimefield_value
    received, source = adapt(now), str(source)
    fields = [LocationPing._meta.get_field(name) for name in _PING_FIELDS]
    size = connection.ops.bulk_batch_size(fields, rows) or len(rows)
    with connection.cursor() as cursor:
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            params = []
            for row in chunk:
                params += (
                    driver.organization_id,
                    driver.pk,
                    uuid_field.get_db_prep_value(row["uuid"], connection),
                    adapt(row["recorded_at"]),
                    received,
                    row["lat"],
                    row["lng"],
                    row["accuracy_m"],
                    row["speed_mps"],
                    row["heading_deg"],
                    source,
                    row["flags"],
                )
            cursor.execute(_pings_insert_sql(len(chunk)), params)


@dataclass
class _BatchContext:
    stored: set  # the batch's uuids this driver already sent
    previous: dict | None  # {lat, lng, recorded_at} of his newest good fix before the batch
    # His in-progress route of the organisation-local today: {pk, date, started_at (the start of
    # the local day if not set), travelled_distance_m, newest_good (time of his newest good fix)}.
    route: dict | None


@functools.cache
def _batch_context_sql() -> str:
    """_batch_context's statement, plain SQL that PostgreSQL and SQLite both run, built once per
    process from the models' names: on the ingest's hot path the ORM took longer to build and
    compile its three queries than the database took to answer them. `{uuids}` stands for one
    placeholder per uuid. The rows of the first part are fixes, those of the second routes
    (the columns the other part has are NULL)."""
    ping, route, org = (table(m) for m in (LocationPing, Route, Organization))
    p = {
        name: column(LocationPing, name)
        for name in ("id", "driver", "uuid", "lat", "lng", "recorded_at", "flags")
    }
    r = {
        name: column(Route, name)
        for name in ("id", "organization", "driver", "status", "date", "started_at", "travelled_distance_m")
    }
    newest_good = (
        f"SELECT g.{p['recorded_at']} FROM {ping} g WHERE g.{p['driver']} = r.{r['driver']} "
        f"AND g.{p['flags']} = '' ORDER BY g.{p['recorded_at']} DESC LIMIT 1"
    )
    previous_id = (
        f"SELECT b.{p['id']} FROM {ping} b WHERE b.{p['driver']} = %s AND b.{p['flags']} = '' "
        f"AND b.{p['recorded_at']} < %s ORDER BY b.{p['recorded_at']} DESC LIMIT 1"
    )
    return (
        f"SELECT f.{p['uuid']}, f.{p['lat']}, f.{p['lng']}, f.{p['recorded_at']}, f.{p['flags']}, "
        "NULL, NULL, NULL, NULL, NULL, NULL "
        f"FROM {ping} f WHERE f.{p['driver']} = %s "
        f"AND (f.{p['uuid']} IN ({{uuids}}) OR f.{p['id']} = ({previous_id})) "
        "UNION ALL "
        "SELECT NULL, NULL, NULL, NULL, NULL, "
        f"r.{r['id']}, r.{r['date']}, r.{r['started_at']}, r.{r['travelled_distance_m']}, "
        f"o.{column(Organization, 'timezone')}, ({newest_good}) "
        f"FROM {route} r INNER JOIN {org} o ON o.{column(Organization, 'id')} = r.{r['organization']} "
        f"WHERE r.{r['driver']} = %s AND r.{r['status']} = %s AND r.{r['date']} BETWEEN %s AND %s"
    )


def _datetime(value: Any) -> datetime | None:
    # PostgreSQL answers aware datetimes; SQLite naive ones or, from a subquery, their text (as
    # the ORM's own converter: naive means in the connection's zone, UTC).
    if isinstance(value, str):
        value = parse_datetime(value)
    if value is not None and timezone.is_naive(value):
        value = timezone.make_aware(value, connection.timezone)
    return value


def _batch_context(*, driver_id: int, uuids: set, before: datetime, now: datetime) -> _BatchContext:
    """What storing a batch needs to know, in one query: which of its `uuids` the driver already
    sent, his newest good fix before `before`, and the route he is driving now.

    Any good stored fix before `before` is at most as new as the newest one, which the query
    reads, so the newest of those returned is the previous good fix.
    """
    uuid_field = LocationPing._meta.get_field("uuid")
    adapt = connection.ops.adapt_datetimefield_value
    utc_day = now.astimezone(UTC).date()  # the local today is this day or one either side
    params = [
        driver_id,
        *(uuid_field.get_db_prep_value(u, connection) for u in uuids),
        driver_id,
        adapt(before),
        driver_id,
        Route.Status.IN_PROGRESS.value,
        connection.ops.adapt_datefield_value(utc_day - timedelta(days=1)),
        connection.ops.adapt_datefield_value(utc_day + timedelta(days=1)),
    ]
    sql = _batch_context_sql().format(uuids=", ".join(["%s"] * len(uuids)))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    stored, previous, route = set(), None, None
    for sent, lat, lng, recorded_at, flags, route_id, day, started_at, travelled, tz_name, newest in rows:
        if route_id is None:
            sent = sent if isinstance(sent, uuid_lib.UUID) else uuid_lib.UUID(sent)
            recorded_at = _datetime(recorded_at)
            if sent in uuids:
                stored.add(sent)
            newer = previous is None or recorded_at > previous["recorded_at"]
            if not flags and recorded_at < before and newer:
                previous = {"lat": lat, "lng": lng, "recorded_at": recorded_at}
            continue
        # At most one live route per driver and day (a constraint): the one of his local today.
        tz = ZoneInfo(tz_name)
        day = day if isinstance(day, date) else date.fromisoformat(day)
        if day == local_today(tz, now):
            route = {
                "pk": route_id,
                "date": day,
                "started_at": _datetime(started_at) or local_day_bounds(day, tz)[0],
                "travelled_distance_m": travelled,
                "newest_good": _datetime(newest),
            }
    return _BatchContext(stored=stored, previous=previous, route=route)


def _route_travel_extend(
    *, driver: Driver, route: dict, good: list[dict], previous: dict | None, batch_start: datetime
) -> None:
    """Keep Route.travelled_distance_m: the jitter-free length of the path of the driver's good
    fixes since the route started (tracking.geo.path_length_m).

    A batch newer than every stored good fix extends it from the previous good fix; a late
    offline buffer landing in the middle of history, or a concurrent request that changed the
    distance first, recomputes it from the route's good fixes in one query.
    """
    start = route["started_at"]
    driven = [row for row in good if row["recorded_at"] >= start]
    if not driven:
        return
    if route["newest_good"] is None or route["newest_good"] < batch_start:
        # `previous` is then the newest stored good fix; it counts only if on this route.
        on_route = previous is not None and previous["recorded_at"] >= start
        path = [(previous["lat"], previous["lng"], None)] if on_route else []
        extra = path_length_m(path + [(row["lat"], row["lng"], row["accuracy_m"]) for row in driven])
        old = route["travelled_distance_m"]
        if not extra or route_travelled_set(route_id=route["pk"], metres=old + extra, expected=old):
            return
    points = (
        LocationPing.objects.filter(driver=driver, flags="", recorded_at__gte=start)
        .order_by("recorded_at", "pk")
        .values_list("lat", "lng", "accuracy_m")
    )
    route_travelled_set(route_id=route["pk"], metres=path_length_m(list(points)))


def _position_advance(*, driver: Driver, row: dict, source: str, now: datetime) -> None:
    """Move the driver's position to `row` unless the stored one is as new or newer.

    A conditional UPDATE, not read-modify-write: two requests racing never move it backwards.
    """
    values = {
        "lat": row["lat"],
        "lng": row["lng"],
        "accuracy_m": row["accuracy_m"],
        "speed_mps": row["speed_mps"],
        "heading_deg": row["heading_deg"],
        "recorded_at": row["recorded_at"],
        "received_at": now,
        "source": source,
    }
    if _position_update(driver_id=driver.pk, values=values):
        return
    # No row yet, or a newer one. INSERT ... ON CONFLICT DO NOTHING, then the conditional
    # update once more in case another request created an older row in between.
    DriverPosition.objects.bulk_create(
        [DriverPosition(driver=driver, organization_id=driver.organization_id, **values)],
        ignore_conflicts=True,
    )
    _position_update(driver_id=driver.pk, values=values)


_POSITION_FIELDS = (
    "lat",
    "lng",
    "accuracy_m",
    "speed_mps",
    "heading_deg",
    "recorded_at",
    "received_at",
    "source",
)


@functools.cache
def _position_update_sql() -> str:
    # Plain SQL for the same reason as _batch_context_sql: the ORM's update() of eight fields
    # cost twice what the statement does.
    columns = {name: column(DriverPosition, name) for name in (*_POSITION_FIELDS, "driver")}
    assignments = ", ".join(f"{columns[name]} = %s" for name in _POSITION_FIELDS)
    return (
        f"UPDATE {table(DriverPosition)} SET {assignments} "
        f"WHERE {columns['driver']} = %s AND {columns['recorded_at']} < %s"
    )


def _position_update(*, driver_id: int, values: dict) -> int:
    """UPDATE the driver's position to `values` if it is older; returns the rows changed (0 or 1)."""
    adapt = connection.ops.adapt_datetimefield_value
    params = [
        *(values[name] for name in _POSITION_FIELDS[:5]),
        adapt(values["recorded_at"]),
        adapt(values["received_at"]),
        str(values["source"]),
        driver_id,
        adapt(values["recorded_at"]),
    ]
    with connection.cursor() as cursor:
        cursor.execute(_position_update_sql(), params)
        return cursor.rowcount


# --- Working a route: the driver's actions (issue #4) ----------------------------------------

# Codes the app sends → the words dispatchers and reports read (Stop.failure_reason).
FAILURE_REASONS = {
    "not_home": "Nobody home",
    "refused": "Refused by the recipient",
    "address_not_found": "Address not found",
    "access_problem": "Could not get access",
    "damaged": "Parcel damaged",
    "other": "Other",
}
STOP_KINDS = ("arrived", "delivered", "failed", "skipped")
ROUTE_KINDS = ("start", "end")
OPEN_STOP_STATUSES = (Stop.Status.PENDING, Stop.Status.EN_ROUTE, Stop.Status.ARRIVED)
_FINAL_STOP_STATUSES = (Stop.Status.COMPLETED, Stop.Status.FAILED, Stop.Status.SKIPPED)


@dataclass
class DriverActionResult:
    action: DriverAction
    route: Route
    stop: Stop | None
    duplicate: bool


def _stored(*, driver: Driver, uuid: uuid_lib.UUID, kind: str, route: Route, stop: Stop | None):
    """The result of an action already stored under this uuid, or None.

    A uuid reused for a different action is a client bug: refusing it beats silently
    answering with another action's result.
    """
    action = DriverAction.objects.filter(driver=driver, uuid=uuid).first()
    if action is None:
        return None
    if action.kind != kind or action.route_id != route.pk or action.stop_id != (stop.pk if stop else None):
        raise IllegalTransition(
            "This action id was already used for another action; the app must send a new id per action."
        )
    route.refresh_from_db()
    if stop is not None:
        stop.refresh_from_db()
    return DriverActionResult(action=action, route=route, stop=stop, duplicate=True)


def _idempotent(work, *, driver: Driver, uuid: uuid_lib.UUID, kind: str, route: Route, stop: Stop | None):
    """Run `work` once per (driver, uuid). A replay, or a replay racing the first request (it
    loses on the unique constraint or on the conditional status update), gets the stored result."""
    replay = _stored(driver=driver, uuid=uuid, kind=kind, route=route, stop=stop)
    if replay is not None:
        return replay
    try:
        return work()
    except (IntegrityError, IllegalTransition):
        replay = _stored(driver=driver, uuid=uuid, kind=kind, route=route, stop=stop)
        if replay is None:
            raise
        return replay


def _check_driver_route(*, driver: Driver, route: Route, now: datetime) -> None:
    if route.driver_id != driver.pk:
        raise PermissionDenied("This route belongs to another driver.")
    today = local_today(driver.organization.tzinfo, now)
    if route.date != today:
        raise IllegalTransition(f"This route is for {route.date:%d %b %Y}; you can only work today's route.")
    if route.status == Route.Status.DRAFT:
        raise IllegalTransition("This route is not published yet; wait for your dispatcher to publish it.")


def _device_time(at: datetime, now: datetime) -> datetime:
    """The device's time, but never in the future: a fast phone clock must not date events ahead."""
    return min(at, now)


def _action(
    *, driver: Driver, uuid: uuid_lib.UUID, kind: str, route: Route, stop: Stop | None,
    at: datetime, now: datetime, payload: dict,
) -> DriverAction:  # fmt: skip
    # Inserted first, so a concurrent replay of the same uuid fails on the constraint at once.
    return DriverAction.objects.create(
        organization_id=driver.organization_id,
        driver=driver,
        uuid=uuid,
        kind=kind,
        route=route,
        stop=stop,
        recorded_at=at,
        received_at=now,
        payload=payload,
    )


def driver_route_event(
    *, driver: Driver, route: Route, uuid: uuid_lib.UUID, kind: str, at: datetime, now: datetime | None = None
) -> DriverActionResult:
    """Start (published → in progress) or end (in progress → completed) the driver's route today.

    Ending is refused while any stop is pending, en route or arrived. Raises IllegalTransition
    (409) for a refused change, PermissionDenied for another driver's route, ValidationError for
    an unknown kind. A repeated uuid returns the first result with duplicate=True, changing nothing.
    """
    if kind not in ROUTE_KINDS:
        raise ValidationError({"kind": f"“{kind}” is not a route action; use start or end."})
    now = now or timezone.now()
    action_kind = DriverAction.Kind.ROUTE_START if kind == "start" else DriverAction.Kind.ROUTE_END

    @transaction.atomic
    def work() -> DriverActionResult:
        current = Route.objects.get(pk=route.pk)
        _check_driver_route(driver=driver, route=current, now=now)
        when = _device_time(at, now)
        if kind == "start":
            if current.status == Route.Status.COMPLETED:
                raise IllegalTransition("This route is already completed.")
            target = Route.Status.IN_PROGRESS
        else:
            if current.status == Route.Status.COMPLETED:
                raise IllegalTransition("This route is already completed.")
            still_open = current.stops.filter(status__in=OPEN_STOP_STATUSES).count()
            if still_open:
                raise IllegalTransition(
                    f"{still_open} stop{'s are' if still_open != 1 else ' is'} still open: mark each one "
                    "delivered, failed or skipped before ending the route."
                )
            target = Route.Status.COMPLETED
        action = _action(
            driver=driver, uuid=uuid, kind=action_kind, route=current, stop=None, at=at, now=now,
            payload={"at": when.isoformat()},
        )  # fmt: skip
        # A route a stop event already started is simply started: an offline queue may send
        # "start" after its first delivery.
        if current.status != target:
            current = route_transition(route=current, to=target, by=driver.user, at=when)
            if target == Route.Status.COMPLETED:
                # The route page's driven path, final now that the route is over.
                route_path_build(route=current, now=now)
        action.result = {"route": current.pk, "status": current.status}
        action.save(update_fields=["result"])
        return DriverActionResult(action=action, route=current, stop=None, duplicate=False)

    return _idempotent(work, driver=driver, uuid=uuid, kind=action_kind, route=route, stop=None)


def driver_stop_event(
    *,
    driver: Driver,
    stop: Stop,
    uuid: uuid_lib.UUID,
    kind: str,
    at: datetime,
    reason: str = "",
    note: str = "",
    lat: float | None = None,
    lng: float | None = None,
    now: datetime | None = None,
    proof: "pod_services.PreparedProof | None" = None,
    proof_capture: dict | None = None,
) -> DriverActionResult:
    """Record what the driver did at a stop of his route today: arrived, delivered, failed, skipped.

    With `proof` (from pod.services.proof_prepare) the proof is stored in the same transaction
    as the change: both or neither. `proof_capture` holds its position, accuracy and device time.
    A delivery without proof is refused when the organisation's policy requires one.

    `at` is the device's time (clamped to now) and becomes the StopEvent's time. Delivering a
    pending stop marks it arrived first; a stop done while earlier ones are still open is allowed
    and noted in the action's payload ("out_of_planned_order"). The first stop action on a
    published route starts it. Failing needs a reason from FAILURE_REASONS ("other" needs a
    note); it is stored as its label. Raises ValidationError (bad reason), IllegalTransition
    (e.g. the stop is already closed), PermissionDenied (another driver's stop). A repeated uuid
    returns the first result with duplicate=True and writes no StopEvent. Enqueues nothing.
    """
    if kind not in STOP_KINDS:
        raise ValidationError({"kind": f"“{kind}” is not a stop action; use one of {', '.join(STOP_KINDS)}."})
    reason, note = reason.strip(), note.strip()
    if kind == "failed":
        if reason not in FAILURE_REASONS:
            raise ValidationError({"reason": f"Choose why it failed: {', '.join(FAILURE_REASONS)}."})
        if reason == "other" and not note:
            raise ValidationError({"note": "Say what went wrong when the reason is “other”."})
    now = now or timezone.now()
    route = stop.route

    @transaction.atomic
    def work() -> DriverActionResult:
        current = Stop.objects.select_related("route", "order").get(pk=stop.pk)
        _check_driver_route(driver=driver, route=current.route, now=now)
        if current.route.status == Route.Status.COMPLETED:
            raise IllegalTransition("This route is already completed; ask your dispatcher to change a stop.")
        if current.status in _FINAL_STOP_STATUSES:
            raise IllegalTransition(
                f"Stop {current.sequence} is already {current.get_status_display().lower()}; "
                f"it cannot be marked {kind} again."
            )
        if kind == "delivered" and proof is None:
            # The plain action carries no proof: only for organisations that require none.
            missing = pod_services.proof_requirements(order=current.order)
            if missing:
                raise ValidationError({"proof": pod_services.requirements_text(missing)})
        when = _device_time(at, now)
        earlier_open = current.route.stops.filter(
            sequence__lt=current.sequence, status__in=(Stop.Status.PENDING, Stop.Status.EN_ROUTE)
        ).count()
        payload = {"at": when.isoformat(), "reason": reason, "note": note, "lat": lat, "lng": lng}
        if earlier_open and kind != "arrived":
            payload |= {"out_of_planned_order": True, "earlier_open_stops": earlier_open}
        action = _action(
            driver=driver, uuid=uuid, kind=kind, route=current.route, stop=current, at=at, now=now,
            payload=payload,
        )  # fmt: skip
        route_started = current.route.status == Route.Status.PUBLISHED
        if route_started:
            route_transition(route=current.route, to=Route.Status.IN_PROGRESS, by=driver.user, at=when)
        position = {"lat": lat, "lng": lng}
        auto_arrived = kind == "delivered" and current.status in (Stop.Status.PENDING, Stop.Status.EN_ROUTE)
        if kind == "arrived" or auto_arrived:
            current = stop_transition(
                stop=current, to=Stop.Status.ARRIVED, by=driver.user, at=when,
                note=note if kind == "arrived" else "", **position,
            )  # fmt: skip
        if kind == "delivered":
            current = stop_transition(stop=current, to=Stop.Status.COMPLETED, by=driver.user, at=when)
        elif kind == "failed":
            label = FAILURE_REASONS[reason]
            # "Other" alone tells a dispatcher nothing: keep the driver's words with it.
            text = f"{label}: {note}"[:200] if reason == "other" else label
            current = stop_transition(
                stop=current,
                to=Stop.Status.FAILED,
                by=driver.user,
                at=when,
                reason=text,
                note=note,
                **position,
            )
        elif kind == "skipped":
            current = stop_transition(
                stop=current, to=Stop.Status.SKIPPED, by=driver.user, at=when, note=note, **position
            )
        if proof is not None:
            capture = proof_capture or {}
            pod_services.proof_record(
                prepared=proof, stop=current, key=uuid, by=driver.user,
                captured_at=capture.get("captured_at") or when, lat=capture.get("lat", lat),
                lng=capture.get("lng", lng), accuracy_m=capture.get("accuracy"), note=note, now=now,
            )  # fmt: skip
        action.result = {
            "stop": current.pk,
            "status": current.status,
            "route_status": Route.objects.values_list("status", flat=True).get(pk=current.route_id),
            "route_started": route_started,
            "auto_arrived": auto_arrived,
        }
        action.save(update_fields=["result"])
        current.route.refresh_from_db()
        return DriverActionResult(action=action, route=current.route, stop=current, duplicate=False)

    action_kind = DriverAction.Kind(kind)
    return _idempotent(work, driver=driver, uuid=uuid, kind=action_kind, route=route, stop=stop)


# --- Tracker apps: Traccar Client & co. over the OsmAnd protocol (issue #4 item 4) -----------

logger = logging.getLogger(__name__)
TRACKER_KEY_BYTES = 24  # 192 bits from secrets: the key is the app's whole credential
TRACKER_KEY_MAX_LENGTH = 200


def _tracker_key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def tracker_device_create(*, driver: Driver, name: str, by) -> tuple[TrackerDevice, str]:
    """A new tracker device for `driver` and its plain key, which is returned only here.

    Only the key's SHA-256 and its first characters are stored. Raises ValidationError for an
    empty name. Enqueues nothing.
    """
    name = name.strip()
    if not name:
        raise ValidationError({"name": "Name the phone or app, e.g. “Traccar on Anna’s phone”."})
    key = secrets.token_urlsafe(TRACKER_KEY_BYTES)
    device = TrackerDevice.objects.create(
        organization_id=driver.organization_id,
        driver=driver,
        name=name[:80],
        key_hash=_tracker_key_hash(key),
        key_hint=key[:6],
        created_by=by,
    )
    return device, key


def tracker_device_revoke(*, device: TrackerDevice, by, at: datetime | None = None) -> TrackerDevice:
    """Refuse the device's fixes from now on. Revoking twice keeps the first time."""
    at = at or timezone.now()
    if TrackerDevice.objects.filter(pk=device.pk, revoked_at=None).update(revoked_at=at):
        logger.info("Tracker device %s of driver %s revoked by %s", device.pk, device.driver_id, by)
    device.refresh_from_db(fields=["revoked_at"])
    return device


def tracker_device_for_key(key: str | None) -> TrackerDevice | None:
    """The active device whose key this is, or None (unknown, revoked, or an inactive driver).

    Looked up by the key's SHA-256, so comparing never leaks how much of a key matched.
    """
    if not key or len(key) > TRACKER_KEY_MAX_LENGTH:
        return None
    return (
        TrackerDevice.objects.select_related("driver__organization")
        .filter(key_hash=_tracker_key_hash(key), revoked_at=None, driver__is_active=True)
        .first()
    )


def tracker_location_record(*, device: TrackerDevice, fixes: list[dict], now: datetime | None = None) -> dict:
    """Store a tracker app's fixes for its driver (source tracker) and note the device was seen.

    `fixes` come from tracking.osmand.osmand_parse. Each gets a uuid derived from the device,
    its time and coordinates, so an app's retry of the same fix is a duplicate. Returns
    location_record_batch's result; raises nothing for implausible fixes.
    """
    now = now or timezone.now()
    rows = [
        {
            **fix,
            "uuid": fix_uuid(
                device_id=device.pk, recorded_at=fix["recorded_at"], lat=fix["lat"], lng=fix["lng"]
            ),
        }
        for fix in fixes
    ]
    result = location_record_batch(driver=device.driver, fixes=rows, source=Source.TRACKER, now=now)
    TrackerDevice.objects.filter(pk=device.pk).update(last_seen_at=now)
    return result


# --- Completing a stop with proof of delivery (issue #5) ------------------------------------


def driver_stop_proof(
    *,
    driver: Driver,
    stop: Stop,
    uuid: uuid_lib.UUID,
    kind: str,
    at: datetime,
    reason: str = "",
    note: str = "",
    recipient_name: str = "",
    pin: str = "",
    scanned_code: str = "",
    photos: list | None = None,
    signature=None,
    lat: float | None = None,
    lng: float | None = None,
    accuracy: float | None = None,
    now: datetime | None = None,
) -> DriverActionResult:
    """Deliver a stop (or fail it) together with its proof: both or neither.

    The uuid is the app's capture key and the driver action's id at once, so a retry after a
    lost answer returns the first result (duplicate=True) and stores nothing twice. Raises
    ValidationError (policy, PIN, barcode, fields), pod.images.ImageRejected (bad upload),
    IllegalTransition or PermissionDenied as driver_stop_event does; then nothing is stored.
    """
    action_kind = DriverAction.Kind(kind)
    replay = _stored(driver=driver, uuid=uuid, kind=action_kind, route=stop.route, stop=stop)
    if replay is not None:
        return replay  # before decoding anything: a retry costs one query
    prepared = pod_services.proof_prepare(
        stop=stop,
        outcome=kind,
        photos=photos,
        signature=signature,
        recipient_name=recipient_name,
        pin=pin,
        scanned_code=scanned_code,
    )
    try:
        result = driver_stop_event(
            driver=driver, stop=stop, uuid=uuid, kind=kind, at=at, reason=reason, note=note,
            lat=lat, lng=lng, now=now, proof=prepared,
            proof_capture={"captured_at": at, "lat": lat, "lng": lng, "accuracy": accuracy},
        )  # fmt: skip
    except BaseException:
        prepared.discard()
        raise
    if result.duplicate:  # lost a race with the same capture: its files are not needed
        prepared.discard()
    return result
