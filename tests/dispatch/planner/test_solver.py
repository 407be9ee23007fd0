import time

import numpy as np
import pytest
import pyvrp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatch.planner import solver
from dispatch.planner.problem import Break, Job, Problem, Vehicle
from dispatch.planner.reasons import DID_NOT_FIT, PIN_DID_NOT_FIT, PIN_LOCKED, PIN_NO_SHIFT, explain
from dispatch.planner.solver import evaluate, solve

HOUR = 3600


def grid_problem(points, jobs, vehicles, *, speed=1.0, **options) -> Problem:
    """Euclidean metres between (x, y) points; travel at `speed` m/s."""
    xy = np.array(points, dtype=float)
    metres = np.rint(np.sqrt(((xy[:, None] - xy[None, :]) ** 2).sum(axis=2))).astype(np.int64)
    seconds = np.rint(metres / speed).astype(np.int64)
    return Problem(
        locations=points, durations=seconds, distances=metres, jobs=jobs, vehicles=vehicles, **options
    )


def van(key, capacity=100, start=0, end=0, shift=(8 * HOUR, 18 * HOUR), **kw) -> Vehicle:
    return Vehicle(key, capacity, start, end, shift[0], shift[1], **kw)


# --- an independent checker -----------------------------------------------------------------


def check_routes(problem: Problem, solution) -> None:
    """Every route keeps every rule, recomputed from the matrices (not from the solver's code)."""
    jobs = {j.key: j for j in problem.jobs}
    vehicles = {v.key: v for v in problem.vehicles}
    seen = []
    for route in solution.routes:
        v = vehicles[route.vehicle]
        T = np.rint(problem.durations / v.speed_factor).astype(np.int64)
        assert route.violations == []
        assert v.shift_start <= route.start and route.end <= v.shift_end
        load = sum(jobs[x.job].delivery for x in route.visits)
        assert route.load_start == load <= v.capacity
        t, here, distance = route.start, v.start_location, 0
        for x in route.visits:
            job = jobs[x.job]
            seen.append(job.key)
            assert job.allowed_vehicles is None or v.key in job.allowed_vehicles
            assert x.arrival == t + T[here, job.location]
            assert x.start == max(x.arrival, job.tw_start) and x.start <= job.tw_end
            assert x.departure == x.start + job.service
            load += job.pickup - job.delivery
            assert x.load_after == load and 0 <= load <= v.capacity
            distance += problem.distances[here, job.location]
            t, here = x.departure, job.location
        assert route.end == t + T[here, v.end_location]
        assert route.distance == distance + problem.distances[here, v.end_location]
        assert route.duration == route.end - route.start
    assert len(seen) == len(set(seen)), "a job on two routes"
    assert set(seen) | set(solution.unassigned) == set(jobs) and not set(seen) & set(solution.unassigned)


def alone_feasible(problem: Problem, job: Job, v: Vehicle) -> bool:
    T = np.rint(problem.durations / v.speed_factor).astype(np.int64)
    out, back = T[v.start_location, job.location], T[job.location, v.end_location]
    begin = max(v.shift_start + out, job.tw_start)
    brk = v.brk.duration if v.brk else 0
    return (
        begin <= job.tw_end
        and begin + job.service + back <= v.shift_end
        and out + job.service + back + brk <= v.shift_end - v.shift_start
    )


def check_reasons(problem: Problem, solution) -> None:
    """Every reason given for a left-out job is true."""
    jobs = {j.key: j for j in problem.jobs}
    free = [v for v in problem.vehicles if v.fixed_route is None]
    for key, reason in solution.unassigned.items():
        job = jobs[key]
        allowed = [v for v in free if job.allowed_vehicles is None or v.key in job.allowed_vehicles]
        need = max(job.delivery, job.pickup)
        if reason == PIN_NO_SHIFT:
            assert not job.allowed_vehicles & {v.key for v in problem.vehicles}
        elif reason == PIN_LOCKED:
            assert not allowed and job.allowed_vehicles & {v.key for v in problem.vehicles}
        elif reason.startswith("Needs "):
            assert allowed and all(need > v.capacity for v in allowed)
            largest = max(v.capacity for v in allowed)
            assert reason == f"Needs {need} parcels of space; the largest vehicle carries {largest}"
        elif reason.startswith("No shift reaches it"):
            assert not any(alone_feasible(problem, job, v) for v in allowed if v.capacity >= need)
        else:
            assert reason == (DID_NOT_FIT if job.allowed_vehicles is None else PIN_DID_NOT_FIT)
            assert any(alone_feasible(problem, job, v) and v.capacity >= need for v in allowed)


