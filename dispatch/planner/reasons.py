"""Why an order could not be planned, in words a dispatcher can act on.

`unservable()` finds the jobs that no available vehicle could serve even on a route of their
own (pinned to an absent driver, too big for every vehicle, out of reach inside the window);
the solver leaves those out before it starts. Any other job the solver leaves out simply did
not fit among the others. Vehicles with a locked route (`fixed_route`) take no new work, so
they count as unavailable here.
"""

from collections.abc import Iterable

import numpy as np

from dispatch.planner.matrix import scaled_durations
from dispatch.planner.problem import Job, Problem

DID_NOT_FIT = "Did not fit: the routes are full in its window (capacity or time)"
PIN_DID_NOT_FIT = "Did not fit: its pinned driver's route is full in its window (capacity or time)"
NO_DRIVER = "No driver has a shift that day"
PIN_NO_SHIFT = "Pinned to a driver who has no shift that day"
PIN_LOCKED = "Pinned to a driver whose route is locked"
OPEN_END = 2**39  # a window ending after this is no window at all (Job.tw_end defaults to 2**40)


def format_time(problem: Problem, t: int) -> str:
    """HH:MM for clock times (seconds since midnight), else the instance's own number."""
    if problem.clock:
        t = int(t)
        day, rest = divmod(t, 86_400)
        text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}"
        return text if day == 0 else f"{text} (+{day}d)"
    value = t / problem.scale
    return f"{value:g}" if problem.scale != 1 else str(int(t))


def _window(problem: Problem, job: Job) -> str:
    return f"{format_time(problem, job.tw_start)}–{format_time(problem, job.tw_end)}"


def unservable(problem: Problem, jobs: Iterable[Job] | None = None) -> dict[int, str]:
    """{job key: reason} for the jobs no available vehicle can serve, even alone on its route.

    Vectorised over jobs, one pass per vehicle: cheap enough to run on every plan.
    """
    jobs = list(problem.jobs if jobs is None else jobs)
    if not jobs:
        return {}
    vehicles = [v for v in problem.vehicles if v.fixed_route is None]
    locked = {v.key for v in problem.vehicles if v.fixed_route is not None}

    loc = np.array([j.location for j in jobs], dtype=np.int64)
    need = np.array([max(j.delivery, j.pickup) for j in jobs], dtype=np.int64)
    tw_start = np.array([j.tw_start for j in jobs], dtype=np.int64)
    tw_end = np.array([j.tw_end for j in jobs], dtype=np.int64)
    service = np.array([j.service for j in jobs], dtype=np.int64)
    pinned = np.array([j.allowed_vehicles is not None for j in jobs])

    any_allowed = np.zeros(len(jobs), dtype=bool)
    max_cap = np.full(len(jobs), -1, dtype=np.int64)  # largest capacity among allowed vehicles
    any_reach = np.zeros(len(jobs), dtype=bool)
    by_factor: dict[float, np.ndarray] = {}
    for vehicle in vehicles:
        allowed = ~pinned
        for i in np.flatnonzero(pinned):
            if vehicle.key in jobs[i].allowed_vehicles:
                allowed[i] = True
        if not allowed.any():
            continue
        durations = by_factor.get(vehicle.speed_factor)
        if durations is None:
            durations = by_factor[vehicle.speed_factor] = scaled_durations(
                problem.durations, vehicle.speed_factor
            )
        out = durations[vehicle.start_location, loc]
        back = durations[loc, vehicle.end_location]
        begin = np.maximum(vehicle.shift_start + out, tw_start)
        brk = vehicle.brk.duration if vehicle.brk else 0
        reach = (
            (begin <= tw_end)
            & (begin + service + back <= vehicle.shift_end)
            & (out + service + back + brk <= vehicle.shift_end - vehicle.shift_start)
        )
        any_allowed |= allowed
        max_cap = np.where(allowed, np.maximum(max_cap, vehicle.capacity), max_cap)
        any_reach |= allowed & (need <= vehicle.capacity) & reach

    reasons = {}
    for i in np.flatnonzero(~any_reach):
        job = jobs[i]
        if not any_allowed[i]:
            if job.allowed_vehicles is None:
                reasons[job.key] = NO_DRIVER
            elif job.allowed_vehicles & locked:
                reasons[job.key] = PIN_LOCKED
            else:
                reasons[job.key] = PIN_NO_SHIFT
        elif need[i] > max_cap[i]:
            reasons[job.key] = f"Needs {need[i]} parcels of space; the largest vehicle carries {max_cap[i]}"
        elif job.tw_start <= 0 and job.tw_end >= OPEN_END:
            reasons[job.key] = "No shift can get there and back before the shift ends"
        else:
            reasons[job.key] = f"No shift reaches it in its window {_window(problem, job)}"
    return reasons


def explain(problem: Problem, job: Job) -> str:
    """Why `job` is not on any route: its own obstacle if it has one, else it did not fit."""
    default = DID_NOT_FIT if job.allowed_vehicles is None else PIN_DID_NOT_FIT
    return unservable(problem, [job]).get(job.key, default)
