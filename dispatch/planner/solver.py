"""Solve a `Problem` with PyVRP, and time any sequence of stops (the solver's or a dispatcher's).

Only the modelling is ours; the search is PyVRP's iterated local search with its default
parameters, fed whole NumPy matrices (no per-edge calls), so the app costs nothing on top of
PyVRP called directly. How the day's rules map onto PyVRP:

- Depots: every distinct start or end location of a vehicle. Each job gets a PyVRP location of
  its own (a row/column gathered from the problem's matrices) so a pin can close one job
  without closing another job at the same address.
- Vehicles: one PyVRP vehicle type per group of identical vehicles (capacity, start/end,
  shift, break, speed, pins); the shift is the type's [tw_early, tw_late] window.
- Deliveries and pickups (returns) are a client's `delivery` and `pickup` on one load
  dimension, so both ride the same routes and the load on board never exceeds the capacity.
- Priority: a required job is a required client. A normal job is optional with a prize larger
  than anything serving it could add to a route (twice the worst detour into and out of its
  location, plus its service and the longest shift when minimising time), yet finite, so
  leaving it out is the last resort and never makes the search give up on feasibility.
- Pins: vehicles a job is not allowed on get their own routing profile in which every edge into
  that job costs more than any shift lasts; one profile per distinct (speed, pins) combination.
  PyVRP tries to insert a left-out job only next to its nearest neighbours, which may all ride
  other drivers' routes; so with pins the starting solution puts every pinned job on its
  driver's route, the search stops halfway to put left-out pinned jobs where they fit on their
  driver's route (cheapest feasible insertion) and goes on from there, and the same is tried
  once at the end.
- Speed: `Vehicle.speed_factor` divides the durations of that vehicle's profile.
- Objective: "time" → unit_duration_cost 1 (route durations, waiting included); "distance" →
  unit_distance_cost 1.
- Balance (soft): each vehicle's nominal shift is cut to an equal share of the day's estimated
  work (service + the shortest way into every job, divided by the vehicles), and the rest of
  the shift is allowed as overtime at an extra cost per second (1 when minimising time; the
  matrices' metres-per-second when minimising distance). Longer routes then cost more than
  shorter ones, so work spreads out, but nothing is ever refused for it.
- Breaks: PyVRP has no breaks. Approximation: each vehicle's maximum route duration is its
  shift minus the break, so every route leaves that much time free; the timeline then puts the
  break, inside its window, where it delays nothing (in a wait, or where the windows leave
  slack). Where no such place exists the route breaks a rule and is repaired (below).
- Locked routes (`fixed_route`) are kept out of the solver: they are timed as they are, their
  jobs and vehicles are removed from what PyVRP sees.
- Jobs no vehicle could serve even alone (reasons.unservable) are left out before solving, so a
  required one cannot make the whole plan infeasible. If a route still breaks a rule (PyVRP
  found no feasible plan because required jobs cannot all fit, or a break has no room), stops
  are taken off it, optional ones first, until it keeps every rule; they are then put where
  they fit on any route (cheapest feasible insertion), and those that fit nowhere come back
  unassigned with their reason.

Times are those of the timeline computed here, the same for the solver's routes and for
`evaluate()`: a vehicle leaves as late as it can without lengthening the route (PyVRP's own
convention), waits for a window to open, and serves at once otherwise.
"""

import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyvrp
from pyvrp.exceptions import PenaltyBoundWarning
from pyvrp.IteratedLocalSearch import (
    IteratedLocalSearch,
    IteratedLocalSearchCallbacks,
    IteratedLocalSearchParams,
)
from pyvrp.PenaltyManager import PenaltyManager
from pyvrp.search import LocalSearch, PerturbationManager, compute_neighbours

from dispatch.planner.matrix import UNREACHABLE, scaled_durations
from dispatch.planner.problem import Job, PlannedRoute, Problem, Solution, Vehicle, Visit
from dispatch.planner.reasons import DID_NOT_FIT, explain, format_time, unservable

PROGRESS_EVERY = 0.5  # seconds between on_progress calls and should_stop polls


# ---------------------------------------------------------------------------------------------
# Timeline of one route: shared by solve() and evaluate().


class _Durations:
    """Duration matrices per speed factor, computed once per call."""

    def __init__(self, problem: Problem):
        self.problem = problem
        self._by_factor: dict[float, np.ndarray] = {}

    def __call__(self, vehicle: Vehicle) -> np.ndarray:
        factor = vehicle.speed_factor
        if factor not in self._by_factor:
            self._by_factor[factor] = scaled_durations(self.problem.durations, factor)
        return self._by_factor[factor]


