"""Planning services: a day's orders and shifts → an optimisation run → draft routes → published.

The solver itself lives in dispatch.planner (plain data, no Django). This module turns rows into
a `Problem`, runs it as a django-q2 job with live progress, turns the `Solution` back into draft
routes, and applies a dispatcher's manual changes (recomputing times and broken rules at once).
"""

import io
import json
import logging
import time as clock
from dataclasses import asdict
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Max, Q
from django.utils import timezone
from django_q.tasks import async_task

from dispatch import services
from dispatch.models import Depot, Driver, Order, Organization, Plan, Route, Shift, Stop
from dispatch.planner.problem import Break, Job, Problem, Solution, Vehicle

logger = logging.getLogger(__name__)

MAX_BUDGET_SECONDS = 120
PLANNABLE_STATUSES = (Order.Status.NEW, Order.Status.PLANNED, Order.Status.FAILED)
END_OF_DAY = 24 * 3600 + 6 * 3600  # windows and shifts may run a little past midnight


# --- Time on the plan's day -------------------------------------------------------------------


def _midnight(organization: Organization, day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=organization.tzinfo)


def _seconds(midnight: datetime, instant: datetime) -> int:
    """Seconds since local midnight in real elapsed time (a DST day has 23 or 25 hours)."""
    return int((instant - midnight).total_seconds())


def _instant(midnight: datetime, seconds: int) -> datetime:
    # Add in UTC: Python adds to a zoned datetime by wall clock, an hour off on a DST day.
    return (midnight.astimezone(UTC) + timedelta(seconds=seconds)).astimezone(midnight.tzinfo)


# --- Which shifts and orders a plan takes ----------------------------------------------------


def plannable_orders(*, organization: Organization, day: date, depot: Depot | None = None):
    orders = Order.objects.filter(organization=organization, service_date=day, status__in=PLANNABLE_STATUSES)
    if depot is not None:
        orders = orders.filter(Q(depot=depot) | Q(depot__isnull=True))
    return orders.order_by("pk")


def shifts_on(*, organization: Organization, day: date):
    return (
        Shift.objects.filter(organization=organization, date=day, driver__is_active=True)
        .select_related("driver__user", "driver__default_vehicle", "vehicle")
        .order_by("starts_at", "pk")
    )


def _vehicle_of(shift: Shift):
    return shift.vehicle or shift.driver.default_vehicle


@transaction.atomic
def plan_create(
    *,
    organization: Organization,
    by: AbstractBaseUser | None,
    day: date,
    depot: Depot,
    driver_ids: list[int] | None = None,
    order_ids: list[int] | None = None,
    objective: str = Plan.Objective.TIME,
    time_budget_seconds: int = 10,
    balance: bool = False,
) -> Plan:
    """Queue an optimisation run. Drivers default to everyone with a shift that day, orders to
    every open order of the day for this depot.

    Raises ValidationError naming what is missing (no shift, no vehicle, no orders…).
    Enqueues dispatch.tasks.run_plan after commit.
    """
    if depot.organization_id != organization.pk:
        raise ValidationError({"depot": "Choose one of your own depots."})
    if not 1 <= time_budget_seconds <= MAX_BUDGET_SECONDS:
        raise ValidationError({"time_budget_seconds": f"Give between 1 and {MAX_BUDGET_SECONDS} seconds."})
    if objective not in Plan.Objective.values:
        raise ValidationError({"objective": "Choose minimise time or minimise distance."})
    shifts = list(shifts_on(organization=organization, day=day))
    if driver_ids is not None:
        wanted = set(driver_ids)
        unknown = wanted - set(
            Driver.objects.filter(organization=organization, pk__in=wanted).values_list("pk", flat=True)
        )
        if unknown:
            raise ValidationError({"drivers": "Some chosen drivers are not in your organisation."})
        without_shift = wanted - {s.driver_id for s in shifts}
        if without_shift:
            names = ", ".join(
                sorted(d.name for d in Driver.objects.filter(pk__in=without_shift).select_related("user"))
            )
            raise ValidationError({"drivers": f"No shift on {day:%d %b %Y} for: {names}. Add a shift first."})
        shifts = [s for s in shifts if s.driver_id in wanted]
    if not shifts:
        raise ValidationError(
            {"drivers": f"No driver has a shift on {day:%d %b %Y}. Add shifts under Drivers."}
        )
    no_vehicle = [s.driver.name for s in shifts if _vehicle_of(s) is None]
    if no_vehicle:
        raise ValidationError(
            {"drivers": f"No vehicle for: {', '.join(no_vehicle)}. Give them a usual vehicle."}
        )
    orders = plannable_orders(organization=organization, day=day, depot=depot)
    if order_ids is not None:
        chosen = set(order_ids)
        orders = orders.filter(pk__in=chosen)
        if orders.count() != len(chosen):
            raise ValidationError(
                {"orders": "Some chosen orders are not open orders of that day for this depot."}
            )
    order_pks = list(orders.values_list("pk", flat=True))
    if not order_pks:
        raise ValidationError({"orders": f"There are no open orders on {day:%d %b %Y} to plan."})
    plan = Plan.objects.create(
        organization=organization,
        date=day,
        depot=depot,
        objective=objective,
        time_budget_seconds=time_budget_seconds,
        options={"shift_ids": [s.pk for s in shifts], "order_ids": order_pks, "balance": balance},
        created_by=by if by is not None and by.is_authenticated else None,
    )
    transaction.on_commit(lambda: async_task("dispatch.tasks.run_plan", plan.pk, task_name=f"plan-{plan.pk}"))
    return plan


@transaction.atomic
def plan_cancel(*, plan: Plan, by: AbstractBaseUser | None) -> Plan:
    """Stop a queued or running plan. The solver notices within a second and writes nothing."""
    updated = Plan.objects.filter(pk=plan.pk, status__in=[Plan.Status.QUEUED, Plan.Status.RUNNING]).update(
        status=Plan.Status.CANCELLED, finished_at=timezone.now()
    )
    if not updated:
        raise services.IllegalTransition("Only a queued or running plan can be cancelled.")
    plan.refresh_from_db()
    return plan


