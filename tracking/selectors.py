"""Reads for live data: the driver app (scoped to one driver) and the dispatcher's dashboard
(scoped to one organisation)."""

import functools
import hashlib
import zoneinfo
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import (
    Aggregate,
    CharField,
    Count,
    F,
    Max,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Cast
from django.http import Http404
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from dispatch.models import Depot, Driver, Order, Organization, Route, Stop, StopEvent, Vehicle
from dispatch.timeutils import local_day_bounds, local_today
from pod.models import ProofOfDelivery, ProofPhoto
from tracking.geo import distance_m
from tracking.models import Alert, DriverPosition, LocationPing, Source, TrackingLink, TrackingSettings

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
# Polled every 5 s by every open browser, so its reads are a fixed number of queries whatever the
# number of drivers and stops (bench/live measures it), and they read rows, not model instances:
# per-route counts are computed by the database, never by looping over stops. The polled #live
# partial carries what changes often (progress, positions, alerts, stop states as sequence
# numbers); the map's geometry (route lines, stop positions and labels, depots) comes from
# /live/map.json, fetched again only when the partial's `map_version` changes. Scoped to one
# organisation.

# A fix older than this is drawn greyed out: the driver's phone may have lost signal.
STALE_AFTER = timedelta(minutes=5)
ROUTE_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]
OPEN_STOP_STATUSES = (Stop.Status.PENDING, Stop.Status.EN_ROUTE, Stop.Status.ARRIVED)
FAILED_STOP_STATUSES = (Stop.Status.FAILED, Stop.Status.SKIPPED)
CLOSED_STOP_STATUSES = (Stop.Status.COMPLETED, *FAILED_STOP_STATUSES)
ROUTE_STATUS_LABELS = dict(Route.Status.choices)
_NAME_FIELDS = ("driver__user__first_name", "driver__user__last_name", "driver__user__username")


class _CommaList(Aggregate):
    """The group's values as text joined by commas, in no particular order (STRING_AGG on
    PostgreSQL, GROUP_CONCAT on SQLite); NULL for an empty group. Takes `filter=` like Count."""

    function = "STRING_AGG"
    output_field = CharField()

    def __init__(self, expression, **extra):
        super().__init__(Cast(expression, CharField()), Value(","), **extra)

    def as_sqlite(self, compiler, connection, **extra_context):
        return self.as_sql(compiler, connection, function="GROUP_CONCAT", **extra_context)


def _fetch(sql: str, params: list, *, many: bool = False) -> Any:
    """One row (or, with `many`, all rows) of a hot, fixed statement in plain SQL. On PostgreSQL
    psycopg plans it once per connection from its second run on (config/settings.py,
    DATABASE_PREPARED_STATEMENTS): for the polls' fingerprints planning cost more than running."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if many else cursor.fetchone()


@functools.cache
def _fingerprint_sql() -> str:
    """The fingerprint's one statement: per table, the row count and the latest time (or pk,
    or version sum), as text. Plain SQL that PostgreSQL and SQLite both run, built once per
    process from the models' names: on the 304 path the ORM took longer to build and compile
    this query than the database took to answer it."""
    quote = connection.ops.quote_name

    def col(model, name: str) -> str:
        return quote(model._meta.get_field(name).column)

    def summary(model, where: str, *aggregates: str) -> str:
        values = " || ' ' || ".join(f"COALESCE(CAST({a} AS TEXT), '')" for a in ("COUNT(*)", *aggregates))
        table = quote(model._meta.db_table)
        return f"(SELECT {values} FROM {table} WHERE {col(model, 'organization')} = %s{where})"

    P, R, E, A = DriverPosition, Route, StopEvent, Alert
    return "SELECT " + ", ".join(
        [
            summary(P, "", f"MAX({col(P, 'received_at')})"),
            summary(R, f" AND {col(R, 'date')} = %s", f"SUM({col(R, 'version')})", f"MAX({col(R, 'id')})"),
            summary(E, f" AND {col(E, 'recorded_at')} >= %s", f"MAX({col(E, 'recorded_at')})"),
            summary(
                A,
                f" AND {col(A, 'resolved_at')} IS NULL",
                f"MAX({col(A, 'raised_at')})",
                f"MAX({col(A, 'acknowledged_at')})",
            ),
        ]
    )


def dashboard_fingerprint(*, organization: Organization, day: date, now: datetime) -> str:
    """A cheap summary of everything the live dashboard shows, for its ETag (one query).

    Stop transitions and dispatchers' route edits bump Route.version, and anything that changes
    today's orders or stops writes a StopEvent; new positions (and the travelled distance the
    ingest keeps with them) move DriverPosition.received_at; raising, acknowledging and
    resolving an alert each write a time. The minute is part of it because ages, staleness and
    lateness change with the clock alone.
    """
    start, _end = local_day_bounds(day, organization.tzinfo)
    ops, org = connection.ops, organization.pk
    params = [org, org, ops.adapt_datefield_value(day), org, ops.adapt_datetimefield_value(start), org]
    values = _fetch(_fingerprint_sql(), params)
    return f"{org}-{day:%Y%m%d}-{int(now.timestamp() // 60)}-" + "-".join(map(str, values))


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


def _full_name(first: str, last: str, username: str) -> str:
    """Driver.name from values() rows (User.get_full_name() or the username)."""
    return f"{first} {last}".strip() or username


def _age_text(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min ago"


def _position_json(p: dict[str, Any], route_id: int | None, now: datetime) -> dict[str, Any]:
    """One driver's map entry from a DriverPosition values() row."""
    age = (now - p["recorded_at"]).total_seconds()
    return {
        "id": p["driver_id"],
        "name": _full_name(*(p[f] for f in _NAME_FIELDS)),
        "route": route_id,
        "lat": p["lat"],
        "lng": p["lng"],
        "heading": p["heading_deg"],
        "speed": p["speed_mps"],
        "source_label": "via tracker app" if p["source"] == Source.TRACKER else "via driver app",
        "age": _age_text(age),
        "stale": age > STALE_AFTER.total_seconds(),
    }


