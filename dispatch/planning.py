"""Planning services: a day's orders and shifts → an optimisation run → draft routes → published.

The solver itself lives in dispatch.planner (plain data, no Django). This module turns rows into
a `Problem`, runs it as a django-q2 job with live progress, turns the `Solution` back into draft
routes, and applies a dispatcher's manual changes (recomputing times and broken rules at once).
"""

import io
import json
import logging
import time as clock
from dataclasses import asdict, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Max, Q
from django.utils import timezone
from django_q.tasks import async_task

from dispatch import services
from dispatch.models import Depot, Driver, Order, Organization, Plan, Route, Shift, Stop
from dispatch.planner.problem import Break, Job, Problem, Solution, Vehicle
from dispatch.timeutils import local_today

logger = logging.getLogger(__name__)

MAX_BUDGET_SECONDS = 120
PLANNABLE_STATUSES = (Order.Status.NEW, Order.Status.PLANNED, Order.Status.FAILED)
END_OF_DAY = 24 * 3600 + 6 * 3600  # windows and shifts may run a little past midnight


# --- Time on the plan's day -------------------------------------------------------------------


def _midnight(organization: Organization, day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=organization.tzinfo)


def _seconds(midnight: datetime, instant: datetime) -> int:
    """Seconds since local midnight in real elapsed time (a DST day has 23 or 25 hours)."""
    return int((instant.astimezone(UTC) - midnight.astimezone(UTC)).total_seconds())


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


class _Points:
    """Distinct points, each with its index in the matrices (the depot first)."""

    def __init__(self, first: tuple[float, float]) -> None:
        self.points: list[tuple[float, float]] = []
        self.index: dict[tuple[float, float], int] = {}
        self(first)

    def __call__(self, point: tuple[float, float]) -> int:
        if point not in self.index:
            self.index[point] = len(self.points)
            self.points.append(point)
        return self.index[point]


def shift_ends(shift: Shift, depot: tuple[float, float]) -> tuple[tuple[float, float], tuple[float, float]]:
    """Where a shift starts and ends: the shift's own points, else the driver's, else the depot."""
    driver = shift.driver
    start = _point(shift.start_lat, shift.start_lng, _point(driver.start_lat, driver.start_lng, depot))
    end = _point(shift.end_lat, shift.end_lng, _point(driver.end_lat, driver.end_lng, depot))
    return start, end


def shift_vehicle(
    shift: Shift,
    midnight: datetime,
    *,
    key: int,
    start: int,
    end: int,
    capacity: int,
    not_before: int | None = None,
    fixed_route: tuple[int, ...] | None = None,
) -> Vehicle:
    """A shift as the solver's vehicle; `not_before` moves its start later (now, on a live day)."""
    shift_start, shift_end = _seconds(midnight, shift.starts_at), _seconds(midnight, shift.ends_at)
    begin = max(shift_start, not_before) if not_before is not None else shift_start
    brk = None
    if shift.break_minutes:
        earliest = _seconds(midnight, shift.break_starts_at) if shift.break_starts_at else shift_start
        latest = earliest if shift.break_starts_at else shift_end
        if latest >= begin:  # a break already taken (or due before now) is not planned again
            brk = Break(
                start_earliest=max(earliest, begin), start_latest=latest, duration=shift.break_minutes * 60
            )
    return Vehicle(
        key=key,
        capacity=capacity,
        start_location=start,
        end_location=end,
        shift_start=begin,
        shift_end=max(shift_end, begin + 1),
        brk=brk,
        fixed_route=fixed_route,
    )


def order_job(
    order: Order, midnight: datetime, *, key: int, location: int, allowed: frozenset[int] | None = None
) -> Job | str:
    """An order as the solver's job, or the reason it cannot be one."""
    if order.needs_location:
        return "No coordinates: place it on the map first."
    tw = (0, END_OF_DAY)
    if order.window_start and order.window_end:
        tw = (
            max(0, _seconds(midnight, order.window_start)),
            min(END_OF_DAY, _seconds(midnight, order.window_end)),
        )
        if tw[1] <= tw[0]:
            return "Its window is not on the plan's day."
    return Job(
        key=key,
        location=location,
        delivery=order.parcels if order.kind == Order.Kind.DELIVERY else 0,
        pickup=order.parcels if order.kind == Order.Kind.PICKUP else 0,
        service=order.service_minutes * 60,
        tw_start=tw[0],
        tw_end=tw[1],
        required=order.priority == Order.Priority.HIGH,
        allowed_vehicles=allowed,
    )