# --- Building the problem -----------------------------------------------------------------------


def _point(lat, lng, fallback: tuple[float, float]) -> tuple[float, float]:
    return (lat, lng) if lat is not None and lng is not None else fallback


def build_problem(plan: Plan) -> tuple[Problem, dict[int, str]]:
    """The solver's view of a plan, and the orders left out before solving (with reasons)."""
    from dispatch.planner.matrix import travel_model

    midnight = _midnight(plan.organization, plan.date)
    depot = (plan.depot.lat, plan.depot.lng)
    shifts = list(
        Shift.objects.filter(pk__in=plan.options["shift_ids"]).select_related(
            "driver", "vehicle", "driver__default_vehicle"
        )
    )
    orders = list(Order.objects.filter(pk__in=plan.options["order_ids"]).order_by("pk"))
    left_out: dict[int, str] = {}
    points: list[tuple[float, float]] = [depot]
    index: dict[tuple[float, float], int] = {depot: 0}

    def at(point: tuple[float, float]) -> int:
        if point not in index:
            index[point] = len(points)
            points.append(point)
        return index[point]

    vehicles = []
    for shift in shifts:
        driver, vehicle = shift.driver, _vehicle_of(shift)
        start = _point(shift.start_lat, shift.start_lng, _point(driver.start_lat, driver.start_lng, depot))
        end = _point(shift.end_lat, shift.end_lng, _point(driver.end_lat, driver.end_lng, depot))
        brk = None
        if shift.break_minutes:
            earliest = _seconds(midnight, shift.break_starts_at or shift.starts_at)
            latest = (
                _seconds(midnight, shift.break_starts_at)
                if shift.break_starts_at
                else _seconds(midnight, shift.ends_at)
            )
            brk = Break(start_earliest=earliest, start_latest=latest, duration=shift.break_minutes * 60)
        vehicles.append(
            Vehicle(
                key=shift.pk,
                capacity=vehicle.capacity,
                start_location=at(start),
                end_location=at(end),
                shift_start=_seconds(midnight, shift.starts_at),
                shift_end=_seconds(midnight, shift.ends_at),
                brk=brk,
            )
        )
    shift_of_driver: dict[int, list[int]] = {}
    for shift in shifts:
        shift_of_driver.setdefault(shift.driver_id, []).append(shift.pk)
    jobs = []
    for order in orders:
        if order.needs_location:
            left_out[order.pk] = "No coordinates: place it on the map first."
            continue
        if order.window_start and order.window_end:
            tw = (
                max(0, _seconds(midnight, order.window_start)),
                min(END_OF_DAY, _seconds(midnight, order.window_end)),
            )
            if tw[1] <= 0 or tw[0] >= END_OF_DAY:
                left_out[order.pk] = "Its window is not on the plan's day."
                continue
        else:
            tw = (0, END_OF_DAY)
        allowed = None
        if order.required_driver_id:
            allowed = frozenset(shift_of_driver.get(order.required_driver_id, []))
        parcels = order.parcels
        jobs.append(
            Job(
                key=order.pk,
                location=at((order.lat, order.lng)),
                delivery=parcels if order.kind == Order.Kind.DELIVERY else 0,
                pickup=parcels if order.kind == Order.Kind.PICKUP else 0,
                service=order.service_minutes * 60,
                tw_start=tw[0],
                tw_end=tw[1],
                required=order.priority == Order.Priority.HIGH,
                allowed_vehicles=allowed,
            )
        )
    durations, distances = travel_model().matrices(points)
    problem = Problem(
        locations=points,
        durations=durations,
        distances=distances,
        jobs=jobs,
        vehicles=vehicles,
        objective=plan.objective,
        balance=bool(plan.options.get("balance")),
    )
    return problem, left_out


def problem_dump(problem: Problem) -> bytes:
    """Compressed NumPy archive of everything the solver saw (Plan.problem)."""
    meta = {
        "locations": problem.locations,
        "jobs": [
            asdict(j)
            | {"allowed_vehicles": sorted(j.allowed_vehicles) if j.allowed_vehicles is not None else None}
            for j in problem.jobs
        ],
        "vehicles": [asdict(v) for v in problem.vehicles],
        "objective": problem.objective,
        "balance": problem.balance,
    }
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, durations=problem.durations, distances=problem.distances, meta=np.array(json.dumps(meta))
    )
    return buffer.getvalue()


def problem_load(blob: bytes) -> Problem:
    with np.load(io.BytesIO(blob)) as archive:
        meta = json.loads(str(archive["meta"]))
        durations, distances = archive["durations"], archive["distances"]
    jobs = [
        Job(
            **(
                j
                | {
                    "allowed_vehicles": frozenset(j["allowed_vehicles"])
                    if j["allowed_vehicles"] is not None
                    else None
                }
            )
        )
        for j in meta["jobs"]
    ]
    vehicles = [
        Vehicle(
            **(
                v
                | {
                    "brk": Break(**v["brk"]) if v["brk"] else None,
                    "fixed_route": tuple(v["fixed_route"]) if v.get("fixed_route") else None,
                }
            )
        )
        for v in meta["vehicles"]
    ]
    return Problem(
        locations=[tuple(p) for p in meta["locations"]],
        durations=durations,
        distances=distances,
        jobs=jobs,
        vehicles=vehicles,
        objective=meta["objective"],
        balance=meta["balance"],
    )


# --- Running a plan (the django-q2 job) ------------------------------------------------------------