def _route_rows(*, organization: Organization, day: date, now: datetime) -> list[dict[str, Any]]:
    """Today's routes as values() rows, each with its progress counted by the database (two
    queries: the routes, and their stops ⟕ orders grouped by route).

    Per row: total, done (closed), failed (failed or skipped), late (open, with a window that
    closes before the planned arrival or has closed already), last_arrival (the planned arrival
    of the last stop in sequence), done_seqs / failed_seqs (the sequences of completed and of
    failed stops, comma-separated, unordered; the map colours stops by them), and the geometry
    summary the map version is made of (g_*).
    """
    last_arrival = (
        Stop.objects.filter(route=OuterRef("pk")).order_by("-sequence").values("planned_arrival")[:1]
    )
    rows = list(
        Route.objects.filter(organization=organization, date=day)
        .order_by(*_NAME_FIELDS, "pk")
        .values(
            "pk",
            "status",
            "driver_id",
            "started_at",
            "planned_end",
            "travelled_distance_m",
            *_NAME_FIELDS,
            "vehicle__name",
            "depot_id",
            "depot__name",
            "depot__lat",
            "depot__lng",
        )
        .annotate(last_arrival=Subquery(last_arrival))
    )
    late = (
        Q(status__in=OPEN_STOP_STATUSES)
        & Q(order__window_end__isnull=False)
        & (Q(planned_arrival__gt=F("order__window_end")) | Q(order__window_end__lt=now))
    )
    progress = {
        p.pop("route_id"): p
        for p in Stop.objects.filter(
            organization=organization, route__organization=organization, route__date=day
        )
        .order_by()
        .values("route_id")
        .annotate(
            total=Count("pk"),
            done=Count("pk", filter=Q(status__in=CLOSED_STOP_STATUSES)),
            failed=Count("pk", filter=Q(status__in=FAILED_STOP_STATUSES)),
            late=Count("pk", filter=late),
            done_seqs=_CommaList("sequence", filter=Q(status=Stop.Status.COMPLETED)),
            failed_seqs=_CommaList("sequence", filter=Q(status__in=FAILED_STOP_STATUSES)),
            # Which stops, in which order, where: changes when stops are added, removed, moved
            # or re-sequenced, or an order's coordinates change; not when a stop's state does.
            g_last=Max("pk"),
            g_order=Sum(F("sequence") * F("pk")),
            g_lat=Sum("order__lat"),
            g_lng=Sum("order__lng"),
        )
    }
    empty = dict.fromkeys(("total", "done", "failed", "late"), 0) | dict.fromkeys(
        ("done_seqs", "failed_seqs", "g_last", "g_order", "g_lat", "g_lng")
    )
    for row in rows:
        row.update(progress.get(row["pk"], empty))
    return rows