@dataclass
class _Item:
    job: Job | None  # None: the break
    location: int
    tw_start: int
    tw_end: int
    service: int


def _forward(items: list[_Item], vehicle: Vehicle, durations: np.ndarray, t0: int):
    """Times along `items` leaving at t0: (arrivals, begins, departures, end)."""
    arrivals, begins, departures = [], [], []
    t, here = t0, vehicle.start_location
    for item in items:
        t += int(durations[here, item.location])
        arrivals.append(t)
        t = max(t, item.tw_start)
        begins.append(t)
        t += item.service
        departures.append(t)
        here = item.location
    end = t + int(durations[here, vehicle.end_location])
    return arrivals, begins, departures, end


def _timeline(items: list[_Item], vehicle: Vehicle, durations: np.ndarray):
    """Leave at the shift start, then as late as possible without making the route longer."""
    arrivals, begins, departures, end = _forward(items, vehicle, durations, vehicle.shift_start)
    waited, delay = 0, None
    for item, arrival, begin in zip(items, arrivals, begins, strict=True):
        waited += begin - arrival
        bound = waited + max(0, item.tw_end - begin)
        delay = bound if delay is None else min(delay, bound)
    delay = min(waited, delay) if delay is not None else 0
    if delay > 0:
        arrivals, begins, departures, end = _forward(items, vehicle, durations, vehicle.shift_start + delay)
    return vehicle.shift_start + delay, arrivals, begins, departures, end


def _badness(items, begins, start, end, vehicle) -> tuple[int, int, int]:
    late = sum(max(0, b - it.tw_end) for it, b in zip(items, begins, strict=True))
    return late, max(0, end - vehicle.shift_end), end - start


def _break_positions(items, brk, start, begins, departures, end) -> list[int]:
    """Where the break may go (k: after the k-th stop): every gap that overlaps its window, plus
    the last gap before and the first gap after it, for when none does."""
    candidates, before, after = [], None, None
    for k in range(len(items) + 1):
        gap_opens = departures[k - 1] if k else start
        gap_closes = begins[k] if k < len(items) else end
        if gap_closes < brk.start_earliest:
            before = k
        elif gap_opens > brk.start_latest:
            after = k if after is None else after
        else:
            candidates.append(k)
    return candidates + [k for k in (before, after) if k is not None]


def plan_route(
    problem: Problem, vehicle: Vehicle, jobs: Sequence[Job], durations: np.ndarray
) -> PlannedRoute:
    """Time `jobs` in this order on `vehicle` and list every rule the sequence breaks."""
    items = [_Item(j, j.location, j.tw_start, j.tw_end, j.service) for j in jobs]
    start, arrivals, begins, departures, end = _timeline(items, vehicle, durations)
    break_start = None
    brk = vehicle.brk
    if brk and items and end > brk.start_earliest and start <= brk.start_latest:
        best = None
        for k in _break_positions(items, brk, start, begins, departures, end):
            here = items[k - 1].location if k else vehicle.start_location
            trial = [
                *items[:k],
                _Item(None, here, brk.start_earliest, brk.start_latest, brk.duration),
                *items[k:],
            ]
            timed = _timeline(trial, vehicle, durations)
            score = _badness(trial, timed[2], timed[0], timed[4], vehicle)
            if best is None or score < best[0]:
                best = (score, trial, timed)
        _, items, (start, arrivals, begins, departures, end) = best
        k = next(i for i, it in enumerate(items) if it.job is None)
        break_start = begins[k]

    route_violations = []
    visits, waiting, distance = [], 0, 0
    load = sum(j.delivery for j in jobs)
    load_start = load
    if load > vehicle.capacity:
        route_violations.append(
            f"Overloaded at the start: {load} parcels to deliver, the vehicle carries {vehicle.capacity}"
        )
    here = vehicle.start_location
    number = 0
    for item, arrival, begin, departure in zip(items, arrivals, begins, departures, strict=True):
        waiting += begin - arrival
        if item.job is None:
            if begin > item.tw_end:
                route_violations.append(
                    f"The break starts at {format_time(problem, begin)}, "
                    f"after {format_time(problem, item.tw_end)}"
                )
            continue
        job = item.job
        number += 1
        distance += int(problem.distances[here, job.location])
        here = job.location
        load += job.pickup - job.delivery
        visits.append(Visit(job.key, arrival, begin, departure, load))
        name = f"Stop {number} (order {job.key})"
        if begin > job.tw_end:
            route_violations.append(
                f"{name} arrives {format_time(problem, arrival)}, "
                f"after its window closes at {format_time(problem, job.tw_end)}"
            )
        if load > vehicle.capacity:
            route_violations.append(
                f"Overloaded after stop {number} (order {job.key}): {load} parcels on board, "
                f"the vehicle carries {vehicle.capacity}"
            )
        if job.allowed_vehicles is not None and vehicle.key not in job.allowed_vehicles:
            route_violations.append(f"{name} is pinned to another driver")
    distance += int(problem.distances[here, vehicle.end_location])
    if end > vehicle.shift_end:
        route_violations.append(
            f"Back at {format_time(problem, end)}, "
            f"after the shift ends at {format_time(problem, vehicle.shift_end)}"
        )
    return PlannedRoute(
        vehicle=vehicle.key,
        visits=visits,
        start=start,
        end=end,
        distance=distance,
        duration=end - start,
        waiting=waiting,
        load_start=load_start,
        break_start=break_start,
        violations=route_violations,
    )