def plan_run(*, plan_id: int) -> Plan | None:
    """Solve a queued plan and write its draft routes. Safe to run twice: only the worker that
    moves the plan from queued to running does anything; a cancelled plan writes nothing."""
    from dispatch.planner.matrix import RoutingUnavailable
    from dispatch.planner.solver import solve

    started = timezone.now()
    claimed = Plan.objects.filter(pk=plan_id, status=Plan.Status.QUEUED).update(
        status=Plan.Status.RUNNING, started_at=started, progress={"elapsed": 0, "stage": "building"}
    )
    if claimed != 1:
        return None
    plan = Plan.objects.select_related("organization", "depot").get(pk=plan_id)
    replanning = plan.options.get("mode") == "replan"
    context: dict = {}
    try:
        if replanning:
            problem, left_out, context = build_replan_problem(plan)
        else:
            problem, left_out = build_problem(plan)
    except RoutingUnavailable as exc:
        return _plan_fail(plan, str(exc))
    Plan.objects.filter(pk=plan.pk).update(problem=problem_dump(problem))
    budget = plan.time_budget_seconds
    last_write = [0.0]
    last_check = [0.0]
    cancelled = [False]

    def on_progress(info: dict) -> None:
        now = clock.monotonic()
        if now - last_write[0] < 0.5:
            return
        last_write[0] = now
        progress = {"stage": "solving", "budget": budget, **info}
        Plan.objects.filter(pk=plan.pk, status=Plan.Status.RUNNING).update(progress=progress)

    def should_stop() -> bool:
        now = clock.monotonic()
        if now - last_check[0] >= 0.5:
            last_check[0] = now
            cancelled[0] = Plan.objects.filter(pk=plan.pk, status=Plan.Status.CANCELLED).exists()
        return cancelled[0]

    if problem.jobs:
        solution = solve(problem, time_limit=budget, on_progress=on_progress, should_stop=should_stop)
    else:
        solution = Solution(
            routes=[], unassigned={}, cost=0, distance=0, duration=0, feasible=True, runtime=0.0
        )
    if cancelled[0] or Plan.objects.filter(pk=plan.pk, status=Plan.Status.CANCELLED).exists():
        return Plan.objects.get(pk=plan.pk)
    if replanning:
        return _replan_write(plan, problem, solution, left_out, context)
    return _plan_write(plan, problem, solution, left_out)


def _plan_fail(plan: Plan, message: str) -> Plan:
    Plan.objects.filter(pk=plan.pk, status=Plan.Status.RUNNING).update(
        status=Plan.Status.FAILED, error=message, finished_at=timezone.now()
    )
    return Plan.objects.get(pk=plan.pk)


@transaction.atomic
def _plan_write(plan: Plan, problem: Problem, solution: Solution, left_out: dict[int, str]) -> Plan:
    """Draft routes from a solution. New rows only: a plan never overwrites existing routes."""
    midnight = _midnight(plan.organization, plan.date)
    shifts = {
        s.pk: s
        for s in Shift.objects.filter(pk__in=plan.options["shift_ids"]).select_related(
            "driver", "vehicle", "driver__default_vehicle"
        )
    }
    orders = {o.pk: o for o in Order.objects.filter(pk__in=plan.options["order_ids"])}
    unassigned = dict(left_out) | dict(solution.unassigned)
    routes_json = []
    for planned in solution.routes:
        if not planned.visits:
            continue
        shift = shifts[planned.vehicle]
        stops_json = []
        for visit in planned.visits:
            order = orders[visit.job]
            if order.status not in PLANNABLE_STATUSES:
                unassigned[order.pk] = f"It became {order.get_status_display().lower()} while the plan ran."
                continue
            stops_json.append(
                {
                    "order": order.pk,
                    "arrival": _instant(midnight, visit.arrival).isoformat(),
                    "start": _instant(midnight, visit.start).isoformat(),
                    "departure": _instant(midnight, visit.departure).isoformat(),
                    "load_after": visit.load_after,
                }
            )
        if not stops_json:
            continue
        route = services.route_create(
            organization=plan.organization,
            driver=shift.driver,
            depot=plan.depot,
            date=plan.date,
            vehicle=_vehicle_of(shift),
            orders=[orders[s["order"]] for s in stops_json],
            plan=plan,
        )
        Route.objects.filter(pk=route.pk).update(
            planned_start=_instant(midnight, planned.start),
            planned_end=_instant(midnight, planned.end),
            planned_distance_m=planned.distance,
            planned_duration_s=planned.duration,
        )
        for stop, data in zip(route.stops.order_by("sequence"), stops_json, strict=True):
            start = datetime.fromisoformat(data["start"])
            wait = int((start - datetime.fromisoformat(data["arrival"])).total_seconds())
            Stop.objects.filter(pk=stop.pk).update(planned_arrival=start, planned_wait_s=max(0, wait))
        for data in stops_json:
            order = orders[data["order"]]
            if order.status != Order.Status.PLANNED:
                services.order_transition(order=order, to=Order.Status.PLANNED, by=plan.created_by)
        routes_json.append(
            {
                "route": route.pk,
                "shift": shift.pk,
                "driver": shift.driver_id,
                "start": _instant(midnight, planned.start).isoformat(),
                "end": _instant(midnight, planned.end).isoformat(),
                "distance_m": planned.distance,
                "duration_s": planned.duration,
                "waiting_s": planned.waiting,
                "stops": stops_json,
            }
        )
    result = {
        "routes": routes_json,
        "unassigned": [{"order": pk, "reason": reason} for pk, reason in sorted(unassigned.items())],
        "totals": {
            "routes": len(routes_json),
            "orders": sum(len(r["stops"]) for r in routes_json),
            "unassigned": len(unassigned),
            "distance_m": sum(r["distance_m"] for r in routes_json),
            "duration_s": sum(r["duration_s"] for r in routes_json),
        },
        "solver": {
            "cost": solution.cost,
            "feasible": solution.feasible,
            "runtime_s": round(solution.runtime, 2),
            "iterations": solution.iterations,
        },
    }
    finished = Plan.objects.filter(pk=plan.pk, status=Plan.Status.RUNNING).update(
        status=Plan.Status.SUCCEEDED,
        result=result,
        finished_at=timezone.now(),
        progress={
            "stage": "done",
            "elapsed": solution.runtime,
            "best_cost": solution.cost,
            "budget": plan.time_budget_seconds,
        },
    )
    if finished != 1:  # cancelled in the last moment: leave nothing behind
        transaction.set_rollback(True)
    return Plan.objects.get(pk=plan.pk)