def _map_version(rows: list[dict[str, Any]]) -> str:
    """The map geometry's version: the routes in their order (colours follow it), each one's
    driver, depot and stops. Depots are not in it: a depot edit shows on the next page load."""
    geometry = [
        (
            r["pk"],
            r["driver_id"],
            *(r[f] for f in _NAME_FIELDS),
            r["depot_id"],
            r["depot__lat"],
            r["depot__lng"],
        )
        + (r["total"], r["g_last"], r["g_order"], r["g_lat"], r["g_lng"])
        for r in rows
    ]
    return hashlib.sha256(repr(geometry).encode()).hexdigest()[:16]


def dashboard_live(*, organization: Organization, day: date, now: datetime) -> dict[str, Any]:
    """What the polled #live partial shows: today's routes with their progress, the drivers'
    latest positions and the map's live layer (three queries: routes, their stops counted by
    route, positions; dicts, no model instances).

    Returns {"rows": [route row], "idle_positions": [driver map entry], "map": dict}, where the
    map dict is {"map_version", "drivers": [entry], "states": {route id: {"done",
    "failed"}}} (stop sequences, comma-separated; any other stop is pending).
    """
    rows = _route_rows(organization=organization, day=day, now=now)
    positions = {
        p["driver_id"]: p
        for p in DriverPosition.objects.filter(organization=organization).values(
            "driver_id", "lat", "lng", "heading_deg", "speed_mps", "source", "recorded_at", *_NAME_FIELDS
        )
    }
    # reverse() once, not once per route.
    url_template = reverse("dispatch:route_detail", args=[999999999])
    on_route = set()
    for i, r in enumerate(rows):
        on_route.add(r["driver_id"])
        r["colour"] = ROUTE_COLOURS[i % len(ROUTE_COLOURS)]
        r["name"] = _full_name(*(r[f] for f in _NAME_FIELDS))
        r["status_label"] = ROUTE_STATUS_LABELS.get(r["status"], r["status"])
        r["projected_finish"] = r["planned_end"] or r["last_arrival"]
        r["travelled_km"] = r["travelled_distance_m"] / 1000
        r["url"] = url_template.replace("999999999", str(r["pk"]))
        position = positions.get(r["driver_id"])
        r["live"] = _position_json(position, r["pk"], now) if position else None
    idle_positions = sorted(
        (_position_json(p, None, now) for p in positions.values() if p["driver_id"] not in on_route),
        key=lambda entry: entry["name"],
    )
    map_data = {
        "map_version": _map_version(rows),
        "drivers": [r["live"] for r in rows if r["live"]] + idle_positions,
        "states": {
            str(r["pk"]): {"done": r["done_seqs"] or "", "failed": r["failed_seqs"] or ""}
            for r in rows
            if r["done_seqs"] or r["failed_seqs"]
        },
    }
    return {"rows": rows, "idle_positions": idle_positions, "map": map_data}


@dataclass
class DashboardMap:
    """The map's geometry for /live/map.json: `version` is the partial's map_version, `etag`
    adds the depots. `data()` reads the stops (one more query)."""

    organization: Organization
    day: date
    version: str
    etag: str
    routes: list[dict[str, Any]]
    depots: list[dict[str, Any]]

    def data(self) -> dict[str, Any]:
        stops: dict[int, list[dict[str, Any]]] = {}
        for route_id, pk, sequence, lat, lng, address in (
            Stop.objects.filter(
                organization=self.organization,
                route__organization=self.organization,
                route__date=self.day,
                order__lat__isnull=False,
                order__lng__isnull=False,
            )
            .order_by("route_id", "sequence")
            .values_list("route_id", "pk", "sequence", "order__lat", "order__lng", "order__address")
        ):
            stops.setdefault(route_id, []).append(
                {"id": pk, "n": sequence, "lat": lat, "lng": lng, "label": address}
            )
        return {
            "map_version": self.version,
            "depots": self.depots,
            "routes": [{**route, "stops": stops.get(route["id"], [])} for route in self.routes],
        }