def _jobs(
    orders, midnight: datetime, at: _Points, shift_of_driver: dict[int, int]
) -> tuple[list[Job], dict[int, str]]:
    jobs, left_out = [], {}
    for order in orders:
        allowed = None
        if order.required_driver_id:
            pinned = shift_of_driver.get(order.required_driver_id)
            allowed = frozenset([pinned]) if pinned is not None else frozenset()
        location = at((order.lat, order.lng)) if not order.needs_location else 0
        job = order_job(order, midnight, key=order.pk, location=location, allowed=allowed)
        if isinstance(job, str):
            left_out[order.pk] = job
        else:
            jobs.append(job)
    return jobs, left_out


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
    at = _Points(depot)
    vehicles = []
    for shift in shifts:
        start, end = shift_ends(shift, depot)
        vehicles.append(
            shift_vehicle(
                shift,
                midnight,
                key=shift.pk,
                start=at(start),
                end=at(end),
                capacity=_vehicle_of(shift).capacity,
            )
        )
    jobs, left_out = _jobs(orders, midnight, at, {s.driver_id: s.pk for s in shifts})
    durations, distances = travel_model().matrices(at.points)
    problem = Problem(
        locations=at.points,
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
    started = timezone.now()
    # A plan left "running" by a worker that died is taken over once it is clearly abandoned
    # (django-q2 hands the task to another worker after its `retry` delay).
    abandoned = Q(
        status=Plan.Status.RUNNING, started_at__lt=started - timedelta(seconds=MAX_BUDGET_SECONDS + 180)
    )
    claimed = Plan.objects.filter(Q(status=Plan.Status.QUEUED) | abandoned, pk=plan_id).update(
        status=Plan.Status.RUNNING, started_at=started, progress={"elapsed": 0, "stage": "building"}
    )
    if claimed != 1:
        return None
    try:
        return _plan_solve(plan_id)
    except Exception as exc:  # any failure must end the run, or its page polls forever
        logger.exception("Plan %s failed", plan_id)
        return _plan_fail(Plan.objects.get(pk=plan_id), f"The planner stopped with an error: {exc}")


def _plan_solve(plan_id: int) -> Plan:
    from dispatch.planner.matrix import RoutingUnavailable
    from dispatch.planner.solver import solve

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
            services.order_follow_route(order=orders[data["order"]], route=route, by=plan.created_by)
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
            s.order
            for s in route.stops.filter(status=Stop.Status.PENDING).select_related("order")
            if s.order.status != Order.Status.PLANNED
        ]
        if stale:
            refs = ", ".join(str(o) for o in stale[:5])
            raise ValidationError(f"Some orders changed since planning ({refs}); run the plan again.")
        try:
            with transaction.atomic():
                services.route_transition(route=route, to=Route.Status.PUBLISHED, by=by)
        except IntegrityError as exc:  # another publish for this driver and day won the race
            raise ValidationError(
                f"{route.driver} already has a published route on {plan.date:%d %b}."
            ) from exc
    return drafts


# --- Manual changes ---------------------------------------------------------------------------------

EDITABLE_ROUTE_STATUSES = (Route.Status.DRAFT, Route.Status.PUBLISHED, Route.Status.IN_PROGRESS)


def _editable(route: Route) -> None:
    if route.status not in EDITABLE_ROUTE_STATUSES:
        raise services.IllegalTransition("A completed route can no longer be changed.")