# --- Publishing ------------------------------------------------------------------------------------


@transaction.atomic
def plan_publish(*, plan: Plan, by: AbstractBaseUser | None) -> list[Route]:
    """Publish a finished plan's draft routes: orders become assigned and drivers see them.

    Raises ValidationError when a driver already has a published or started route that day
    (change it by hand or re-plan it instead), or an order is no longer open.
    """
    if plan.status != Plan.Status.SUCCEEDED:
        raise ValidationError("Only a finished plan can be published.")
    drafts = list(plan.routes.filter(status=Route.Status.DRAFT).select_related("driver__user"))
    if not drafts:
        raise ValidationError("This plan has no draft routes left to publish.")
    busy = Route.objects.filter(
        organization=plan.organization, date=plan.date, driver__in=[r.driver_id for r in drafts]
    ).exclude(status=Route.Status.DRAFT)
    if busy.exists():
        names = ", ".join(sorted({r.driver.name for r in busy.select_related("driver__user")}))
        raise ValidationError(
            f"{names} already has a published route on {plan.date:%d %b}. Change that route by hand, "
            "or re-plan the day's remaining work, instead of publishing a second one."
        )
    for route in drafts:
        stale = [
            s.order for s in route.stops.select_related("order") if s.order.status != Order.Status.PLANNED
        ]
        if stale:
            refs = ", ".join(str(o) for o in stale[:5])
            raise ValidationError(f"Some orders changed since planning ({refs}); run the plan again.")
        services.route_transition(route=route, to=Route.Status.PUBLISHED, by=by)
    # Other drafts of the same day for these orders are now out of date.
    Route.objects.filter(organization=plan.organization, date=plan.date, status=Route.Status.DRAFT).exclude(
        plan=plan
    ).filter(stops__order__in=Order.objects.filter(stops__route__in=drafts)).distinct().delete()
    return drafts


# --- Manual changes ---------------------------------------------------------------------------------

EDITABLE_ROUTE_STATUSES = (Route.Status.DRAFT, Route.Status.PUBLISHED, Route.Status.IN_PROGRESS)


def _editable(route: Route) -> None:
    if route.status not in EDITABLE_ROUTE_STATUSES:
        raise services.IllegalTransition("A completed route can no longer be changed.")


def route_recompute(*, route: Route) -> Route:
    """Recompute planned times, distance and broken rules of a route's sequence."""
    from dispatch.planner.matrix import travel_model
    from dispatch.planner.solver import evaluate

    route = Route.objects.select_related("organization", "depot", "driver", "vehicle").get(pk=route.pk)
    midnight = _midnight(route.organization, route.date)
    stops = list(
        route.stops.filter(status__in=[Stop.Status.PENDING, Stop.Status.EN_ROUTE, Stop.Status.ARRIVED])
        .select_related("order")
        .order_by("sequence")
    )
    shift = Shift.objects.filter(driver=route.driver, date=route.date).first()
    depot = (route.depot.lat, route.depot.lng)
    # A route under way goes on from the last stop it closed, and nobody is planned in the past.
    start = depot
    closed = route.stops.filter(status__in=[Stop.Status.COMPLETED, Stop.Status.FAILED, Stop.Status.SKIPPED])
    last = closed.select_related("order").order_by("-departed_at", "-sequence").first()
    if last is not None and not last.order.needs_location:
        start = (last.order.lat, last.order.lng)
    located = [s for s in stops if not s.order.needs_location]
    points = [start, depot] + [(s.order.lat, s.order.lng) for s in located]
    durations, distances = travel_model().matrices(points)
    day_start = _seconds(midnight, shift.starts_at) if shift else 0
    day_end = _seconds(midnight, shift.ends_at) if shift else END_OF_DAY
    if route.status != Route.Status.COMPLETED:
        day_start = max(day_start, _seconds(midnight, timezone.now()))
    jobs = []
    for n, stop in enumerate(located, start=2):
        order = stop.order
        tw = (0, END_OF_DAY)
        if order.window_start and order.window_end:
            tw = (_seconds(midnight, order.window_start), _seconds(midnight, order.window_end))
        jobs.append(
            Job(
                key=stop.pk,
                location=n,
                delivery=order.parcels if order.kind == Order.Kind.DELIVERY else 0,
                pickup=order.parcels if order.kind == Order.Kind.PICKUP else 0,
                service=order.service_minutes * 60,
                tw_start=tw[0],
                tw_end=tw[1],
            )
        )
    capacity = route.vehicle.capacity if route.vehicle else 10**6
    vehicle = Vehicle(
        key=route.pk,
        capacity=capacity,
        start_location=0,
        end_location=1,
        shift_start=day_start,
        shift_end=max(day_end, day_start + 1),
    )
    problem = Problem(
        locations=points, durations=durations, distances=distances, jobs=jobs, vehicles=[vehicle]
    )
    solution = evaluate(problem, {route.pk: [s.pk for s in located]})
    planned = solution.routes[0] if solution.routes else None
    by_stop = {visit.job: visit for visit in planned.visits} if planned else {}
    for stop in located:
        visit = by_stop.get(stop.pk)
        Stop.objects.filter(pk=stop.pk).update(
            planned_arrival=_instant(midnight, visit.start) if visit else None,
            planned_wait_s=max(0, visit.start - visit.arrival) if visit else None,
        )
    violations = list(planned.violations) if planned else []
    violations += [
        f"{s.order} has no coordinates, so no time can be planned for it."
        for s in stops
        if s.order.needs_location
    ]
    Route.objects.filter(pk=route.pk).update(
        planned_start=_instant(midnight, planned.start) if planned else None,
        planned_end=_instant(midnight, planned.end) if planned else None,
        planned_distance_m=planned.distance if planned else 0,
        planned_duration_s=planned.duration if planned else 0,
        violations=violations,
    )
    route.refresh_from_db()
    return route