def dashboard_map(*, organization: Organization, day: date, now: datetime) -> DashboardMap:
    """Today's route lines, stops and the active depots for the live map (two queries; one more
    in DashboardMap.data())."""
    rows = _route_rows(organization=organization, day=day, now=now)
    depots = list(
        Depot.objects.filter(organization=organization, is_active=True)
        .order_by("name", "pk")
        .values("id", "name", "lat", "lng")
    )
    routes = [
        {
            "id": r["pk"],
            "driver": r["driver_id"],
            "name": _full_name(*(r[f] for f in _NAME_FIELDS)),
            "colour": ROUTE_COLOURS[i % len(ROUTE_COLOURS)],
            "depot": [r["depot__lat"], r["depot__lng"]],
        }
        for i, r in enumerate(rows)
    ]
    version = _map_version(rows)
    etag = hashlib.sha256(f"{organization.pk}-{day}-{version}-{depots!r}".encode()).hexdigest()[:32]
    return DashboardMap(organization, day, version, etag, routes, depots)


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


@functools.cache
def _customer_fingerprint_sql() -> tuple[str, tuple[str, ...]]:
    """One statement for everything customer_view reads, found by the token's hash, and the
    names of its columns. Plain SQL that PostgreSQL and SQLite both run, built once per process
    from the models' names: on the tracking poll's 304 path, building the page's ORM queries
    cost more than running them. The order's latest stop is the one customer_view shows."""
    from django.contrib.auth import get_user_model

    quote = connection.ops.quote_name
    models = {
        "l": TrackingLink, "o": Order, "g": Organization, "t": TrackingSettings, "s": Stop,
        "r": Route, "d": Driver, "u": get_user_model(), "v": Vehicle, "p": DriverPosition,
        "f": ProofOfDelivery, "e": StopEvent, "h": ProofPhoto, "b": Stop, "x": Stop,
    }  # fmt: skip

    def table(alias: str) -> str:
        return f"{quote(models[alias]._meta.db_table)} {alias}"

    def col(ref: str) -> str:
        alias, name = ref.split(".")
        return f"{alias}.{quote(models[alias]._meta.get_field(name).column)}"

    open_statuses = ", ".join(f"'{status}'" for status in OPEN_FOR_CUSTOMER)
    columns = {
        name.replace(".", "_"): col(name)
        for name in (
            "l.id", "l.expires_at", "l.last_seen_at",
            "o.id", "o.external_ref", "o.kind", "o.status", "o.recipient_name", "o.address",
            "o.lat", "o.lng", "o.window_start", "o.window_end", "o.service_date",
            "o.customer_instructions", "g.name", "g.timezone",
            "t.contact_text", "t.show_driver_within_stops",
            "s.id", "s.status", "s.sequence", "s.eta", "s.planned_arrival", "s.eta_updated_at",
            "r.status", "r.date", "u.first_name", "v.name", "v.registration",
            "p.lat", "p.lng", "p.recorded_at", "f.id",
        )
    } | {
        "stops_before": f"(SELECT COUNT(*) FROM {table('b')} WHERE {col('b.route')} = {col('r.id')}"
        f" AND {col('b.sequence')} < {col('s.sequence')} AND {col('b.status')} IN ({open_statuses}))",
        # StopEvents are append-only: their count and newest pk name the timeline.
        "events": f"(SELECT COUNT(*) FROM {table('e')} WHERE {col('e.order')} = {col('o.id')})",
        "last_event": f"(SELECT MAX({col('e.id')}) FROM {table('e')} WHERE {col('e.order')} = {col('o.id')})",
        "photos": f"(SELECT COUNT(*) FROM {table('h')} WHERE {col('h.proof')} = {col('f.id')})",
    }  # fmt: skip
    latest_stop = f"(SELECT MAX({col('x.id')}) FROM {table('x')} WHERE {col('x.order')} = {col('o.id')})"
    sql = (
        f"SELECT {', '.join(columns.values())} FROM {table('l')}"
        f" JOIN {table('o')} ON {col('o.id')} = {col('l.order')}"
        f" JOIN {table('g')} ON {col('g.id')} = {col('o.organization')}"
        f" LEFT JOIN {table('t')} ON {col('t.organization')} = {col('o.organization')}"
        f" LEFT JOIN {table('s')} ON {col('s.id')} = {latest_stop}"
        f" LEFT JOIN {table('r')} ON {col('r.id')} = {col('s.route')}"
        f" LEFT JOIN {table('d')} ON {col('d.id')} = {col('r.driver')}"
        f" LEFT JOIN {table('u')} ON {col('u.id')} = {col('d.user')}"
        f" LEFT JOIN {table('v')} ON {col('v.id')} = {col('r.vehicle')}"
        f" LEFT JOIN {table('p')} ON {col('p.driver')} = {col('r.driver')}"
        f" LEFT JOIN {table('f')} ON {col('f.stop')} = {col('s.id')}"
        f" WHERE {col('l.token_hash')} = %s AND {col('l.revoked_at')} IS NULL"
    )
    return sql, tuple(columns)