# --- random instances -----------------------------------------------------------------------


@st.composite
def instances(draw, trivially_feasible=False):
    n_jobs = draw(st.integers(0, 12))
    n_vehicles = draw(st.integers(1, 3))
    coord = st.integers(0, 2000)
    points = [(draw(coord), draw(coord)) for _ in range(2 + n_jobs)]  # two depots, then jobs
    max_service = 300
    vehicles = []
    for k in range(n_vehicles):
        start = draw(st.integers(0, 4 * HOUR))
        vehicles.append(
            Vehicle(
                key=10 + k,
                capacity=draw(st.integers(1, 15)),
                start_location=draw(st.integers(0, 1)),
                end_location=draw(st.integers(0, 1)),
                shift_start=start,
                shift_end=start + draw(st.integers(HOUR // 4, 6 * HOUR)),
                speed_factor=draw(st.sampled_from([1.0, 1.0, 0.6])),
            )
        )
    keys = [v.key for v in vehicles]
    jobs = []
    for i in range(n_jobs):
        tw_start = draw(st.integers(0, 8 * HOUR))
        pin = draw(st.sampled_from([None, None, None, "one", "absent"]))
        allowed = None
        if pin == "one":
            allowed = frozenset({draw(st.sampled_from(keys))})
        elif pin == "absent":
            allowed = frozenset({99})
        jobs.append(
            Job(
                key=100 + i,
                location=2 + i,
                delivery=draw(st.integers(0, 12)),
                pickup=draw(st.integers(0, 6)),
                service=draw(st.integers(0, max_service)),
                tw_start=tw_start,
                tw_end=tw_start + draw(st.integers(0, 4 * HOUR)),
                required=draw(st.booleans()),
                allowed_vehicles=allowed,
            )
        )
    if trivially_feasible:
        # One vehicle alone could serve everything in order of window start: room for every
        # job, and windows longer than any path through all of them.
        total = sum(j.delivery + j.pickup for j in jobs) or 1
        vehicles = [
            Vehicle(v.key, total, v.start_location, v.end_location, 0, 40 * HOUR, speed_factor=v.speed_factor)
            for v in vehicles
        ]
        slack = 13 * (4000 * 2 + max_service)
        jobs = [
            Job(
                j.key,
                j.location,
                j.delivery,
                j.pickup,
                j.service,
                j.tw_start,
                j.tw_start + slack,
                j.required,
                None if j.allowed_vehicles == frozenset({99}) else j.allowed_vehicles,
            )
            for j in jobs
        ]
    objective = draw(st.sampled_from(["time", "distance"]))
    return grid_problem(points, jobs, vehicles, speed=5.0, objective=objective, balance=draw(st.booleans()))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=instances())
def test_random_plans_keep_every_rule_and_every_reason_is_true(problem):
    solution = solve(problem, time_limit=0.2)
    check_routes(problem, solution)
    check_reasons(problem, solution)
    assert solution.feasible


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=instances(trivially_feasible=True))
def test_everything_is_served_when_it_trivially_fits(problem):
    solution = solve(problem, time_limit=0.25)
    check_routes(problem, solution)
    assert solution.unassigned == {}  # required and normal priority alike


# --- one rule at a time -----------------------------------------------------------------------


def test_minimising_time_and_distance_give_different_orders():
    # 0 -> A -> B -> 0 is 30 m but 100 s; 0 -> B -> A -> 0 is 40 m but 50 s.
    distances = np.array([[0, 10, 15], [15, 0, 10], [10, 10, 0]])
    durations = np.array([[0, 40, 20], [20, 0, 30], [30, 10, 0]])
    jobs = [Job(1, 1), Job(2, 2)]

    def order(objective):
        problem = Problem(
            [(0, 0)] * 3, durations, distances, jobs, [van(7, shift=(0, 1000))], objective=objective
        )
        solution = solve(problem, time_limit=0.2)
        return [x.job for x in solution.routes[0].visits], solution.cost

    assert order("distance") == ([1, 2], 30)
    assert order("time") == ([2, 1], 50)


def test_balance_spreads_the_work_between_drivers():
    points = [(0, 0)] + [(100 + 10 * i, 0) for i in range(8)]
    jobs = [Job(i, i, service=600) for i in range(1, 9)]
    vehicles = [van(1, shift=(0, 10 * HOUR)), van(2, shift=(0, 10 * HOUR))]
    unbalanced = solve(grid_problem(points, jobs, vehicles, objective="distance"), time_limit=0.3)
    balanced = solve(grid_problem(points, jobs, vehicles, objective="distance", balance=True), time_limit=0.3)
    assert [len(r.visits) for r in unbalanced.routes] == [8]  # one trip is the shortest
    assert sorted(len(r.visits) for r in balanced.routes) == [4, 4]