def _bump(route: Route, expected_version: int | None) -> None:
    """Claim the route for a change; refuse when someone changed it since the caller looked."""
    filters = {"pk": route.pk}
    if expected_version is not None:
        filters["version"] = expected_version
    if Route.objects.filter(**filters).update(version=F("version") + 1) != 1:
        raise services.StaleEdit("Someone changed this route since you opened it. Reload it and try again.")


def _resequence(route: Route, ordered: list[Stop]) -> None:
    """Give stops 1..n in the given order (two passes: the unique constraint holds throughout)."""
    offset = (route.stops.aggregate(m=Max("sequence"))["m"] or 0) + len(ordered) + 1
    for n, stop in enumerate(ordered):
        Stop.objects.filter(pk=stop.pk).update(sequence=offset + n)
    for n, stop in enumerate(ordered, start=1):
        Stop.objects.filter(pk=stop.pk).update(sequence=n)


def _movable(stop: Stop) -> None:
    if stop.status != Stop.Status.PENDING:
        raise services.IllegalTransition(
            f"Stop {stop.sequence} is {stop.get_status_display().lower()}; only a pending stop can be moved."
        )


@transaction.atomic
def stop_move(
    *,
    stop: Stop,
    to_route: Route,
    position: int,
    by: AbstractBaseUser | None,
    expected_version: int | None = None,
    expected_route_id: int | None = None,
) -> tuple[Route, Route]:
    """Move a pending stop to `position` (1-based among the route's stops) on `to_route`,
    which may be its own route. Recomputes both routes' times and broken rules.

    `expected_version` / `expected_route_id` are what the caller's page showed: if the stop has
    moved or its route changed since, raises StaleEdit instead of acting on a stale picture.
    """
    stop = Stop.objects.select_related("route", "order").get(pk=stop.pk)
    source = stop.route
    if expected_route_id is not None and source.pk != expected_route_id:
        raise services.StaleEdit("Someone moved this stop to another route meanwhile. Reload and try again.")
    _movable(stop)
    _editable(source)
    _editable(to_route)
    if to_route.organization_id != source.organization_id or to_route.date != source.date:
        raise ValidationError("A stop can only move to another route of the same day.")
    _bump(source, expected_version)
    if to_route.pk != source.pk:
        _bump(to_route, None)
    target_stops = [s for s in to_route.stops.order_by("sequence") if s.pk != stop.pk]
    closed = [s for s in target_stops if s.status != Stop.Status.PENDING]
    position = max(position, len(closed) + 1)  # never before a stop already visited
    position = min(position, len(target_stops) + 1)
    if to_route.pk != source.pk:
        Stop.objects.filter(pk=stop.pk).update(
            route=to_route,
            sequence=(to_route.stops.aggregate(m=Max("sequence"))["m"] or 0) + len(target_stops) + 2,
        )
        _resequence(source, list(source.stops.exclude(pk=stop.pk).order_by("sequence")))
        order = stop.order
        if to_route.status != Route.Status.DRAFT and order.status == Order.Status.PLANNED:
            services.order_transition(order=order, to=Order.Status.ASSIGNED, by=by, stop=stop)
        if to_route.status == Route.Status.IN_PROGRESS and order.status == Order.Status.ASSIGNED:
            services.order_transition(order=order, to=Order.Status.OUT_FOR_DELIVERY, by=by, stop=stop)
    stop.refresh_from_db()
    target_stops.insert(position - 1, stop)
    _resequence(to_route, target_stops)
    services._event(
        order=stop.order,
        kind="note",
        by=by,
        stop=stop,
        note=f"Moved to {to_route.driver}'s route, position {position}.",
    )
    routes = (
        route_recompute(route=source),
        route_recompute(route=to_route) if to_route.pk != source.pk else None,
    )
    return routes[0], routes[1] or routes[0]


@transaction.atomic
def stop_remove(*, stop: Stop, by: AbstractBaseUser | None, expected_version: int | None = None) -> Route:
    """Take a pending stop off its route; its order goes back to the pool of open orders."""
    stop = Stop.objects.select_related("route", "order").get(pk=stop.pk)
    _movable(stop)
    route = stop.route
    _editable(route)
    _bump(route, expected_version)
    order = stop.order
    if stop.events.exists():
        services.stop_transition(stop=stop, to=Stop.Status.SKIPPED, by=by, reason="Removed by the dispatcher")
        rest = list(route.stops.exclude(pk=stop.pk).order_by("sequence")) + [stop]
    else:
        stop.delete()
        rest = list(route.stops.order_by("sequence"))
    _resequence(route, rest)
    order.refresh_from_db()
    if order.status == Order.Status.OUT_FOR_DELIVERY:
        order = services.order_transition(
            order=order, to=Order.Status.ASSIGNED, by=by, reason="Removed from the route"
        )
    if order.status in (Order.Status.PLANNED, Order.Status.ASSIGNED):
        services.order_transition(order=order, to=Order.Status.NEW, by=by, reason="Removed from the route")
    return route_recompute(route=route)


@transaction.atomic
def route_swap_drivers(*, route: Route, other: Route, by: AbstractBaseUser | None) -> tuple[Route, Route]:
    """Give each route the other's driver and vehicle (neither may have started)."""
    if route.pk == other.pk:
        raise ValidationError("Choose two different routes.")
    if route.organization_id != other.organization_id or route.date != other.date:
        raise ValidationError("Only routes of the same day can swap drivers.")
    for r in (route, other):
        if r.status not in (Route.Status.DRAFT, Route.Status.PUBLISHED):
            raise services.IllegalTransition(
                f"{r.driver}'s route has started; drivers can no longer be swapped."
            )
    _bump(route, None)
    _bump(other, None)
    a = Route.objects.get(pk=route.pk)
    b = Route.objects.get(pk=other.pk)
    Route.objects.filter(pk=a.pk).update(driver=b.driver, vehicle=b.vehicle)
    Route.objects.filter(pk=b.pk).update(driver=a.driver, vehicle=a.vehicle)
    return route_recompute(route=a), route_recompute(route=b)