@functools.cache
def _timeline_sql() -> str:
    """The order's events the customer sees, oldest first: plain SQL for the same reason as
    the fingerprint's (the ORM's compiling was most of a changed poll's cost)."""
    quote = connection.ops.quote_name

    def col(name: str) -> str:
        return quote(StopEvent._meta.get_field(name).column)

    kinds = ", ".join(f"'{kind}'" for kind in (*CUSTOMER_EVENTS, StopEvent.Kind.STATUS))
    return (
        f"SELECT {col('kind')}, {col('to_status')}, {col('at')}, {col('reason')}"
        f" FROM {quote(StopEvent._meta.db_table)}"
        f" WHERE {col('order')} = %s AND {col('kind')} IN ({kinds})"
        f" ORDER BY {col('at')}, {col('id')}"
    )


def _aware(value: Any) -> datetime | None:
    """A datetime from a raw cursor: SQLite hands back text, PostgreSQL an aware datetime."""
    moment = value if value is None or isinstance(value, datetime) else parse_datetime(str(value))
    if moment is None or timezone.is_aware(moment):
        return moment
    return timezone.make_aware(moment, UTC)


DEFAULT_SHOW_DRIVER_WITHIN = TrackingSettings._meta.get_field("show_driver_within_stops").default


@dataclass(frozen=True)
class CustomerFingerprint:
    link_id: int
    expires_at: datetime | None
    last_seen_at: datetime | None
    etag: str
    row: dict[str, Any] = field(repr=False, compare=False)


def _customer_row(token_hash: str) -> dict[str, Any] | None:
    """The fingerprint statement's row as {column name: value}, or None (unknown, revoked)."""
    sql, names = _customer_fingerprint_sql()
    # Planning this twelve-table statement took 2 ms, running it 0.6.
    row = _fetch(sql, [token_hash])
    return None if row is None else dict(zip(names, row, strict=True))


def _shows_position(row: dict[str, Any]) -> bool:
    """The driver is on the customer's map only on the way here and close: never while
    earlier customers are far ahead, never once this stop is done."""
    within = row["t_show_driver_within_stops"]
    return (
        row["s_status"] in OPEN_FOR_CUSTOMER
        and row["r_status"] == Route.Status.IN_PROGRESS
        and row["stops_before"] <= (DEFAULT_SHOW_DRIVER_WITHIN if within is None else within)
    )


def customer_fingerprint(*, token_hash: str, now: datetime) -> CustomerFingerprint | None:
    """The ETag of what customer_view shows for this link now, in one query; None for a token
    that is unknown or revoked. The row comes along, so a changed page costs no second read.

    customer_view builds its data from this same row (plus the timeline and the proof, named
    here by their count and newest id), so the ETag moves whenever the data can. To the row's
    values it adds what the clock alone changes: the local day (which decides whether the route
    is today's). Not the ETA's "updated N min ago": the page shows the time of the update and
    the browser counts the minutes (static/js/track.js), so 2,000 open pages are not all sent
    again on every minute. The driver's position counts only while the page shows it, so a van
    working earlier customers' stops leaves this page's ETag alone.
    """
    row = _customer_row(token_hash)
    if row is None:
        return None
    values = {name: value for name, value in row.items() if name != "l_last_seen_at"}
    if not _shows_position(row):
        values["p_lat"] = values["p_lng"] = values["p_recorded_at"] = None
    values["clock"] = local_today(zoneinfo.ZoneInfo(row["g_timezone"]), now).isoformat()
    digest = hashlib.sha256(repr(sorted(values.items())).encode()).hexdigest()[:32]
    return CustomerFingerprint(
        link_id=row["l_id"],
        expires_at=_aware(row["l_expires_at"]),
        last_seen_at=_aware(row["l_last_seen_at"]),
        etag=f'"{digest}"',
        row=row,
    )