def test_pickups_ride_with_deliveries_within_capacity():
    points = [(0, 0), (100, 0), (200, 0), (300, 0)]
    jobs = [Job(1, 1, delivery=6), Job(2, 2, pickup=6), Job(3, 3, delivery=4)]
    problem = grid_problem(points, jobs, [van(1, capacity=10)])
    solution = solve(problem, time_limit=0.2)
    check_routes(problem, solution)
    assert solution.unassigned == {} and max(x.load_after for x in solution.routes[0].visits) <= 10


def test_required_job_is_kept_and_normal_one_left_out_when_both_cannot_fit():
    points = [(0, 0), (100, 0), (-100, 0)]
    jobs = [Job(1, 1, delivery=8, required=False), Job(2, 2, delivery=8, required=True)]
    solution = solve(grid_problem(points, jobs, [van(1, capacity=10)]), time_limit=0.2)
    assert [x.job for x in solution.routes[0].visits] == [2]
    assert solution.unassigned == {1: DID_NOT_FIT}


def test_normal_job_far_away_is_still_served_when_it_fits():
    points = [(0, 0), (100, 0), (40_000, 0)]  # 40 km out and back for one parcel
    jobs = [Job(1, 1, required=False), Job(2, 2, required=False)]
    for objective in ("time", "distance"):
        problem = grid_problem(points, jobs, [van(1)], speed=10.0, objective=objective, balance=True)
        assert solve(problem, time_limit=0.2).unassigned == {}


def test_pins_keep_jobs_on_their_driver_inside_the_search():
    # Driver 2 starts 1 km away, so without the pin driver 1 would take order 1 on its way.
    points = [(0, 0), (1000, 0), (100, 0), (110, 0), (-100, 0)]
    jobs = [Job(1, 2, allowed_vehicles=frozenset({2})), Job(2, 3), Job(3, 4, allowed_vehicles=frozenset({1}))]
    problem = grid_problem(points, jobs, [van(1), van(2, start=1, end=1)], objective="distance")
    solution = solve(problem, time_limit=0.2)
    check_routes(problem, solution)
    by_vehicle = {r.vehicle: [x.job for x in r.visits] for r in solution.routes}
    assert 1 in by_vehicle[2] and 3 in by_vehicle[1]
    assert "repaired" not in solution.stats  # PyVRP kept the pin itself, nothing was fixed afterwards


def test_unassigned_reasons_name_the_obstacle():
    points = [(0, 0), (100, 0), (200, 0), (50_000, 0), (300, 0)]
    jobs = [
        Job(1, 1, allowed_vehicles=frozenset({42})),  # driver 42 has no shift
        Job(2, 2, delivery=50),
        Job(3, 3, tw_start=9 * HOUR, tw_end=10 * HOUR),  # 50 km at 5 m/s: 2 h 47 min away
        Job(4, 4, allowed_vehicles=frozenset({2})),  # driver 2's route is locked
    ]
    vehicles = [van(1, capacity=20), van(2, capacity=5, fixed_route=())]
    problem = grid_problem(points, jobs, vehicles, speed=5.0)
    solution = solve(problem, time_limit=0.2)
    assert solution.unassigned == {
        1: PIN_NO_SHIFT,
        2: "Needs 50 parcels of space; the largest vehicle carries 20",
        3: "No shift reaches it in its window 09:00–10:00",
        4: PIN_LOCKED,
    }
    check_reasons(problem, solution)


def test_required_jobs_that_cannot_all_fit_leave_a_feasible_plan():
    # Two required stops 1 km apart, both only 09:00–09:01, one driver: only one can be served.
    points = [(0, 0), (500, 0), (-500, 0)]
    jobs = [
        Job(1, 1, tw_start=9 * HOUR, tw_end=9 * HOUR + 60),
        Job(2, 2, tw_start=9 * HOUR, tw_end=9 * HOUR + 60),
    ]
    problem = grid_problem(points, jobs, [van(1)])
    solution = solve(problem, time_limit=0.2)
    check_routes(problem, solution)
    assert solution.feasible and len(solution.unassigned) == 1
    assert list(solution.unassigned.values()) == [DID_NOT_FIT]