@transaction.atomic
def route_set_locked(*, route: Route, locked: bool, by: AbstractBaseUser | None) -> Route:
    _editable(route)
    Route.objects.filter(pk=route.pk).update(locked=locked, version=F("version") + 1)
    route.refresh_from_db()
    return route


def route_timeline(route: Route) -> list[dict[str, Any]]:
    """Per stop: arrival vs window, waiting and load after it, for the plan page."""
    rows = []
    load = 0
    stops = list(route.stops.select_related("order").order_by("sequence"))
    deliveries = sum(
        s.order.parcels
        for s in stops
        if s.order.kind == Order.Kind.DELIVERY and s.status == Stop.Status.PENDING
    )
    load = deliveries
    for stop in stops:
        order = stop.order
        if stop.status == Stop.Status.PENDING:
            load += order.parcels if order.kind == Order.Kind.PICKUP else -order.parcels
        late = bool(stop.planned_arrival and order.window_end and stop.planned_arrival > order.window_end)
        rows.append({"stop": stop, "order": order, "load_after": load, "late": late})
    return rows


# --- Re-planning the rest of a day that has started -------------------------------------------

ACTIVE_ROUTE_STATUSES = (Route.Status.PUBLISHED, Route.Status.IN_PROGRESS)
VISITING = (Stop.Status.EN_ROUTE, Stop.Status.ARRIVED)  # the driver is on the way there or at it
PARKED_SEQUENCE = 30000  # below the column's 32767 limit, above any real route's length


@transaction.atomic
def replan_create(
    *,
    organization: Organization,
    by: AbstractBaseUser | None,
    day: date,
    depot: Depot,
    driver_ids: list[int] | None = None,
    objective: str = Plan.Objective.TIME,
    time_budget_seconds: int = 10,
) -> Plan:
    """Queue a re-optimisation of what is left of a published day: pending stops of every route,
    new open orders, and the stops of drivers left out of `driver_ids` (e.g. one who went home).
    Visited and in-progress stops stay where they are; locked routes stay as they are. The run
    only proposes: nothing changes until replan_apply().

    Raises ValidationError when nothing is published that day.
    """
    routes = list(
        Route.objects.filter(
            organization=organization, date=day, depot=depot, status__in=ACTIVE_ROUTE_STATUSES
        )
    )
    if not routes:
        raise ValidationError(f"Nothing is published for {day:%d %b %Y} yet: plan and publish the day first.")
    shifts = list(shifts_on(organization=organization, day=day))
    if driver_ids is not None:
        shifts = [s for s in shifts if s.driver_id in set(driver_ids)]
    if not shifts:
        raise ValidationError({"drivers": "Keep at least one driver with a shift that day."})
    no_vehicle = [s.driver.name for s in shifts if _vehicle_of(s) is None]
    if no_vehicle:
        raise ValidationError({"drivers": f"No vehicle for: {', '.join(no_vehicle)}."})
    on_routes = Stop.objects.filter(route__in=routes).values("order_id")
    pool = plannable_orders(organization=organization, day=day, depot=depot).exclude(pk__in=on_routes)
    plan = Plan.objects.create(
        organization=organization,
        date=day,
        depot=depot,
        objective=objective,
        time_budget_seconds=time_budget_seconds,
        options={
            "mode": "replan",
            "shift_ids": [s.pk for s in shifts],
            "order_ids": list(pool.values_list("pk", flat=True)),
            "route_versions": {str(r.pk): r.version for r in routes},
            "balance": False,
        },
        created_by=by if by is not None and by.is_authenticated else None,
    )
    transaction.on_commit(lambda: async_task("dispatch.tasks.run_plan", plan.pk, task_name=f"plan-{plan.pk}"))
    return plan