def route_recompute(*, route: Route) -> Route:
    """Recompute planned times, waits, distance and broken rules of a route's sequence, the
    same way a plan times its routes (shift, start and end points, break, windows, load)."""
    from dispatch.planner.matrix import travel_model
    from dispatch.planner.solver import evaluate

    route = Route.objects.select_related("organization", "depot", "driver", "vehicle").get(pk=route.pk)
    midnight = _midnight(route.organization, route.date)
    stops = list(
        route.stops.filter(status__in=[Stop.Status.PENDING, *VISITING])
        .select_related("order")
        .order_by("sequence")
    )
    shift = Shift.objects.filter(driver=route.driver, date=route.date).select_related("driver").first()
    depot = (route.depot.lat, route.depot.lng)
    start, end = shift_ends(shift, depot) if shift else (depot, depot)
    # A route under way goes on from the last stop it closed, and nobody is planned in the past.
    last = (
        route.stops.filter(status__in=[Stop.Status.COMPLETED, Stop.Status.FAILED])
        .select_related("order")
        .order_by("-sequence")
        .first()
    )
    if last is not None and not last.order.needs_location:
        start = (last.order.lat, last.order.lng)
    at = _Points(start)
    end_index = at(end)
    jobs = []
    for stop in stops:
        if not stop.order.needs_location:
            job = order_job(stop.order, midnight, key=stop.pk, location=at((stop.order.lat, stop.order.lng)))
            if isinstance(job, Job):
                jobs.append(job)
    # Only today has a past to skip: a future day starts at its shift, and a day gone by is
    # timed as it was planned (clamping it to now would call every stop days late).
    is_today = route.date == local_today(route.organization.tzinfo)
    now = _seconds(midnight, timezone.now()) if is_today and route.status != Route.Status.COMPLETED else None
    capacity = route.vehicle.capacity if route.vehicle else 10**6
    if shift is not None:
        vehicle = shift_vehicle(
            shift, midnight, key=route.pk, start=0, end=end_index, capacity=capacity, not_before=now
        )
    else:
        begin = max(0, now or 0)
        vehicle = Vehicle(key=route.pk, capacity=capacity, start_location=0, end_location=end_index,
                          shift_start=begin, shift_end=max(END_OF_DAY, begin + 1))  # fmt: skip
    durations, distances = travel_model().matrices(at.points)
    problem = Problem(
        locations=at.points, durations=durations, distances=distances, jobs=jobs, vehicles=[vehicle]
    )
    solution = evaluate(problem, {route.pk: [job.key for job in jobs]})
    planned = solution.routes[0] if solution.routes else None
    by_stop = {visit.job: visit for visit in planned.visits} if planned else {}
    for stop in stops:
        visit = by_stop.get(stop.pk)
        Stop.objects.filter(pk=stop.pk).update(
            planned_arrival=_instant(midnight, visit.start) if visit else None,
            planned_wait_s=max(0, visit.start - visit.arrival) if visit else None,
        )
    violations = list(planned.violations) if planned else []
    for stop in stops:
        if stop.pk not in by_stop:
            why = "no coordinates" if stop.order.needs_location else "its window is not on this day"
            violations.append(f"{stop.order} cannot be timed: {why}.")
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


def _visited_count(stops: list[Stop]) -> int:
    """Stops the driver has done or is doing: they stay at the front, in their order."""
    return sum(1 for s in stops if s.status not in (Stop.Status.PENDING, Stop.Status.SKIPPED))