def _date(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def customer_view(
    *,
    link: TrackingLink | None,
    now: datetime,
    options: TrackingSettings | None = None,
    row: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the tracking page and GET /api/v1/track/<token>/ show, as plain data.

    Built from customer_fingerprint's row (read here unless given, e.g. by the poll that just
    compared it) plus one query for the timeline and two for the proof once delivered. Times
    are ISO 8601 in the organisation's zone. `options` is accepted for callers that have the
    settings at hand; the row carries the ones the page needs.
    """
    row = row if row is not None else _customer_row(link.token_hash)
    if row is None:  # revoked between the caller's lookup and this read
        raise Http404("This tracking link does not exist.")
    tz = zoneinfo.ZoneInfo(row["g_timezone"])

    def local(value: Any) -> str | None:
        moment = _aware(value)
        return moment.astimezone(tz).isoformat() if moment else None

    timeline = []
    events = _fetch(_timeline_sql(), [row["o_id"]], many=True)
    for kind, to_status, at, reason in events:
        label = CUSTOMER_EVENTS.get(kind) or CUSTOMER_STATUSES.get(to_status)
        if label:
            timeline.append({"label": label, "at": local(at), "reason": reason or ""})

    status = row["o_status"]
    data: dict[str, Any] = {
        "organization": {"name": row["g_name"], "contact": row["t_contact_text"] or ""},
        "order": {
            "reference": row["o_external_ref"] or str(row["o_id"]),
            "kind": row["o_kind"],
            "status": status,
            "status_label": Order.Status(status).label,
            "recipient_name": row["o_recipient_name"],
            "address": row["o_address"],
            "lat": row["o_lat"],
            "lng": row["o_lng"],
            "window_start": local(row["o_window_start"]),
            "window_end": local(row["o_window_end"]),
            "service_date": _date(row["o_service_date"]).isoformat(),
            "customer_instructions": row["o_customer_instructions"],
        },
        "timeline": timeline,
        "eta": None,
        "stops_before": None,
        "driver": None,
        "proof": None,
        "final": status in ("delivered", "picked_up", "cancelled"),
    }
    live = (
        row["s_id"] is not None
        and row["s_status"] in OPEN_FOR_CUSTOMER
        and row["r_status"] in (Route.Status.PUBLISHED, Route.Status.IN_PROGRESS)
        and _date(row["r_date"]) == local_today(tz, now)
    )
    if live:
        started = row["r_status"] == Route.Status.IN_PROGRESS
        before = row["stops_before"] if started else None
        eta = _aware(row["s_eta"])
        estimate = eta or _aware(row["s_planned_arrival"])
        if estimate is not None:
            start, end = _eta_window(estimate, before or 0)
            updated = _aware(row["s_eta_updated_at"]) if eta else None
            data["eta"] = {
                "start": local(start),
                "end": local(end),
                "live": eta is not None,
                "updated_at": local(updated),
                "updated_minutes_ago": int((now - updated).total_seconds() // 60) if updated else None,
            }
        data["stops_before"] = before
        data["driver"] = {
            "first_name": row["u_first_name"] or "Your driver",
            "vehicle": row["v_name"] or "",
            "registration": row["v_registration"] or "",
            "position": None,
        }
        if _shows_position(row) and row["p_lat"] is not None:
            data["driver"]["position"] = {
                "lat": round(row["p_lat"], 5),
                "lng": round(row["p_lng"], 5),
                "recorded_at": local(row["p_recorded_at"]),
            }
    if row["s_status"] == Stop.Status.COMPLETED and row["f_id"] is not None:
        proof = ProofOfDelivery.objects.filter(pk=row["f_id"]).prefetch_related("photos").first()
        if proof is not None:
            data["proof"] = {
                "public_id": str(proof.public_id),
                "recipient_name": proof.recipient_name,
                "captured_at": local(proof.captured_at),
                "photos": [str(photo.public_id) for photo in proof.photos.all()],
                "signature": bool(proof.signature),
            }
    return data