# ---------------------------------------------------------------------------------------------
# Checks and the result.


def _check(problem: Problem) -> tuple[dict[int, Job], dict[int, Vehicle]]:
    n = len(problem.locations)
    for name in ("durations", "distances"):
        matrix = getattr(problem, name)
        if matrix.shape != (n, n):
            raise ValueError(f"Problem.{name} is {matrix.shape}, expected ({n}, {n}) for {n} locations")
    jobs = {}
    for job in problem.jobs:
        if job.key in jobs:
            raise ValueError(f"Job key {job.key} appears twice")
        if not 0 <= job.location < n:
            raise ValueError(f"Job {job.key} has location {job.location}, outside 0..{n - 1}")
        jobs[job.key] = job
    vehicles = {}
    for vehicle in problem.vehicles:
        if vehicle.key in vehicles:
            raise ValueError(f"Vehicle key {vehicle.key} appears twice")
        for loc in (vehicle.start_location, vehicle.end_location):
            if not 0 <= loc < n:
                raise ValueError(f"Vehicle {vehicle.key} uses location {loc}, outside 0..{n - 1}")
        if vehicle.speed_factor <= 0:
            raise ValueError(f"Vehicle {vehicle.key} has speed_factor {vehicle.speed_factor}; it must be > 0")
        vehicles[vehicle.key] = vehicle
    return jobs, vehicles


def _solution(
    problem: Problem, routes: list[PlannedRoute], unassigned: dict[int, str], runtime: float, **extra
) -> Solution:
    distance = sum(r.distance for r in routes)
    duration = sum(r.duration for r in routes)
    return Solution(
        routes=routes,
        unassigned=unassigned,
        cost=duration if problem.objective == "time" else distance,
        distance=distance,
        duration=duration,
        feasible=not any(r.violations for r in routes),
        runtime=runtime,
        **extra,
    )