def test_locked_route_is_kept_as_it_is_even_when_it_is_bad():
    points = [(0, 0), (100, 0), (-100, 0), (200, 0), (-200, 0)]
    jobs = [Job(i, i) for i in range(1, 5)]
    locked = van(1, fixed_route=(3, 1))  # zig-zags, still kept
    problem = grid_problem(points, jobs, [locked, van(2)], objective="distance")
    solution = solve(problem, time_limit=0.2)
    routes = {r.vehicle: [x.job for x in r.visits] for r in solution.routes}
    assert routes[1] == [3, 1]
    assert sorted(routes[2]) == [2, 4]
    assert solution.stats["locked_routes"] == 1


def test_speed_factor_makes_a_slow_vehicle_take_longer():
    points = [(0, 0), (1000, 0)]
    problem = grid_problem(points, [Job(1, 1)], [van(1, speed_factor=0.5, shift=(0, 2 * HOUR))])
    visit = solve(problem, time_limit=0.1).routes[0].visits[0]
    assert visit.arrival == 2000  # 1 km at 1 m/s, at half that speed


def test_vehicle_may_end_somewhere_else():
    points = [(0, 0), (500, 0), (1000, 0)]
    problem = grid_problem(points, [Job(1, 1)], [van(1, start=0, end=2)], objective="distance")
    route = solve(problem, time_limit=0.1).routes[0]
    assert route.distance == 1000


def test_break_fits_in_a_wait_without_delaying_anyone():
    points = [(0, 0), (100, 0), (200, 0)]
    jobs = [
        Job(1, 1, tw_start=11 * HOUR, tw_end=11 * HOUR + 600),
        Job(2, 2, tw_start=13 * HOUR, tw_end=14 * HOUR),
    ]
    vehicle = van(1, brk=Break(start_earliest=12 * HOUR, start_latest=13 * HOUR, duration=1800))
    solution = solve(grid_problem(points, jobs, [vehicle]), time_limit=0.2)
    route = solution.routes[0]
    assert route.violations == [] and route.break_start == 12 * HOUR
    # Leaves as late as stop 1's window allows, then the break fills the wait for stop 2.
    assert [(x.arrival, x.start) for x in route.visits] == [
        (11 * HOUR + 600, 11 * HOUR + 600),
        (12 * HOUR + 1800 + 100, 13 * HOUR),
    ]


def test_break_is_placed_where_it_breaks_the_least_and_says_so():
    # Stop 1 at 12:00 sharp, stop 2 by 12:10, the break due at 12:00: taking it 100 s late
    # (after stop 2) beats making stop 2 wait for the whole break.
    points = [(0, 0), (100, 0), (200, 0)]
    jobs = [
        Job(1, 1, tw_start=12 * HOUR, tw_end=12 * HOUR),
        Job(2, 2, tw_start=12 * HOUR, tw_end=12 * HOUR + 600),
    ]
    vehicle = van(1, brk=Break(start_earliest=12 * HOUR, start_latest=12 * HOUR, duration=1800))
    route = evaluate(grid_problem(points, jobs, [vehicle]), {1: [1, 2]}).routes[0]
    assert route.break_start == 12 * HOUR + 100
    assert route.violations == ["The break starts at 12:01, after 12:00"]
    assert route.end == 12 * HOUR + 100 + 1800 + 200


def test_timeline_matches_pyvrps_own_schedule():
    rng = np.random.default_rng(3)
    points = [(0, 0)] + [tuple(rng.integers(-3000, 3000, 2)) for _ in range(30)]
    jobs = []
    for i in range(1, 31):
        start = int(rng.integers(8 * HOUR, 15 * HOUR))
        jobs.append(Job(i, i, delivery=1, service=120, tw_start=start, tw_end=start + HOUR))
    problem = grid_problem(points, jobs, [van(k, capacity=12) for k in range(4)], speed=8.0)
    solution = solve(problem, time_limit=0.5)
    model = solver._build(problem, problem.jobs, problem.vehicles)
    client_of = {job.key: i for i, job in enumerate(model.jobs)}
    for route in solution.routes:
        theirs = pyvrp.Route(model.data, [client_of[x.job] for x in route.visits], 0)
        assert theirs.is_feasible()
        assert (route.start, route.end, route.duration) == (
            theirs.start_time(),
            theirs.end_time(),
            theirs.duration(),
        )
        assert [x.start for x in route.visits] == [a.start_time for a in theirs if a.is_client()]