def _note(stop: Stop, route: Route, by, text: str) -> None:
    # Drafts are scratch work: only a change to a route drivers can see goes into the history.
    if route.status != Route.Status.DRAFT:
        services._event(order=stop.order, kind="note", by=by, stop=stop, note=text)


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
    moved or its route changed since (a dispatcher or the driver), raises StaleEdit instead of
    acting on a stale picture. Raises IllegalTransition for a stop already visited.
    """
    stop = Stop.objects.select_related("route").get(pk=stop.pk)
    source = stop.route
    if expected_route_id is not None and source.pk != expected_route_id:
        raise services.StaleEdit("Someone moved this stop to another route meanwhile. Reload and try again.")
    _editable(source)
    _editable(to_route)
    if to_route.organization_id != source.organization_id or to_route.date != source.date:
        raise ValidationError("A stop can only move to another route of the same day.")
    # Claim both routes (in a fixed order, so two moves cannot deadlock), then re-read the stop:
    # a driver setting off for it meanwhile also changed its route's version.
    for route in sorted({source, to_route}, key=lambda r: r.pk):
        _bump(route, expected_version if route.pk == source.pk else None)
    to_route = Route.objects.select_related("driver__user").get(pk=to_route.pk)  # its status now
    stop = Stop.objects.select_related("order").get(pk=stop.pk)
    _movable(stop)
    target_stops = [s for s in to_route.stops.order_by("sequence") if s.pk != stop.pk]
    position = min(max(position, _visited_count(target_stops) + 1), len(target_stops) + 1)
    if to_route.pk != source.pk:
        Stop.objects.filter(pk=stop.pk).update(
            route=to_route, sequence=_free_sequence(to_route) + len(target_stops)
        )
        _resequence(source, list(source.stops.exclude(pk=stop.pk).order_by("sequence")))
        services.order_follow_route(order=stop.order, route=to_route, by=by, stop=stop)
    stop.refresh_from_db()
    target_stops.insert(position - 1, stop)
    _resequence(to_route, target_stops)
    _note(stop, to_route, by, f"Moved to {to_route.driver}'s route, position {position}.")
    if to_route.pk == source.pk:
        route = route_recompute(route=source)
        return route, route
    return route_recompute(route=source), route_recompute(route=to_route)


def _unplan_stop(stop: Stop, by, reason: str) -> None:
    """Take a pending stop off its route and send its order back to the open pool."""
    order = stop.order
    if stop.events.exists():  # drivers saw it: keep the visit in the history as skipped
        services.stop_transition(stop=stop, to=Stop.Status.SKIPPED, by=by, reason=reason)
    else:
        stop.delete()
    order.refresh_from_db()
    if order.status == Order.Status.OUT_FOR_DELIVERY:
        order = services.order_transition(order=order, to=Order.Status.ASSIGNED, by=by, reason=reason)
    if order.status in (Order.Status.PLANNED, Order.Status.ASSIGNED):
        services.order_transition(order=order, to=Order.Status.NEW, by=by, reason=reason)


@transaction.atomic
def stop_remove(*, stop: Stop, by: AbstractBaseUser | None, expected_version: int | None = None) -> Route:
    """Take a pending stop off its route; its order goes back to the pool of open orders."""
    stop = Stop.objects.select_related("route").get(pk=stop.pk)
    route = stop.route
    _editable(route)
    _bump(route, expected_version)
    stop = Stop.objects.select_related("order").get(pk=stop.pk)
    _movable(stop)
    _unplan_stop(stop, by, "Removed from the route by the dispatcher")
    stops = list(route.stops.order_by("sequence"))
    skipped = [s for s in stops if s.status == Stop.Status.SKIPPED]
    _resequence(route, [s for s in stops if s.status != Stop.Status.SKIPPED] + skipped)
    return route_recompute(route=route)


@transaction.atomic
def route_swap_drivers(*, route: Route, other: Route, by: AbstractBaseUser | None) -> tuple[Route, Route]:
    """Each driver takes the other's stops (with their own vehicle). Neither route may have
    started; both are recomputed."""
    if route.pk == other.pk:
        raise ValidationError("Choose two different routes.")
    if route.organization_id != other.organization_id or route.date != other.date:
        raise ValidationError("Only routes of the same day can swap drivers.")
    for r in sorted((route, other), key=lambda r: r.pk):
        _bump(r, None)
    a, b = Route.objects.get(pk=route.pk), Route.objects.get(pk=other.pk)
    for r in (a, b):
        if r.status not in (Route.Status.DRAFT, Route.Status.PUBLISHED):
            raise services.IllegalTransition(
                f"{r.driver}'s route has started; drivers can no longer be swapped."
            )
    # Swapping the stops, not the drivers: a driver keeps one route a day (and its vehicle).
    stops_a, stops_b = list(a.stops.order_by("sequence")), list(b.stops.order_by("sequence"))
    for n, stop in enumerate(stops_a + stops_b):
        Stop.objects.filter(pk=stop.pk).update(sequence=PARKED_SEQUENCE + n)
    for target, stops in ((b, stops_a), (a, stops_b)):
        for n, stop in enumerate(stops, start=1):
            Stop.objects.filter(pk=stop.pk).update(route=target, sequence=n)
            services.order_follow_route(order=stop.order, route=target, by=by, stop=stop)
            _note(stop, target, by, f"Now on {target.driver}'s route (drivers swapped).")
    Route.objects.filter(pk__in=[a.pk, b.pk]).update(locked=False)
    return route_recompute(route=a), route_recompute(route=b)


@transaction.atomic
def route_set_locked(*, route: Route, locked: bool, by: AbstractBaseUser | None) -> Route:
    _editable(route)
    Route.objects.filter(pk=route.pk).update(locked=locked, version=F("version") + 1)
    route.refresh_from_db()
    return route


def route_timeline(route: Route) -> list[dict[str, Any]]:
    """Per stop: planned time vs window, late or not, and the load after it, for the plan page.
    Uses the route's prefetched stops (with their orders) when the caller prefetched them."""
    stops = sorted(route.stops.all(), key=lambda s: s.sequence)
    load = sum(
        s.order.parcels
        for s in stops
        if s.order.kind == Order.Kind.DELIVERY and s.status == Stop.Status.PENDING
    )
    rows = []
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
    if depot.organization_id != organization.pk:
        raise ValidationError({"depot": "Choose one of your own depots."})
    if not 1 <= time_budget_seconds <= MAX_BUDGET_SECONDS:
        raise ValidationError({"time_budget_seconds": f"Give between 1 and {MAX_BUDGET_SECONDS} seconds."})
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
    there (now at the earliest); each job is an order still to visit. A locked route keeps its
    pending stops in order. Returns (problem, orders left out with reasons, context)."""
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
    pending = {s.order_id: s for r in routes for s in r.stops.all() if s.status == Stop.Status.PENDING}
    at = _Points(depot)
    vehicles = []
    for shift in shifts:
        route = route_of_driver.get(shift.driver_id)
        start, end = shift_ends(shift, depot)
        not_before, fixed = now_s, None
        if route is not None:
            stops = sorted(route.stops.all(), key=lambda s: s.sequence)
            visiting = [s for s in stops if s.status in VISITING]
            closed = [s for s in stops if s.status in (Stop.Status.COMPLETED, Stop.Status.FAILED)]
            here = visiting[0] if visiting else (closed[-1] if closed else None)
            if here is not None and not here.order.needs_location:
                start = (here.order.lat, here.order.lng)
            if visiting:  # finish the stop in hand first
                not_before = now_s + here.order.service_minutes * 60
            if route.locked:
                fixed = tuple(s.order_id for s in stops if s.status == Stop.Status.PENDING)
        vehicles.append(
            shift_vehicle(
                shift,
                midnight,
                key=shift.pk,
                start=at(start),
                end=at(end),
                capacity=_vehicle_of(shift).capacity,
                not_before=not_before,
                fixed_route=fixed,
            )  # fmt: skip
        )
    orders = Order.objects.filter(pk__in=sorted([*pending, *plan.options["order_ids"]]))
    jobs, left_out = _jobs(orders, midnight, at, {s.driver_id: s.pk for s in shifts})
    locked = {key for v in vehicles if v.fixed_route for key in v.fixed_route}
    if locked - {j.key for j in jobs}:  # a locked stop that cannot be timed: keep the route as is
        vehicles = [
            replace(v, fixed_route=tuple(k for k in v.fixed_route if k not in left_out))
            if v.fixed_route
            else v
            for v in vehicles
        ]
    durations, distances = travel_model().matrices(at.points)
    problem = Problem(
        locations=at.points, durations=durations, distances=distances, jobs=jobs, vehicles=vehicles,
        objective=plan.objective,
    )  # fmt: skip
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
    """Carry out a re-plan proposal.

    Raises StaleEdit if any route changed since the proposal was made (a dispatcher's edit or a
    driver's progress), or a new order it takes on is no longer open: run it again. Raises
    ValidationError if it is not a finished, unapplied proposal.
    """
    claimed = Plan.objects.filter(pk=plan.pk, options__mode="replan", status=Plan.Status.SUCCEEDED)
    plan = claimed.select_for_update().first()
    if plan is None:
        raise ValidationError("Only a finished re-plan can be applied.")
    if plan.result.get("applied_at"):
        raise ValidationError("This re-plan has already been applied.")
    versions = {int(k): v for k, v in plan.options["route_versions"].items()}
    stale = services.StaleEdit("The routes changed since this proposal was made. Run the re-plan again.")
    # Claim every route at the version the proposal saw; any change since (even a driver
    # arriving at a stop) makes one of these conditional updates miss.
    for route_id, version in sorted(versions.items()):
        if Route.objects.filter(pk=route_id, version=version).update(version=F("version") + 1) != 1:
            raise stale
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
        pending = Stop.objects.filter(route_id=route_id, status=Stop.Status.PENDING).values_list(
            "pk", flat=True
        )
        for n, stop_id in enumerate(pending):
            Stop.objects.filter(pk=stop_id).update(sequence=PARKED_SEQUENCE + n)
    # Pending stops the proposal leaves out go back to the pool of open orders.
    left = Stop.objects.filter(route_id__in=versions, status=Stop.Status.PENDING).exclude(
        order_id__in=proposed_orders
    )
    for stop in left.select_related("route", "order"):
        touched[stop.route_id] = stop.route
        _unplan_stop(stop, by, "Left out by re-planning")
    for proposed in plan.result["routes"]:
        if not proposed["stops"]:
            continue
        shift = shifts[proposed["shift"]]
        route = Route.objects.filter(pk=proposed["route"]).first() if proposed["route"] else None
        if route is None:
            if (
                Route.objects.filter(driver=shift.driver, date=plan.date)
                .exclude(status=Route.Status.DRAFT)
                .exists()
            ):
                raise stale  # the driver got a route since the proposal
            route = services.route_create(
                organization=plan.organization, driver=shift.driver, depot=plan.depot, date=plan.date,
                vehicle=_vehicle_of(shift),
            )  # fmt: skip
            services.route_transition(route=route, to=Route.Status.PUBLISHED, by=by)
        touched[route.pk] = route
        kept = list(route.stops.exclude(status=Stop.Status.PENDING).order_by("sequence"))
        ordered = []
        for item in proposed["stops"]:
            stop = (
                Stop.objects.filter(pk=item["stop"]).select_related("route", "order").first()
                if item["stop"]
                else None
            )
            if stop is None:
                order = Order.objects.get(pk=item["order"])
                if (
                    order.status not in PLANNABLE_STATUSES
                    or order.stops.filter(
                        route__status__in=ACTIVE_ROUTE_STATUSES, status=Stop.Status.PENDING
                    ).exists()
                ):
                    raise stale
                stop = Stop.objects.create(
                    organization=plan.organization, route=route, order=order, sequence=_free_sequence(route)
                )
            elif stop.status != Stop.Status.PENDING:
                raise stale
            elif stop.route_id != route.pk:
                touched[stop.route_id] = stop.route
                Stop.objects.filter(pk=stop.pk).update(route=route, sequence=_free_sequence(route))
                _note(stop, route, by, f"Re-planned onto {shift.driver}'s route.")
            services.order_follow_route(order=stop.order, route=route, by=by, stop=stop)
            ordered.append(stop)
        _resequence(route, kept + ordered)
    for route in touched.values():
        route_recompute(route=route)
    Plan.objects.filter(pk=plan.pk).update(result=plan.result | {"applied_at": timezone.now().isoformat()})
    return list(touched.values())


def _free_sequence(route: Route) -> int:
    return (route.stops.aggregate(m=Max("sequence"))["m"] or 0) + 1