def evaluate(problem: Problem, sequences: dict[int, list[int]]) -> Solution:
    """Time a hand-made plan (vehicle key -> job keys in order) and list what it breaks.

    Used after a dispatcher's manual change: nothing is refused, every broken window, overload,
    late return or misplaced pin is listed in the route's `violations`. Jobs on no route are
    unassigned with the reason "not on any route". Raises ValueError for an unknown vehicle or
    job key, or a job on two routes.
    """
    started = time.perf_counter()
    jobs, vehicles = _check(problem)
    durations = _Durations(problem)
    routes, placed = [], set()
    for vehicle_key, keys in sequences.items():
        if vehicle_key not in vehicles:
            raise ValueError(f"No vehicle {vehicle_key} in this problem")
        for key in keys:
            if key not in jobs:
                raise ValueError(f"No order {key} in this problem")
            if key in placed:
                raise ValueError(f"Order {key} is on two routes")
            placed.add(key)
        vehicle = vehicles[vehicle_key]
        routes.append(plan_route(problem, vehicle, [jobs[k] for k in keys], durations(vehicle)))
    unassigned = {key: "not on any route" for key in jobs if key not in placed}
    return _solution(problem, routes, unassigned, time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------
# PyVRP model.


@dataclass
class _Model:
    data: pyvrp.ProblemData
    jobs: list[Job]  # PyVRP client i is jobs[i]
    type_vehicles: list[list[Vehicle]]  # PyVRP vehicle type t is driven by these, in order
    pinned: dict[int, int]  # pinned client -> the vehicle type of its first allowed vehicle
    type_of: dict[int, int]  # vehicle key -> its vehicle type


def _balance_target(jobs: list[Job], T: np.ndarray, n_depots: int, n_vehicles: int) -> int:
    """An equal share of the day's work: service plus the shortest way into each job."""
    into = np.where(T[:, n_depots:] >= UNREACHABLE, UNREACHABLE, T[:, n_depots:]).astype(np.float64)
    np.fill_diagonal(into[n_depots:], np.inf)  # not from the job itself
    work = float(into.min(axis=0).sum()) + sum(j.service for j in jobs)
    return int(np.ceil(work / max(1, n_vehicles)))


# PyVRP keeps its own copy of every profile's two matrices (16 bytes per pair of points) and
# this module builds each one first (8 more). Within this budget every driver with pinned jobs
# gets a profile of its own; see _forbidden() for what happens beyond it.
PROFILE_BYTES = 400 * 2**20


def _forbidden(vehicles: list[Vehicle], pinned: list[tuple[int, frozenset]], max_profiles: int):
    """{vehicle key: clients it may not take}, with at most `max_profiles` distinct answers.

    When there are more drivers with pins than profiles fit in memory, the drivers with the
    fewest pinned jobs share one profile in which their pins are not blocked. A job that then
    lands on the wrong one of them is taken off after the search (plan_route reports it, the
    repair moves it to a driver it is pinned to).
    """

    def forbidden(v: Vehicle, loose: set[int]) -> frozenset[int]:
        if v.key in loose:
            return frozenset(i for i, allowed in pinned if not allowed & loose)
        return frozenset(i for i, allowed in pinned if v.key not in allowed)

    loose: set[int] = set()
    candidates = sorted(
        {v.key for v in vehicles if any(v.key in allowed for _, allowed in pinned)},
        key=lambda key: (sum(key in allowed for _, allowed in pinned), key),
    )
    while True:
        result = {v.key: forbidden(v, loose) for v in vehicles}
        if len({(v.speed_factor, result[v.key]) for v in vehicles}) <= max_profiles or not candidates:
            return result
        loose.add(candidates.pop(0))


def _build(problem: Problem, jobs: list[Job], vehicles: list[Vehicle]) -> _Model:
    depot_locs = sorted({loc for v in vehicles for loc in (v.start_location, v.end_location)})
    depot_of = {loc: i for i, loc in enumerate(depot_locs)}
    n_depots = len(depot_locs)
    index = np.array(depot_locs + [j.location for j in jobs], dtype=np.int64)
    grid = np.ix_(index, index)
    D = np.ascontiguousarray(problem.distances[grid], dtype=np.int64)
    T = np.ascontiguousarray(problem.durations[grid], dtype=np.int64)

    locations = [
        pyvrp.Location(x=float(problem.locations[i][0]), y=float(problem.locations[i][1])) for i in index
    ]
    depots = [pyvrp.Depot(location=i) for i in range(n_depots)]

    spans = [v.shift_end - v.shift_start - (v.brk.duration if v.brk else 0) for v in vehicles]
    slowest = min(v.speed_factor for v in vehicles)
    time_objective = problem.objective == "time"

    # Prize for optional jobs: more than serving it could ever add (see the module docstring).
    finite_t = np.where(T >= UNREACHABLE, 0, T)
    finite_d = np.where(D >= UNREACHABLE, 0, D)
    worst_t = finite_t[:, n_depots:].max(axis=0) + finite_t[n_depots:, :].max(axis=1)
    worst_d = finite_d[:, n_depots:].max(axis=0) + finite_d[n_depots:, :].max(axis=1)
    overtime_rate = 0
    target = None
    if problem.balance:
        target = _balance_target(jobs, T, n_depots, len(vehicles))
        if time_objective:
            overtime_rate = 1
        else:
            overtime_rate = max(1, round(float(finite_d.sum()) / max(1, float(finite_t.sum()))))

    clients = []
    for i, job in enumerate(jobs):
        prize = 0
        if not job.required:
            worst_time = int(worst_t[i] / slowest) + job.service + max(spans)
            marginal = worst_time if time_objective else int(worst_d[i])
            marginal += overtime_rate * worst_time
            prize = 2 * marginal + 1
        clients.append(
            pyvrp.Client(
                location=n_depots + i,
                delivery=[job.delivery],
                pickup=[job.pickup],
                service_duration=job.service,
                tw_early=job.tw_start,
                tw_late=job.tw_end,
                prize=prize,
                required=job.required,
                name=str(job.key),
            )
        )

    # Profiles: one per (speed, set of jobs this vehicle may not take).
    pinned = [(i, job.allowed_vehicles) for i, job in enumerate(jobs) if job.allowed_vehicles is not None]
    forbidden_of = _forbidden(vehicles, pinned, max(2, PROFILE_BYTES // (24 * len(index) ** 2)))
    block = int(min(UNREACHABLE, 2 * (max(spans) + int(T.max(initial=0))) + 1))
    profile_of: dict[tuple, int] = {}
    distance_matrices, duration_matrices = [], []
    vehicle_profile = []
    for v in vehicles:
        forbidden = tuple(sorted(n_depots + i for i in forbidden_of[v.key]))
        key = (v.speed_factor, forbidden)
        if key not in profile_of:
            profile_of[key] = len(distance_matrices)
            dist = D
            dur = scaled_durations(T, v.speed_factor)
            if forbidden:
                # A blocked edge takes longer than any shift, so the route cannot be on time.
                # The distances stay shared, unless shifts are so long that only cost can keep
                # the job off this vehicle (PyVRP copies every profile's matrices: 16 bytes
                # per pair of points each, so profiles are grouped as far as they can be).
                cols = list(forbidden)
                dur = dur.copy()
                dur[:, cols] = block
                dur[cols, cols] = 0
                if max(spans) >= block:
                    dist = D.copy()
                    dist[:, cols] = block
                    dist[cols, cols] = 0
            distance_matrices.append(dist)
            duration_matrices.append(dur)
        vehicle_profile.append(profile_of[key])

    groups: dict[tuple, list[Vehicle]] = defaultdict(list)
    for v, profile, span in zip(vehicles, vehicle_profile, spans, strict=True):
        nominal = span if target is None else min(span, max(0, target))
        key = (
            v.capacity,
            depot_of[v.start_location],
            depot_of[v.end_location],
            v.shift_start,
            v.shift_end,
            nominal,
            span - nominal,
            profile,
        )
        groups[key].append(v)
    vehicle_types = []
    for (capacity, start, end, tw_early, tw_late, nominal, overtime, profile), members in groups.items():
        vehicle_types.append(
            pyvrp.VehicleType(
                num_available=len(members),
                capacity=[capacity],
                start_depot=start,
                end_depot=end,
                tw_early=tw_early,
                tw_late=tw_late,
                shift_duration=max(0, nominal),
                unit_distance_cost=0 if time_objective else 1,
                unit_duration_cost=1 if time_objective else 0,
                profile=profile,
                max_overtime=max(0, overtime),
                unit_overtime_cost=overtime_rate if overtime else 0,
                name=",".join(str(m.key) for m in members),
            )
        )
    data = pyvrp.ProblemData(locations, clients, depots, vehicle_types, distance_matrices, duration_matrices)
    type_vehicles = list(groups.values())
    type_of = {v.key: t for t, members in enumerate(type_vehicles) for v in members}
    pinned_types = {}
    for i, allowed in pinned:
        types = sorted(type_of[k] for k in allowed if k in type_of)
        if types:
            pinned_types[i] = types[0]
    return _Model(data, jobs, type_vehicles, pinned_types, type_of)


def _routes(problem: Problem, model: _Model, solution: pyvrp.Solution, durations) -> dict[int, PlannedRoute]:
    """{vehicle key: timed route} for a PyVRP solution."""
    drivers = [list(members) for members in model.type_vehicles]
    routes = {}
    for pyvrp_route in solution.routes():
        vehicle = drivers[pyvrp_route.vehicle_type()].pop(0)
        route_jobs = [model.jobs[a.idx] for a in pyvrp_route if a.is_client()]
        routes[vehicle.key] = plan_route(problem, vehicle, route_jobs, durations(vehicle))
    return routes


def _to_pyvrp(model: _Model, routes: dict[int, PlannedRoute]) -> pyvrp.Solution:
    client_of = {job.key: i for i, job in enumerate(model.jobs)}
    return pyvrp.Solution(
        model.data,
        [
            pyvrp.Route(model.data, [client_of[v.job] for v in route.visits], model.type_of[key])
            for key, route in routes.items()
            if route.visits
        ],
    )


def _objective_cost(model: _Model, solution: pyvrp.Solution) -> int:
    """PyVRP's objective (travel, overtime and left-out prizes); INT_MAX when infeasible."""
    evaluator = pyvrp.CostEvaluator([0] * model.data.num_load_dimensions, 0, 0)
    return int(evaluator.cost(solution))


# Large problems: a shorter late-acceptance history than PyVRP's default of 300. With some
# 10,000 iterations in 10 s for 400 jobs (fewer for 1,000), a 300-long history accepts worse
# solutions for too long to converge within the budget; 50 made the search greedier and cut the
# Gehring-Homberger mean gap at 10 s from 1.49/1.30 % to 0.93/0.79-1.02 % (400, seeds 0/1)
# and from 4.21/4.08 % to 2.43/2.18 % (1,000, seeds 0/1); see docs/benchmarks.md. With a long
# budget it can be too greedy: the 1,000-order city day at 60 s came out 2.5 % above PyVRP's
# defaults in one run, so it applies only to short budgets (under 0.05 s per client: 20 s for
# 400, 50 s for 1,000). Below LARGE_PROBLEM clients (Solomon, GH200, typical days), and with
# longer budgets, PyVRP's defaults are kept unchanged.
LARGE_PROBLEM = 300
LARGE_HISTORY_LENGTH = 50
SHORT_BUDGET_PER_CLIENT = 0.05  # seconds


def _search(
    model: _Model, monitor: "_Monitor", seed: int, initial: pyvrp.Solution | None = None
) -> pyvrp.Result:
    """pyvrp.solve() step by step (same calls, same random stream), so that the starting
    solution can have every pinned job on its driver's route.

    PyVRP only tries to insert a job next to its nearest neighbours; a pinned job whose
    driver's route runs elsewhere would never be tried there. Once on that route, it stays.
    """
    data = model.data
    ils = {}
    if data.num_clients >= LARGE_PROBLEM and monitor.time_limit < SHORT_BUDGET_PER_CLIENT * data.num_clients:
        ils["history_length"] = LARGE_HISTORY_LENGTH
    params = pyvrp.SolveParams(ils=IteratedLocalSearchParams(callbacks=monitor, **ils))
    rng = pyvrp.RandomNumberGenerator(seed=seed)
    neighbours = compute_neighbours(data, params.neighbourhood)
    ls = LocalSearch(data, rng, neighbours, PerturbationManager(params.perturbation))
    for op in params.operators:
        if op.supports(data):
            ls.add_operator(op(data))
    pm = PenaltyManager(params.penalty.midpoint_penalties(data), params.penalty)
    if initial is None:
        start = pyvrp.Solution.make_random(data, rng)
        if model.pinned:
            start = _with_pins(data, start, model.pinned)
        init = ls(start, pm.max_cost_evaluator(), exhaustive=True)
    else:
        init = initial
    algo = IteratedLocalSearch(data, pm, ls, init, params.ils)
    return algo.run(monitor, collect_stats=False, display=False)


def _with_pins(data: pyvrp.ProblemData, solution: pyvrp.Solution, pinned: dict[int, int]) -> pyvrp.Solution:
    """`solution` with each pinned client (client -> vehicle type) moved to a route of its type."""
    by_type: dict[int, list[list[int]]] = defaultdict(list)
    for route in solution.routes():
        visits = [a.idx for a in route if a.is_client() and a.idx not in pinned]
        by_type[route.vehicle_type()].append(visits)
    for client, vehicle_type in pinned.items():
        routes = by_type[vehicle_type]
        if not routes:
            routes.append([])
        min(routes, key=len).append(client)
    return pyvrp.Solution(
        data, [pyvrp.Route(data, visits, t) for t, routes in by_type.items() for visits in routes if visits]
    )


class _Monitor(IteratedLocalSearchCallbacks):
    """PyVRP stopping criterion and callbacks: time budget, cancellation, progress reports."""

    def __init__(self, time_limit, on_progress, should_stop, objective, offset):
        self.started = time.perf_counter()
        self.time_limit = time_limit
        self.deadline = self.started + time_limit  # may be set earlier for a first phase
        self.on_progress = on_progress
        self.should_stop = should_stop
        self.objective = objective
        self.offset = offset  # the locked routes' cost, so progress matches the final cost
        self.iterations = 0
        self.best: pyvrp.Solution | None = None
        self.cancelled = False
        self.next_check = self.started + PROGRESS_EVERY

    def on_start(self, ils) -> None:
        self.best = ils.initial_solution

    def on_best(self, best) -> None:
        self.best = best

    def report(self) -> None:
        if self.on_progress is None:
            return
        feasible = self.best is not None and self.best.is_feasible()
        best_cost = None
        if feasible:
            value = self.best.duration() if self.objective == "time" else self.best.distance()
            best_cost = int(value) + self.offset
        self.on_progress(
            {
                "elapsed": round(time.perf_counter() - self.started, 2),
                "best_cost": best_cost,
                "feasible": feasible,
                "iterations": self.iterations,
            }
        )

    def __call__(self, best_cost: int) -> bool:
        self.iterations += 1
        now = time.perf_counter()
        if now >= self.deadline:
            return True
        if now >= self.next_check:
            self.next_check = now + PROGRESS_EVERY
            if self.should_stop is not None and self.should_stop():
                self.cancelled = True
                return True
            self.report()
        return False


def _repair(problem: Problem, vehicle: Vehicle, route: PlannedRoute, jobs: dict[int, Job], durations):
    """Take stops off a route breaking rules (optional first) until it keeps them all."""
    keys = [v.job for v in route.visits]
    removed = []
    while route.violations and keys:
        best = None
        for i, key in enumerate(keys):
            trial = keys[:i] + keys[i + 1 :]
            candidate = plan_route(problem, vehicle, [jobs[k] for k in trial], durations)
            score = (len(candidate.violations), jobs[key].required, candidate.duration)
            if best is None or score < best[0]:
                best = (score, i, candidate)
        _, i, route = best
        removed.append(keys.pop(i))
    return route, removed


REINSERT_AT_MOST = 50  # the fallback below is quadratic; a plan that bad needs a longer search


def _reinsert(problem: Problem, keys: list[int], routes: dict[int, PlannedRoute], vehicles, jobs, durations):
    """Put left-out jobs (required first) where they fit at the least extra cost.

    Every position of every allowed route is screened in O(1) (earliest departures forward,
    latest service starts backward, load peaks; break ignored), ranked by the extra travel, and
    only the best few are then timed in full.
    """
    placed = set()
    for key in sorted(keys, key=lambda k: not jobs[k].required)[:REINSERT_AT_MOST]:
        job = jobs[key]
        options = []
        for vehicle in vehicles:
            if job.allowed_vehicles is not None and vehicle.key not in job.allowed_vehicles:
                continue
            current = routes.get(vehicle.key)
            sequence = [jobs[v.job] for v in current.visits] if current else []
            for position, extra in _insertions(problem, vehicle, sequence, job, durations(vehicle)):
                options.append((extra, vehicle.key, position, sequence, vehicle))
        options.sort(key=lambda o: o[:3])
        for _, vehicle_key, position, sequence, vehicle in options[:10]:
            trial = [*sequence[:position], job, *sequence[position:]]
            candidate = plan_route(problem, vehicle, trial, durations(vehicle))
            if not candidate.violations:
                routes[vehicle_key] = candidate
                placed.add(key)
                break
    return placed


def _insertions(problem: Problem, vehicle: Vehicle, sequence: list[Job], job: Job, T: np.ndarray):
    """(position, extra travel cost) for each place `job` fits in `sequence`, break ignored."""
    n = len(sequence)
    locs = [vehicle.start_location] + [j.location for j in sequence] + [vehicle.end_location]
    # Earliest departure from each node when leaving at the shift start.
    departs = [vehicle.shift_start]
    for i, j in enumerate(sequence):
        departs.append(max(departs[-1] + int(T[locs[i], j.location]), j.tw_start) + j.service)
    # Latest service start at each node (and arrival at the end) that keeps the rest on time.
    latest = [0] * (n + 2)
    latest[n + 1] = vehicle.shift_end
    for i in range(n, 0, -1):
        j = sequence[i - 1]
        latest[i] = min(j.tw_end, latest[i + 1] - int(T[j.location, locs[i + 1]]) - j.service)
    # Load on board after each node; peaks before and after every position.
    loads = [sum(j.delivery for j in sequence)]
    for j in sequence:
        loads.append(loads[-1] - j.delivery + j.pickup)
    peak_before = list(loads)
    for i in range(1, n + 1):
        peak_before[i] = max(peak_before[i - 1], loads[i])
    peak_after = list(loads)
    for i in range(n - 1, -1, -1):
        peak_after[i] = max(peak_after[i + 1], loads[i])
    M = T if problem.objective == "time" else problem.distances
    out = []
    for position in range(n + 1):  # between node `position` and node `position + 1`
        if peak_before[position] + job.delivery > vehicle.capacity:
            continue
        if max(peak_after[position], loads[position]) + job.pickup > vehicle.capacity:
            continue
        begin = max(departs[position] + int(T[locs[position], job.location]), job.tw_start)
        if begin > job.tw_end:
            continue
        if begin + job.service + int(T[job.location, locs[position + 1]]) > latest[position + 1]:
            continue
        a, b = locs[position], locs[position + 1]
        extra = int(M[a, job.location]) + int(M[job.location, b]) - int(M[a, b])
        out.append((position, extra + (job.service if problem.objective == "time" else 0)))
    return out


def solve(
    problem: Problem,
    *,
    time_limit: float,
    seed: int = 0,
    on_progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Solution:
    """Plan the routes: PyVRP for `time_limit` seconds (the model is built inside that budget).

    `on_progress` gets {"elapsed", "best_cost" (None until feasible), "feasible", "iterations"}
    at most every PROGRESS_EVERY seconds, and once at the end; `should_stop` is polled as often
    and ends the search early, keeping the best plan so far. Raises ValueError on an
    inconsistent Problem.
    """
    if not time_limit > 0:
        raise ValueError(f"time_limit must be positive, not {time_limit!r}")
    started = time.perf_counter()
    jobs_by_key, _ = _check(problem)
    durations = _Durations(problem)

    routes, unassigned = [], {}
    locked_keys = set()
    for vehicle in problem.vehicles:
        if vehicle.fixed_route is None:
            continue
        for key in vehicle.fixed_route:
            if key not in jobs_by_key:
                raise ValueError(f"Locked route of vehicle {vehicle.key} holds unknown order {key}")
            if key in locked_keys:
                raise ValueError(f"Order {key} is on two locked routes")
            locked_keys.add(key)
        routes.append(
            plan_route(problem, vehicle, [jobs_by_key[k] for k in vehicle.fixed_route], durations(vehicle))
        )
    open_jobs = [j for j in problem.jobs if j.key not in locked_keys]
    unassigned.update(unservable(problem, open_jobs))
    jobs = [j for j in open_jobs if j.key not in unassigned]
    vehicles = [v for v in problem.vehicles if v.fixed_route is None]
    offset = sum(r.duration if problem.objective == "time" else r.distance for r in routes)

    stats: dict = {"locked_routes": len(routes), "left_out_before_solving": len(unassigned)}
    monitor = _Monitor(time_limit, on_progress, should_stop, problem.objective, offset)
    iterations = 0
    if jobs and vehicles:
        model = _build(problem, jobs, vehicles)
        stats.update(
            build_seconds=round(time.perf_counter() - started, 3),
            vehicle_types=model.data.num_vehicle_types,
            profiles=model.data.num_profiles,
        )
        with warnings.catch_warnings():
            # Expected when required jobs cannot all fit; the repair below deals with it.
            warnings.simplefilter("ignore", PenaltyBoundWarning)
            best = None
            if model.pinned:
                # PyVRP only inserts a job next to its nearest neighbours, so a pinned job can
                # stay out although its driver's route has room. Halfway, put left-out pinned
                # jobs where they fit, then search on from there.
                monitor.deadline = monitor.started + time_limit / 2
                first = _search(model, monitor, seed)
                iterations += first.num_iterations
                best = first.best
                monitor.deadline = monitor.started + time_limit
            if not monitor.cancelled:
                initial = best
                if best is not None and best.is_feasible():
                    solved = _routes(problem, model, best, durations)
                    planned = {visit.job for route in solved.values() for visit in route.visits}
                    left_out = [j.key for j in jobs if j.key not in planned and j.allowed_vehicles]
                    put_back = _reinsert(problem, left_out, solved, vehicles, jobs_by_key, durations)
                    stats["put_back_halfway"] = len(put_back)
                    if put_back:
                        initial = _to_pyvrp(model, solved)
                result = _search(model, monitor, seed, initial)
                iterations += result.num_iterations
                best = result.best
        stats["search_seconds"] = round(time.perf_counter() - started, 3)
        monitor.best = best
        stats.update(
            pyvrp_cost=_objective_cost(model, best) if best.is_feasible() else None,
            cancelled=monitor.cancelled,
        )

        solved = _routes(problem, model, best, durations)
        taken_off = []
        for key, route in solved.items():
            if route.violations:  # PyVRP found no feasible plan, or a break does not fit
                vehicle = next(v for v in vehicles if v.key == key)
                solved[key], removed = _repair(problem, vehicle, route, jobs_by_key, durations(vehicle))
                taken_off += removed
        if taken_off:
            put_back = _reinsert(problem, taken_off, solved, vehicles, jobs_by_key, durations)
            stats["repaired"] = len(taken_off) - len(put_back)
        if model.pinned:  # the same blind spot as halfway, for the last half
            planned = {visit.job for route in solved.values() for visit in route.visits}
            left_out = [j.key for j in jobs if j.key not in planned and j.allowed_vehicles]
            stats["put_back_at_end"] = len(
                _reinsert(problem, left_out, solved, vehicles, jobs_by_key, durations)
            )
        routes += [route for route in solved.values() if route.visits]
        planned = {visit.job for route in solved.values() for visit in route.visits}
        for job in jobs:
            if job.key not in planned:
                unassigned[job.key] = explain(problem, job)
    else:
        for job in jobs:
            unassigned[job.key] = explain(problem, job)

    order = {v.key: i for i, v in enumerate(problem.vehicles)}
    routes.sort(key=lambda r: order[r.vehicle])
    solution = _solution(
        problem, routes, unassigned, time.perf_counter() - started, iterations=iterations, stats=stats
    )
    if on_progress is not None:
        on_progress(
            {
                "elapsed": round(solution.runtime, 2),
                "best_cost": solution.cost if solution.feasible else None,
                "feasible": solution.feasible,
                "iterations": iterations,
            }
        )
    return solution


__all__ = ["DID_NOT_FIT", "evaluate", "plan_route", "solve"]