def build_replan_problem(plan: Plan, now: datetime | None = None) -> tuple[Problem, dict[int, str], dict]:
    """The rest of the day as a Problem: each kept driver starts where they are (the stop they
    are at or heading to, else the last one they closed, else their start) and when they are
    there; each job is an order still to visit. Returns (problem, left out, context)."""
    from dispatch.planner.matrix import travel_model

    midnight = _midnight(plan.organization, plan.date)
    now_s = _seconds(midnight, now or timezone.now())
    depot = (plan.depot.lat, plan.depot.lng)
    routes = list(
        Route.objects.filter(pk__in=[int(k) for k in plan.options["route_versions"]])
        .select_related("driver")
        .prefetch_related("stops__order")
    )
    shifts = list(
        Shift.objects.filter(pk__in=plan.options["shift_ids"]).select_related(
            "driver", "vehicle", "driver__default_vehicle"
        )
    )
    route_of_driver = {r.driver_id: r for r in routes}
    points: list[tuple[float, float]] = [depot]
    index: dict[tuple[float, float], int] = {depot: 0}

    def at(point: tuple[float, float]) -> int:
        if point not in index:
            index[point] = len(points)
            points.append(point)
        return index[point]

    pending: dict[int, Stop] = {}  # order pk -> its pending stop (to re-plan)
    for route in routes:
        for stop in route.stops.all():
            if stop.status == Stop.Status.PENDING:
                pending[stop.order_id] = stop
    orders = {o.pk: o for o in Order.objects.filter(pk__in=list(pending) + plan.options["order_ids"])}
    vehicles, fixed = [], {}
    for shift in shifts:
        driver, route = shift.driver, route_of_driver.get(shift.driver_id)
        start_point = _point(
            shift.start_lat, shift.start_lng, _point(driver.start_lat, driver.start_lng, depot)
        )
        end_point = _point(shift.end_lat, shift.end_lng, _point(driver.end_lat, driver.end_lng, depot))
        start_at = _seconds(midnight, shift.starts_at)
        if route is not None:
            stops = sorted(route.stops.all(), key=lambda s: s.sequence)
            visiting = [s for s in stops if s.status in VISITING]
            closed = [
                s
                for s in stops
                if s.status in (Stop.Status.COMPLETED, Stop.Status.FAILED, Stop.Status.SKIPPED)
            ]
            here = visiting[0] if visiting else (closed[-1] if closed else None)
            if here is not None and not here.order.needs_location:
                start_point = (here.order.lat, here.order.lng)
            service_left = here.order.service_minutes * 60 if here is not None and here in visiting else 0
            start_at = max(start_at, now_s + service_left)
            if route.locked:
                fixed[shift.pk] = tuple(s.order_id for s in stops if s.status == Stop.Status.PENDING)
        start_at = max(start_at, now_s)  # a driver who has not set off yet leaves now at the earliest
        vehicles.append(
            Vehicle(
                key=shift.pk,
                capacity=_vehicle_of(shift).capacity,
                start_location=at(start_point),
                end_location=at(end_point),
                shift_start=start_at,
                shift_end=max(start_at + 1, _seconds(midnight, shift.ends_at)),
                fixed_route=fixed.get(shift.pk),
            )
        )
    shift_of_driver = {s.driver_id: s.pk for s in shifts}
    left_out, jobs = {}, []
    for pk, order in sorted(orders.items()):
        if order.needs_location:
            left_out[pk] = "No coordinates: place it on the map first."
            continue
        tw = (0, END_OF_DAY)
        if order.window_start and order.window_end:
            tw = (max(0, _seconds(midnight, order.window_start)), _seconds(midnight, order.window_end))
        allowed = None
        if order.required_driver_id:
            allowed = (
                frozenset([shift_of_driver[order.required_driver_id]])
                if order.required_driver_id in shift_of_driver
                else frozenset()
            )
        jobs.append(
            Job(
                key=pk,
                location=at((order.lat, order.lng)),
                delivery=order.parcels if order.kind == Order.Kind.DELIVERY else 0,
                pickup=order.parcels if order.kind == Order.Kind.PICKUP else 0,
                service=order.service_minutes * 60,
                tw_start=tw[0],
                tw_end=max(tw[1], tw[0] + 1),
                required=order.priority == Order.Priority.HIGH,
                allowed_vehicles=allowed,
            )
        )
    durations, distances = travel_model().matrices(points)
    problem = Problem(
        locations=points,
        durations=durations,
        distances=distances,
        jobs=jobs,
        vehicles=vehicles,
        objective=plan.objective,
    )
    context = {
        "pending": {
            pk: {"stop": s.pk, "route": s.route_id, "driver": s.route.driver_id, "eta": s.planned_arrival}
            for pk, s in pending.items()
        },
        "route_of_driver": {d: r.pk for d, r in route_of_driver.items()},
    }
    return problem, left_out, context


def _replan_write(
    plan: Plan, problem: Problem, solution: Solution, left_out: dict[int, str], context: dict
) -> Plan:
    """Store the proposal and what it would change; the routes themselves stay untouched."""
    midnight = _midnight(plan.organization, plan.date)
    shifts = {
        s.pk: s for s in Shift.objects.filter(pk__in=plan.options["shift_ids"]).select_related("driver__user")
    }
    orders = {o.pk: o for o in Order.objects.filter(pk__in=[j.key for j in problem.jobs] + list(left_out))}
    pending = context["pending"]
    names = {s.driver_id: s.driver.name for s in shifts.values()}
    names.update(
        {
            d.pk: d.name
            for d in Driver.objects.filter(pk__in=[p["driver"] for p in pending.values()]).select_related(
                "user"
            )
        }
    )
    routes_json, moved, etas, added = [], [], [], []
    for planned in solution.routes:
        shift = shifts[planned.vehicle]
        stops_json = []
        for visit in planned.visits:
            before = pending.get(visit.job)
            after = _instant(midnight, visit.start)
            stops_json.append(
                {"order": visit.job, "stop": before["stop"] if before else None, "start": after.isoformat()}
            )
            label = str(orders[visit.job])
            if before is None:
                added.append(
                    {
                        "order": visit.job,
                        "label": label,
                        "driver": shift.driver.name,
                        "eta": after.isoformat(),
                    }
                )
                continue
            if before["driver"] != shift.driver_id:
                moved.append(
                    {
                        "order": visit.job,
                        "label": label,
                        "from": names.get(before["driver"], "?"),
                        "to": shift.driver.name,
                    }
                )
            if before["eta"] is not None:
                delta = round((after - before["eta"]).total_seconds() / 60)
                if delta:
                    etas.append(
                        {
                            "order": visit.job,
                            "label": label,
                            "before": before["eta"].isoformat(),
                            "after": after.isoformat(),
                            "minutes": delta,
                        }
                    )
        routes_json.append(
            {
                "shift": shift.pk,
                "driver": shift.driver_id,
                "route": context["route_of_driver"].get(shift.driver_id),
                "stops": stops_json,
                "distance_m": planned.distance,
                "duration_s": planned.duration,
            }
        )
    unassigned = dict(left_out) | dict(solution.unassigned)
    dropped = [
        {"order": pk, "label": str(orders[pk]) if pk in orders else pk, "reason": reason}
        for pk, reason in sorted(unassigned.items())
        if pk in pending
    ]
    result = {
        "mode": "replan",
        "routes": routes_json,
        "unassigned": [{"order": pk, "reason": reason} for pk, reason in sorted(unassigned.items())],
        "changes": {
            "moved": moved,
            "eta": sorted(etas, key=lambda e: -abs(e["minutes"])),
            "added": added,
            "dropped": dropped,
        },
        "totals": {
            "routes": len([r for r in routes_json if r["stops"]]),
            "orders": sum(len(r["stops"]) for r in routes_json),
            "unassigned": len(unassigned),
            "distance_m": sum(r["distance_m"] for r in routes_json),
            "duration_s": sum(r["duration_s"] for r in routes_json),
        },
    }
    Plan.objects.filter(pk=plan.pk, status=Plan.Status.RUNNING).update(
        status=Plan.Status.SUCCEEDED,
        result=result,
        finished_at=timezone.now(),
        progress={
            "stage": "done",
            "elapsed": solution.runtime,
            "best_cost": solution.cost,
            "budget": plan.time_budget_seconds,
        },
    )
    return Plan.objects.get(pk=plan.pk)