def test_progress_is_reported_and_a_stop_request_ends_the_search():
    points = [(0, 0)] + [(100 * i, 50 * (i % 3)) for i in range(1, 20)]
    problem = grid_problem(points, [Job(i, i) for i in range(1, 20)], [van(1), van(2)])
    reports = []
    started = time.monotonic()
    solution = solve(
        problem, time_limit=60, on_progress=reports.append, should_stop=lambda: len(reports) >= 2
    )
    assert time.monotonic() - started < 10  # stopped long before the 60 s budget
    assert solution.stats["cancelled"] and solution.unassigned == {}
    assert set(reports[0]) == {"elapsed", "best_cost", "feasible", "iterations"}
    assert reports[-1]["best_cost"] == solution.cost and reports[-1]["feasible"]
    assert all(b["elapsed"] - a["elapsed"] >= 0.4 for a, b in zip(reports[:-2], reports[1:-1], strict=True))


def test_explain_without_obstacle_says_it_did_not_fit():
    problem = grid_problem([(0, 0), (10, 0)], [Job(1, 1)], [van(1)])
    assert explain(problem, problem.jobs[0]) == DID_NOT_FIT


# --- evaluate(): a dispatcher's hand-made plan ---------------------------------------------------


def test_evaluate_reports_late_arrival_overload_and_wrong_driver():
    points = [(0, 0), (3600, 0), (7200, 0)]
    jobs = [
        Job(812, 1, delivery=8, tw_start=8 * HOUR, tw_end=8 * HOUR + 1800),
        Job(813, 2, delivery=5, tw_start=8 * HOUR, tw_end=9 * HOUR, allowed_vehicles=frozenset({2})),
        Job(814, 1),
    ]
    problem = grid_problem(points, jobs, [van(1, capacity=10, shift=(8 * HOUR, 10 * HOUR)), van(2)])
    solution = evaluate(problem, {1: [812, 813]})
    route = solution.routes[0]
    assert [x.arrival for x in route.visits] == [9 * HOUR, 10 * HOUR]
    assert route.violations == [
        "Overloaded at the start: 13 parcels to deliver, the vehicle carries 10",
        "Stop 1 (order 812) arrives 09:00, after its window closes at 08:30",
        "Stop 2 (order 813) arrives 10:00, after its window closes at 09:00",
        "Stop 2 (order 813) is pinned to another driver",
        "Back at 12:00, after the shift ends at 10:00",
    ]
    assert not solution.feasible
    assert solution.unassigned == {814: "not on any route"}


def test_evaluate_reports_overload_after_a_pickup():
    points = [(0, 0), (10, 0), (20, 0)]
    jobs = [Job(1, 1, pickup=7), Job(2, 2, pickup=7)]
    route = evaluate(grid_problem(points, jobs, [van(1, capacity=10)]), {1: [1, 2]}).routes[0]
    assert route.violations == [
        "Overloaded after stop 2 (order 2): 14 parcels on board, the vehicle carries 10"
    ]
    assert [x.load_after for x in route.visits] == [7, 14]


def test_evaluate_of_a_solved_plan_finds_nothing_wrong():
    points = [(0, 0)] + [(200 * i, 0) for i in range(1, 6)]
    jobs = [
        Job(i, i, delivery=2, pickup=1, service=60, tw_start=8 * HOUR, tw_end=12 * HOUR) for i in range(1, 6)
    ]
    problem = grid_problem(points, jobs, [van(1, capacity=8), van(2, capacity=8)])
    solved = solve(problem, time_limit=0.2)
    again = evaluate(problem, {r.vehicle: [x.job for x in r.visits] for r in solved.routes})
    assert again.feasible and again.routes == solved.routes and again.cost == solved.cost


def test_evaluate_rejects_an_order_on_two_routes():
    problem = grid_problem([(0, 0), (10, 0)], [Job(1, 1)], [van(1), van(2)])
    with pytest.raises(ValueError, match="Order 1 is on two routes"):
        evaluate(problem, {1: [1], 2: [1]})


def test_pins_beyond_the_memory_budget_are_still_kept(monkeypatch):
    monkeypatch.setattr(solver, "PROFILE_BYTES", 0)  # room for two profiles only
    points = [(0, 0)] + [(100 * i, 100 * (i % 2)) for i in range(1, 10)]
    jobs = [Job(i, i, allowed_vehicles=frozenset({i % 3 + 1}) if i <= 6 else None) for i in range(1, 10)]
    problem = grid_problem(points, jobs, [van(1), van(2), van(3)], objective="distance")
    solution = solve(problem, time_limit=0.3)
    check_routes(problem, solution)  # every job on a driver it is pinned to
    assert solution.stats["profiles"] <= 2 and solution.unassigned == {}
