"""Reads for the reports page (/reports/) and the cost figures of plans and routes.

Every figure is aggregated in the database, none by looping over stops in Python, so the page
costs the same number of queries for ten routes or ten thousand. The page shares its scans:
one GROUP BY (day, driver) over the period's stops feeds the headline, the driver table and the
daily series (summed in Python from at most days × drivers aggregated rows, never stops), one
GROUP BY driver over routes feeds the route figures of the headline and the driver table, one
GROUP BY (hour, weekday) both delivery-time charts, one GROUP BY (day, reason) both failure
views. Each report_* function also runs alone (CSV exports, the daily e-mail).
Definitions are in docs/reports.md; in short:

- the period is a range of local service days: Route.date for stops and routes,
  Order.service_date for orders (both are the organisation's own calendar days, TZ-4);
- draft routes are proposals and count nowhere;
- an attempt is a stop that ended completed or failed; a skipped stop is not an attempt.
"""

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from django.db.models import (
    Case,
    CharField,
    Count,
    Exists,
    F,
    FloatField,
    Func,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Cast, Coalesce, ExtractHour, ExtractIsoWeekDay

from dispatch.models import Depot, Driver, Order, Organization, Route, Stop


class SecondsBetween(Func):
    """`end - start` in seconds, as a float, on PostgreSQL and SQLite (NULL if either is)."""

    output_field = FloatField()
    arity = 2
    arg_joiner = " - "
    # date_part() is float8 already; EXTRACT() is numeric since PostgreSQL 14, and converting
    # every stop's difference to numeric and back is a good part of the stop grid's time.
    template = "date_part('epoch', %(expressions)s)"

    def __init__(self, end, start, **extra: Any) -> None:
        super().__init__(end, start, **extra)

    def as_sqlite(self, compiler, connection, **extra: Any):
        # SQLite keeps datetimes as ISO text; julianday() reads it as fractional days, exact to
        # some tens of microseconds: rounded to the millisecond, whole seconds stay whole.
        return self.as_sql(
            compiler, connection, template="ROUND((julianday(%(expressions)s)) * 86400.0, 3)",
            arg_joiner=") - julianday(", **extra,
        )  # fmt: skip


ATTEMPT_STATUSES = (Stop.Status.COMPLETED, Stop.Status.FAILED)
DONE = Q(status=Stop.Status.COMPLETED)
FAILED = Q(status=Stop.Status.FAILED)
ATTEMPT = Q(status__in=ATTEMPT_STATUSES)
# On time: the driver arrived inside the window, bounds included. Only attempts with an arrival
# time and a window end are judged; an order without a window is never late. The window is the
# one the stop recorded when the visit ended (dispatch.services.stop_transition), so the stop
# grid never joins the orders, and moving a window later does not rewrite past visits.
WINDOWED = ATTEMPT & Q(arrived_at__isnull=False, window_end__isnull=False)
LATE = WINDOWED & Q(arrived_at__gt=F("window_end"))
EARLY = WINDOWED & Q(window_start__isnull=False, arrived_at__lt=F("window_start"))
ON_TIME = (
    WINDOWED
    & Q(arrived_at__lte=F("window_end"))
    & (Q(window_start__isnull=True) | Q(arrived_at__gte=F("window_start")))
)
SERVED = ATTEMPT & Q(arrived_at__isnull=False, departed_at__isnull=False, departed_at__gte=F("arrived_at"))
ROUTE_DONE = Q(route__status=Route.Status.COMPLETED, route__started_at__isnull=False)

ROUTE_ROWS_SHOWN = 100
MAX_DAYS = 366
NO_REASON = "(no reason given)"


@dataclass(frozen=True)
class ReportFilters:
    organization: Organization
    start: date
    end: date
    depot: Depot | None = None
    driver: Driver | None = None

    @property
    def days(self) -> list[date]:
        return [self.start + timedelta(days=n) for n in range((self.end - self.start).days + 1)]


def rate(part: int | None, whole: int | None) -> float | None:
    """part / whole as a percentage, or None when there is nothing to divide by."""
    return round(100 * (part or 0) / whole, 1) if whole else None


def _per(amount: float | None, count: int | None) -> float | None:
    return round(amount / count, 2) if amount is not None and count else None


# --- Base querysets --------------------------------------------------------------------------


def _routes(f: ReportFilters) -> QuerySet[Route]:
    routes = Route.objects.filter(organization=f.organization, date__gte=f.start, date__lte=f.end).exclude(
        status=Route.Status.DRAFT
    )
    if f.depot:
        routes = routes.filter(depot=f.depot)
    if f.driver:
        routes = routes.filter(driver=f.driver)
    return routes


def _stops(f: ReportFilters) -> QuerySet[Stop]:
    stops = Stop.objects.filter(
        organization=f.organization, route__date__gte=f.start, route__date__lte=f.end
    ).exclude(route__status=Route.Status.DRAFT)
    if f.depot:
        stops = stops.filter(route__depot=f.depot)
    if f.driver:
        stops = stops.filter(route__driver=f.driver)
    return stops


FIRST = ATTEMPT & Q(first_attempt=True)  # recorded by dispatch.services.stop_transition


def _stop_measures() -> dict[str, Any]:
    """The per-stop figures, as additive aggregates (counts and sums; averages are divided out
    in _derive): the summary, the driver table and the daily series are sums of the same rows,
    so a driver's row and the total always agree."""
    return {
        "stops": Count("pk"),
        "attempts": Count("pk", filter=ATTEMPT),
        "delivered": Count("pk", filter=DONE),
        "failed": Count("pk", filter=FAILED),
        "windowed": Count("pk", filter=WINDOWED),
        "on_time": Count("pk", filter=ON_TIME),
        "early": Count("pk", filter=EARLY),
        "late": Count("pk", filter=LATE),
        "late_delay_sum": Sum(SecondsBetween("arrived_at", "window_end"), filter=LATE),
        "served": Count("pk", filter=SERVED),
        "service_sum": Sum(SecondsBetween("departed_at", "arrived_at"), filter=SERVED),
        # Recorded on the successful stop by dispatch.services.order_rating_record.
        "rating_sum": Sum("rating", filter=DONE & Q(rating__isnull=False)),
        "rating_count": Count("pk", filter=DONE & Q(rating__isnull=False)),
        "proof_recorded": Count("pk", filter=DONE & Q(proof_recorded_at__isnull=False)),
        "proof_complete": Count("pk", filter=DONE & Q(proof_complete=True)),
        "first_attempts": Count("pk", filter=FIRST),
        "first_success": Count("pk", filter=FIRST & DONE),
        "attempts_done_routes": Count("pk", filter=ATTEMPT & ROUTE_DONE),
        "stops_done_routes": Count("pk", filter=ROUTE_DONE),
        "delivered_done_routes": Count("pk", filter=DONE & ROUTE_DONE),
    }


def _add(rows: list[dict[str, Any]], measures: dict[str, Any]) -> dict[str, Any]:
    """Aggregated rows summed key by key, as the same aggregate over all their stops or routes
    would be: a count of nothing is 0, a Sum of nothing (or of NULLs only) is None."""
    out = {}
    for key, aggregate in measures.items():
        values = [r[key] for r in rows if r[key] is not None]
        out[key] = sum(values) if values else (0 if isinstance(aggregate, Count) else None)
    return out


def report_stop_grid(f: ReportFilters) -> list[dict[str, Any]]:
    """The stop measures per (service day, driver) of the period (one query): what
    report_summary, report_drivers and report_daily sum up. Pass it to them as `grid=` to
    share one scan of the stops."""
    return list(_stops(f).values("route__date", "route__driver").annotate(**_stop_measures()).order_by())


def _planned_seconds():
    return Coalesce(
        F("planned_duration_s") * 1.0,
        SecondsBetween("planned_end", "planned_start"),
        output_field=FloatField(),
    )


COMPLETED_ROUTE = Q(status=Route.Status.COMPLETED, started_at__isnull=False, completed_at__isnull=False)


def _route_measures() -> dict[str, Any]:
    return {
        "routes": Count("pk"),
        "completed_routes": Count("pk", filter=COMPLETED_ROUTE),
        "planned_m": Sum("planned_distance_m"),
        "planned_s": Sum(_planned_seconds()),
        "travelled_m": Sum("travelled_distance_m", filter=COMPLETED_ROUTE),
        "actual_s": Sum(SecondsBetween("completed_at", "started_at"), filter=COMPLETED_ROUTE),
        # Cost compares like with like: planned and actual of the completed routes only.
        "done_planned_m": Sum("planned_distance_m", filter=COMPLETED_ROUTE),
        "done_planned_s": Sum(_planned_seconds(), filter=COMPLETED_ROUTE),
    }


ROUTE_NAME_FIELDS = (
    "driver",
    "driver__user__first_name",
    "driver__user__last_name",
    "driver__user__username",
)


def report_route_grid(f: ReportFilters) -> list[dict[str, Any]]:
    """The route measures per driver of the period (one query; at most one row per driver):
    the driver table's route figures, and summed, the headline's. Pass it as `routes=`."""
    return list(_routes(f).values(*ROUTE_NAME_FIELDS).annotate(**_route_measures()).order_by())


def _cost(organization: Organization, metres: float | None, seconds: float | None) -> float | None:
    if metres is None and seconds is None:
        return None
    km, hours = (metres or 0) / 1000, (seconds or 0) / 3600
    return round(km * float(organization.cost_per_km) + hours * float(organization.cost_per_driver_hour), 2)


def _derive(row: dict[str, Any], organization: Organization) -> dict[str, Any]:
    """Rates and costs from one row of counts and sums (a summary, a driver or a day)."""
    out = dict(row)
    attempts = row.get("attempts")
    if "attempts" in row:
        out["success_rate"] = rate(row["delivered"], attempts)
        out["on_time_rate"] = rate(row["on_time"], row["windowed"])
        out["first_attempt_rate"] = rate(row["first_success"], row["first_attempts"])
        out["proof_rate"] = rate(row["proof_complete"], row["delivered"])
        out["late_delay_s"] = row["late_delay_sum"] / row["late"] if row["late"] else None
        out["service_s"] = row["service_sum"] / row["served"] if row["served"] else None
        out["rating_avg"] = round(row["rating_sum"] / row["rating_count"], 2) if row["rating_count"] else None
        out["late_delay_min"] = (
            round(out["late_delay_s"] / 60, 1) if out["late_delay_s"] is not None else None
        )
        out["service_min"] = round(out["service_s"] / 60, 1) if out["service_s"] is not None else None
    if "actual_s" in row:
        out["driver_hours"] = round(row["actual_s"] / 3600, 2) if row["actual_s"] else None
        out["planned_km"] = round(row["planned_m"] / 1000, 1) if row["planned_m"] is not None else None
        out["travelled_km"] = round(row["travelled_m"] / 1000, 1) if row["travelled_m"] is not None else None
        out["planned_hours"] = round(row["planned_s"] / 3600, 2) if row["planned_s"] is not None else None
        out["planned_cost"] = _cost(organization, row["done_planned_m"], row["done_planned_s"])
        out["actual_cost"] = _cost(organization, row["travelled_m"], row["actual_s"])
    if "actual_s" in row and "attempts" in row:
        hours = row["actual_s"] / 3600 if row["actual_s"] else None
        out["stops_per_hour"] = round(row["attempts_done_routes"] / hours, 2) if hours else None
        out["planned_cost_per_stop"] = _per(out["planned_cost"], row["stops_done_routes"])
        out["actual_cost_per_delivery"] = _per(out["actual_cost"], row["delivered_done_routes"])
    return out


# --- The page's tables and charts ------------------------------------------------------------


def report_orders(f: ReportFilters) -> dict[str, int]:
    """Orders of the period by outcome (one query). With a driver filter: orders with a stop
    on one of the driver's routes."""
    orders = Order.objects.filter(
        organization=f.organization, service_date__gte=f.start, service_date__lte=f.end
    )
    if f.depot:
        orders = orders.filter(depot=f.depot)
    if f.driver:
        orders = orders.filter(
            Exists(
                Stop.objects.filter(order=OuterRef("pk"), route__driver=f.driver).exclude(
                    route__status="draft"
                )
            )
        )
    S = Order.Status
    return orders.aggregate(
        total=Count("pk"),
        delivered=Count("pk", filter=Q(status__in=[S.DELIVERED, S.PICKED_UP])),
        failed=Count("pk", filter=Q(status=S.FAILED)),
        open=Count("pk", filter=Q(status__in=[S.NEW, S.PLANNED, S.ASSIGNED, S.OUT_FOR_DELIVERY])),
        cancelled=Count("pk", filter=Q(status=S.CANCELLED)),
    )


def report_summary(
    f: ReportFilters, *, grid: list[dict] | None = None, routes: list[dict] | None = None
) -> dict[str, Any]:
    """The headline figures (two queries, none given report_stop_grid / report_route_grid)."""
    grid = report_stop_grid(f) if grid is None else grid
    routes = report_route_grid(f) if routes is None else routes
    row = _add(grid, _stop_measures()) | _add(routes, _route_measures())
    return _derive(row, f.organization) | {"currency": f.organization.currency}


def report_failure_grid(f: ReportFilters) -> list[dict[str, Any]]:
    """Failed attempts per (service day, reason) (one query): what report_failures and
    report_failure_days add up. Pass it as `rows=` to share the scan."""
    return list(
        _stops(f)
        .filter(FAILED)
        .values("route__date", "failure_reason")
        .annotate(n=Count("pk"))
        .order_by("route__date", "failure_reason")
    )


def _failure_totals(rows: list[dict[str, Any]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for r in rows:  # aggregated (day, reason) pairs, not stops
        reason = r["failure_reason"] or NO_REASON
        totals[reason] = totals.get(reason, 0) + r["n"]
    return totals


def report_failures(f: ReportFilters, *, rows: list[dict] | None = None) -> list[dict[str, Any]]:
    """Failed attempts by reason, most frequent first (one query, none given `rows`)."""
    totals = _failure_totals(report_failure_grid(f) if rows is None else rows)
    ranked = sorted(totals, key=lambda reason: (-totals[reason], reason))
    return [{"reason": reason, "n": totals[reason]} for reason in ranked]


DRIVER_SORTS = {
    "name": "Driver",
    "routes": "Routes",
    "attempts": "Attempts",
    "delivered": "Delivered",
    "failed": "Failed",
    "success_rate": "Success %",
    "on_time_rate": "On time %",
    "first_attempt_rate": "First attempt %",
    "late_delay_min": "Avg delay (min)",
    "stops_per_hour": "Stops / hour",
    "service_min": "Service (min)",
    "rating_avg": "Rating",
    "proof_rate": "Proof complete %",
    "planned_km": "Planned km",
    "travelled_km": "Driven km",
    "actual_cost_per_delivery": "Cost / delivery",
}


def report_drivers(
    f: ReportFilters,
    *,
    sort: str = "name",
    grid: list[dict] | None = None,
    routes: list[dict] | None = None,
) -> list[dict[str, Any]]:
    """One row per driver with any route in the period (two queries, none given
    report_stop_grid / report_route_grid). `sort` is a DRIVER_SORTS key, "-" in front for
    descending; missing figures last."""
    grid = report_stop_grid(f) if grid is None else grid
    routes = report_route_grid(f) if routes is None else routes
    measures = _stop_measures()
    by_driver: dict[int, list[dict]] = {}
    for g in grid:  # aggregated (day, driver) rows, not stops
        by_driver.setdefault(g["route__driver"], []).append(g)
    rows = []
    for r in routes:  # one per driver
        name = f"{r['driver__user__first_name']} {r['driver__user__last_name']}".strip()
        row = _derive(_add(by_driver.get(r["driver"], []), measures) | r, f.organization)
        rows.append(row | {"driver_id": r["driver"], "name": name or r["driver__user__username"]})
    key = sort.removeprefix("-")
    if key not in DRIVER_SORTS:
        key = "name"
    present = [r for r in rows if r.get(key) is not None]
    missing = [r for r in rows if r.get(key) is None]
    present.sort(
        key=lambda r: r[key].lower() if isinstance(r[key], str) else r[key], reverse=sort.startswith("-")
    )
    return present + sorted(missing, key=lambda r: r["name"].lower())


def _route_stops(**filters: Any) -> Coalesce:
    stops = Stop.objects.filter(route=OuterRef("pk"), **filters).order_by().values("route")
    return Coalesce(Subquery(stops.annotate(n=Count("pk")).values("n")), 0)


def _route_stop_counts(limit: int | None) -> dict[str, Any]:
    if limit:
        # Per-route subqueries for the page: PostgreSQL evaluates them after ORDER BY … LIMIT,
        # for the 100 routes shown, on the index of Stop.route.
        return {
            "stop_count": _route_stops(),
            "delivered": _route_stops(status=Stop.Status.COMPLETED),
            "failed": _route_stops(status=Stop.Status.FAILED),
        }
    # Every route (the CSV): one join and GROUP BY route, one hash of the period's stops, instead
    # of three index lookups per route (5,000 routes: 15,000 subquery runs).
    return {
        "stop_count": Count("stops"),
        "delivered": Count("stops", filter=Q(stops__status=Stop.Status.COMPLETED)),
        "failed": Count("stops", filter=Q(stops__status=Stop.Status.FAILED)),
    }


def report_routes(f: ReportFilters, *, limit: int | None = None) -> list[dict[str, Any]]:
    """Planned vs actual per route, newest day first (one query)."""
    org = f.organization
    per_km, per_hour = float(org.cost_per_km), float(org.cost_per_driver_hour)
    planned_s = _planned_seconds()
    actual_s = SecondsBetween("completed_at", "started_at")
    rows = (
        _routes(f)
        .annotate(
            **_route_stop_counts(limit),
            planned_s=planned_s,
            actual_s=actual_s,
            planned_cost=Coalesce(F("planned_distance_m"), 0) / 1000.0 * Value(per_km)
            + Coalesce(planned_s, 0.0) / 3600.0 * Value(per_hour),
            actual_cost=F("travelled_distance_m") / 1000.0 * Value(per_km)
            + actual_s / 3600.0 * Value(per_hour),
            status_label=Case(
                *(When(status=value, then=Value(str(label))) for value, label in Route.Status.choices),
                default=F("status"),
                output_field=CharField(),
            ),
        )
        .values(
            "pk", "date", "status", "depot__name", "driver__user__first_name", "driver__user__last_name",
            "driver__user__username", "planned_distance_m", "travelled_distance_m", "planned_s", "actual_s",
            "stop_count", "delivered", "failed", "planned_cost", "actual_cost", "status_label",
        )
        .order_by("-date", "driver__user__first_name", "driver__user__username", "pk")
    )  # fmt: skip
    return list(rows[:limit] if limit else rows)


def report_daily(f: ReportFilters, *, grid: list[dict] | None = None) -> list[dict[str, Any]]:
    """One row per local day of the period, zeros on days without routes (one query, none
    given report_stop_grid)."""
    grid = report_stop_grid(f) if grid is None else grid
    measures = {k: v for k, v in _stop_measures().items() if k in DAILY_MEASURES}
    by_day: dict[date, list[dict]] = {}
    for g in grid:  # aggregated (day, driver) rows, not stops
        by_day.setdefault(g["route__date"], []).append(g)
    return [
        {"day": day, **(row := _add(by_day.get(day, []), measures)), **_day_rates(row)}
        for day in f.days  # the calendar, not the rows: days without data show as zero
    ]


DAILY_MEASURES = ("attempts", "delivered", "failed", "windowed", "on_time", "first_attempts", "first_success")


def _day_rates(row: dict) -> dict:
    return {
        "on_time_rate": rate(row["on_time"], row["windowed"]),
        "first_attempt_rate": rate(row["first_success"], row["first_attempts"]),
    }


def report_arrival_grid(f: ReportFilters) -> list[dict[str, int]]:
    """Successful deliveries per (local hour, local ISO weekday) of arrival (one query, at most
    168 rows): what report_hours and report_weekdays add up. Pass it as `rows=`."""
    tz = f.organization.tzinfo
    return list(
        _stops(f)
        .filter(DONE, arrived_at__isnull=False)
        # As integers: PostgreSQL's EXTRACT is numeric, and with numeric keys the planner (which
        # guesses as many groups as distinct arrival times) sorts every delivery to group them,
        # spilling to disk; with int keys its guessed hash table fits in memory and it hashes.
        .annotate(
            hour=Cast(ExtractHour("arrived_at", tzinfo=tz), IntegerField()),
            weekday=Cast(ExtractIsoWeekDay("arrived_at", tzinfo=tz), IntegerField()),
        )
        .values("hour", "weekday")
        .annotate(n=Count("pk"))
        .order_by()
    )


def report_hours(f: ReportFilters, *, rows: list[dict] | None = None) -> list[dict[str, int]]:
    """Successful deliveries by local hour of arrival, 0–23 (one query, none given `rows`)."""
    counts = dict.fromkeys(range(24), 0)
    for r in report_arrival_grid(f) if rows is None else rows:
        counts[r["hour"]] += r["n"]
    return [{"hour": h, "n": n} for h, n in counts.items()]


WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


def report_weekdays(f: ReportFilters, *, rows: list[dict] | None = None) -> list[dict[str, Any]]:
    """Successful deliveries by local weekday of arrival, Monday first (one query, none given
    `rows`)."""
    counts = dict.fromkeys(range(1, 8), 0)
    for r in report_arrival_grid(f) if rows is None else rows:
        counts[r["weekday"]] += r["n"]
    return [{"weekday": WEEKDAYS[d - 1], "n": n} for d, n in counts.items()]


TOP_REASONS = 5
OTHER = "other reasons"


def report_failure_days(f: ReportFilters, *, rows: list[dict] | None = None) -> dict[str, Any]:
    """Failed attempts per local day and reason (one query, none given report_failure_grid):
    {"reasons": [top reasons, then "other reasons" if any], "days": [{"day", "counts": [n per
    reason]}]}."""
    rows = report_failure_grid(f) if rows is None else rows
    totals = _failure_totals(rows)
    ranked = sorted(totals, key=lambda reason: (-totals[reason], reason))
    reasons = ranked[:TOP_REASONS] + ([OTHER] if len(ranked) > TOP_REASONS else [])
    index = {reason: min(i, TOP_REASONS) for i, reason in enumerate(ranked)}
    grid = {day: [0] * len(reasons) for day in f.days}
    for r in rows:
        grid[r["route__date"]][index[r["failure_reason"] or NO_REASON]] += r["n"]
    return {"reasons": reasons, "days": [{"day": day, "counts": grid[day]} for day in f.days]}


# --- Cost of a plan or a route ---------------------------------------------------------------


def routes_cost(*, organization: Organization, routes: QuerySet[Route]) -> dict[str, Any]:
    """Planned and actual cost of `routes` and per stop / delivery (two queries).

    Planned: planned km × cost per km + planned hours × cost per driver-hour, over the stops
    planned on the routes. Actual: driven km and hours of the completed routes, over their
    successful deliveries; None until a route is completed.
    """
    route_ids = routes.values("pk")
    totals = Route.objects.filter(pk__in=route_ids).aggregate(
        planned_m=Sum("planned_distance_m"),
        planned_s=Sum(_planned_seconds()),
        travelled_m=Sum("travelled_distance_m", filter=COMPLETED_ROUTE),
        actual_s=Sum(SecondsBetween("completed_at", "started_at"), filter=COMPLETED_ROUTE),
    )
    counts = Stop.objects.filter(route__in=route_ids).aggregate(
        stops=Count("pk"), delivered_done=Count("pk", filter=DONE & ROUTE_DONE)
    )
    planned = _cost(organization, totals["planned_m"], totals["planned_s"])
    actual = _cost(organization, totals["travelled_m"], totals["actual_s"]) if totals["actual_s"] else None
    return {
        "currency": organization.currency,
        "cost_per_km": organization.cost_per_km,
        "cost_per_driver_hour": organization.cost_per_driver_hour,
        "planned": planned,
        "planned_per_stop": _per(planned, counts["stops"]),
        "stops": counts["stops"],
        "actual": actual,
        "actual_per_delivery": _per(actual, counts["delivered_done"]),
        "delivered": counts["delivered_done"],
    }