@transaction.atomic
def replan_apply(*, plan: Plan, by: AbstractBaseUser | None) -> list[Route]:
    """Carry out a re-plan proposal. Raises StaleEdit if any route changed since the proposal
    was made (run it again), ValidationError if it is not a finished, unapplied proposal."""
    plan = Plan.objects.select_for_update().get(pk=plan.pk)
    if plan.options.get("mode") != "replan" or plan.status != Plan.Status.SUCCEEDED:
        raise ValidationError("Only a finished re-plan can be applied.")
    if plan.result.get("applied_at"):
        raise ValidationError("This re-plan has already been applied.")
    versions = {int(k): v for k, v in plan.options["route_versions"].items()}
    current = dict(Route.objects.filter(pk__in=versions).values_list("pk", "version"))
    if current != versions:
        raise services.StaleEdit("The routes changed since this proposal was made. Run the re-plan again.")
    shifts = {
        s.pk: s
        for s in Shift.objects.filter(pk__in=plan.options["shift_ids"]).select_related(
            "driver", "vehicle", "driver__default_vehicle"
        )
    }
    touched: dict[int, Route] = {}
    proposed_orders = {s["order"] for r in plan.result["routes"] for s in r["stops"]}
    # Park every pending stop out of the way first: stops trade places across routes below, and
    # (route, sequence) must stay unique at every step.
    for route_id in versions:
        for n, stop_id in enumerate(
            Stop.objects.filter(route_id=route_id, status=Stop.Status.PENDING).values_list("pk", flat=True)
        ):
            Stop.objects.filter(pk=stop_id).update(sequence=PARKED_SEQUENCE + n)
    # Pending stops the proposal leaves out go back to the pool of open orders.
    for stop in (
        Stop.objects.filter(route_id__in=versions, status=Stop.Status.PENDING)
        .exclude(order_id__in=proposed_orders)
        .select_related("route", "order")
    ):
        touched[stop.route_id] = stop.route
        _unplan_stop(stop, by)
    for proposed in plan.result["routes"]:
        if not proposed["stops"]:
            continue
        shift = shifts[proposed["shift"]]
        route = Route.objects.filter(pk=proposed["route"]).first() if proposed["route"] else None
        if route is None:
            route = services.route_create(
                organization=plan.organization,
                driver=shift.driver,
                depot=plan.depot,
                date=plan.date,
                vehicle=_vehicle_of(shift),
                plan=plan,
            )
            services.route_transition(route=route, to=Route.Status.PUBLISHED, by=by)
        touched[route.pk] = route
        kept = list(route.stops.exclude(status=Stop.Status.PENDING).order_by("sequence"))
        ordered = []
        for item in proposed["stops"]:
            stop = (
                Stop.objects.filter(pk=item["stop"]).select_related("route").first() if item["stop"] else None
            )
            if stop is None:
                order = Order.objects.get(pk=item["order"])
                stop = Stop.objects.create(
                    organization=plan.organization, route=route, order=order, sequence=_free_sequence(route)
                )
                _follow_route(order, route, stop, by)
            elif stop.route_id != route.pk:
                touched[stop.route_id] = stop.route
                Stop.objects.filter(pk=stop.pk).update(route=route, sequence=_free_sequence(route))
                services._event(
                    order=stop.order,
                    kind="note",
                    by=by,
                    stop=stop,
                    note=f"Re-planned onto {shift.driver}'s route.",
                )
            Stop.objects.filter(pk=stop.pk).update(planned_arrival=datetime.fromisoformat(item["start"]))
            ordered.append(stop)
        _resequence(route, kept + ordered)
    for route in touched.values():
        Route.objects.filter(pk=route.pk).update(version=F("version") + 1)
        route_recompute(route=route)
    result = dict(plan.result) | {"applied_at": timezone.now().isoformat()}
    Plan.objects.filter(pk=plan.pk).update(result=result)
    return list(touched.values())


def _free_sequence(route: Route) -> int:
    return (route.stops.aggregate(m=Max("sequence"))["m"] or 0) + 1


def _follow_route(order: Order, route: Route, stop: Stop, by) -> None:
    """A new order joining a live route takes the route's stage: assigned, or out for delivery."""
    if order.status != Order.Status.ASSIGNED:
        order = services.order_transition(order=order, to=Order.Status.ASSIGNED, by=by, stop=stop)
    if route.status == Route.Status.IN_PROGRESS:
        services.order_transition(order=order, to=Order.Status.OUT_FOR_DELIVERY, by=by, stop=stop)


def _unplan_stop(stop: Stop, by) -> None:
    order = stop.order
    if stop.events.exists():
        services.stop_transition(stop=stop, to=Stop.Status.SKIPPED, by=by, reason="Left out by re-planning")
    else:
        stop.delete()
    order.refresh_from_db()
    if order.status == Order.Status.OUT_FOR_DELIVERY:
        order = services.order_transition(
            order=order, to=Order.Status.ASSIGNED, by=by, reason="Left out by re-planning"
        )
    if order.status in (Order.Status.PLANNED, Order.Status.ASSIGNED):
        services.order_transition(order=order, to=Order.Status.NEW, by=by, reason="Left out by re-planning")
