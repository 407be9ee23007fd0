"""The VRPTW exchange format of `manage.py solve_vrp` (../shared/benchdata/vrptw/README.md).

Input: one JSON object (depot, vehicles, stops, distance convention, time_limit). Output:
{"routes": [[stop ids in visiting order], ...], "cost": ..., "unassigned": {id: reason}}.

Distance conventions:
- "euclidean" with "rounding": "trunc1": the DIMACS convention, distance = travel time =
  floor(10·√(dx² + dy²)) / 10. PyVRP needs integers, so the whole instance is scaled by 10
  (`Problem.scale`): matrix entries are floor(10·d) exactly, and times, windows and service
  durations are multiplied by 10. Truncation to one decimal is then exact, and "cost" in the
  output is divided by 10 again (C101: 827.3).
- "haversine": x is the longitude and y the latitude in degrees; distances are great-circle
  metres (× "detour", default 1) and travel times follow from "speed_kmh"; times are seconds
  since midnight.
- "matrix": "matrix" is a square list of integer travel times that are also the costs; row and
  column 0 are the depot, k is stops[k-1]. Whenever present it is authoritative.

Optional extensions beyond the README: "objective" ("distance", the default, or "time"), and
per stop "required" (default true; false lets the planner leave it out at a penalty).
"""

import math
from numbers import Real

import numpy as np

from dispatch.planner.matrix import StraightLineModel
from dispatch.planner.problem import Job, Problem, Solution, Vehicle

DEFAULT_TIME_LIMIT = 10.0
OPEN = 2**40  # no window / no shift end


def _number(obj: dict, field: str, where: str, default: float | None = None) -> float:
    value = obj.get(field, default)
    if value is None:
        raise ValueError(f"{where}.{field} is missing")
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"{where}.{field} must be a number, not {value!r}")
    return float(value)


def _integer(obj: dict, field: str, where: str, default: int | None = None, minimum: int = 0) -> int:
    value = _number(obj, field, where, default)
    if value != int(value):
        raise ValueError(f"{where}.{field} must be a whole number, not {obj.get(field)!r}")
    if value < minimum:
        raise ValueError(f"{where}.{field} must be at least {minimum}, not {int(value)}")
    return int(value)


def _object(data: dict, field: str) -> dict:
    value = data.get(field)
    if not isinstance(value, dict):
        raise ValueError(f"{field} must be an object")
    return value


def problem_from_exchange(data: dict) -> tuple[Problem, float]:
    """(Problem, time limit in seconds) for one exchange-format instance; ValueError names the bad field."""
    if not isinstance(data, dict):
        raise ValueError("the instance must be a JSON object")
    kind = data.get("distance", "euclidean")
    if kind not in ("euclidean", "haversine", "matrix"):
        raise ValueError(f"distance must be 'euclidean', 'haversine' or 'matrix', not {kind!r}")
    if "matrix" in data:
        kind = "matrix"  # authoritative whenever present
    objective = data.get("objective", "distance")
    if objective not in ("distance", "time"):
        raise ValueError(f"objective must be 'distance' or 'time', not {objective!r}")
    time_limit = _number(data, "time_limit", "instance", DEFAULT_TIME_LIMIT)
    if time_limit <= 0:
        raise ValueError(f"time_limit must be positive, not {time_limit:g}")

    scale = 1
    if kind == "euclidean":
        rounding = data.get("rounding", "trunc1")
        if rounding != "trunc1":
            raise ValueError(f"rounding must be 'trunc1' for euclidean distances, not {rounding!r}")
        scale = 10

    def time_value(obj: dict, field: str, where: str, default: float) -> int:
        value = _number(obj, field, where, default)
        if value < 0:
            raise ValueError(f"{where}.{field} must not be negative, not {value:g}")
        return min(OPEN, round(value * scale))

    depot = _object(data, "depot")
    fleet = _object(data, "vehicles")
    stops = data.get("stops")
    if not isinstance(stops, list):
        raise ValueError("stops must be a list")

    need_xy = kind != "matrix"
    points = []
    for where, obj in [("depot", depot)] + [(f"stops[{i}]", s) for i, s in enumerate(stops)]:
        if not isinstance(obj, dict):
            raise ValueError(f"{where} must be an object")
        if need_xy or ("x" in obj and "y" in obj):
            points.append((_number(obj, "x", where), _number(obj, "y", where)))
        else:
            points.append((0.0, 0.0))

    n = len(points)
    if kind == "euclidean":
        xy = np.array(points)
        gaps = xy[:, None, :] - xy[None, :, :]
        distances = np.floor(10 * np.sqrt((gaps**2).sum(axis=2))).astype(np.int64)
        durations = distances
        locations = points
    elif kind == "haversine":
        speed = _number(data, "speed_kmh", "instance")
        detour = _number(data, "detour", "instance", 1.0)
        if speed <= 0:
            raise ValueError(f"speed_kmh must be positive, not {speed:g}")
        if detour < 1:
            raise ValueError(f"detour must be at least 1, not {detour:g}")
        for i, (x, y) in enumerate(points):
            if not (-180 <= x <= 180 and -90 <= y <= 90):
                where = "depot" if i == 0 else f"stops[{i - 1}]"
                raise ValueError(f"{where} has x={x:g}, y={y:g}: not a longitude and latitude")
        locations = [(y, x) for x, y in points]  # Problem.locations are (lat, lng)
        durations, distances = StraightLineModel(speed_kmh=speed, detour=detour).matrices(locations)
    else:
        matrix = data.get("matrix")
        if (
            not isinstance(matrix, list)
            or len(matrix) != n
            or any(not isinstance(row, list) or len(row) != n for row in matrix)
        ):
            raise ValueError(f"matrix must be a {n}×{n} list of lists (the depot and {n - 1} stops)")
        try:
            values = np.array(matrix, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError("matrix must hold only numbers") from None
        if not np.isfinite(values).all() or (values < 0).any() or (values != np.floor(values)).any():
            raise ValueError("matrix must hold non-negative whole numbers")
        distances = durations = values.astype(np.int64)
        locations = points

    tw_start = time_value(depot, "tw_start", "depot", 0)
    tw_end = time_value(depot, "tw_end", "depot", OPEN)
    shift_start = max(tw_start, time_value(fleet, "shift_start", "vehicles", 0))
    shift_end = min(tw_end, time_value(fleet, "shift_end", "vehicles", OPEN))
    if shift_end < shift_start:
        raise ValueError("vehicles.shift_end is before vehicles.shift_start (or outside the depot's hours)")
    count = _integer(fleet, "count", "vehicles", minimum=1)
    capacity = _integer(fleet, "capacity", "vehicles")
    vehicles = [
        Vehicle(
            key=k,
            capacity=capacity,
            start_location=0,
            end_location=0,
            shift_start=shift_start,
            shift_end=shift_end,
        )
        for k in range(count)
    ]

    jobs, seen = [], set()
    for i, stop in enumerate(stops, start=1):
        where = f"stops[{i - 1}]"
        key = stop.get("id")
        if isinstance(key, bool) or not isinstance(key, int):
            raise ValueError(f"{where}.id must be an integer, not {key!r}")
        if key in seen:
            raise ValueError(f"{where}.id {key} is used twice")
        seen.add(key)
        required = stop.get("required", True)
        if not isinstance(required, bool):
            raise ValueError(f"{where}.required must be true or false")
        job = Job(
            key=key,
            location=i,
            delivery=_integer(stop, "demand", where, 0),
            pickup=_integer(stop, "pickup", where, 0),
            service=time_value(stop, "service", where, 0),
            tw_start=time_value(stop, "tw_start", where, 0),
            tw_end=time_value(stop, "tw_end", where, OPEN),
            required=required,
        )
        if job.tw_end < job.tw_start:
            raise ValueError(
                f"{where}: tw_end ({stop.get('tw_end')}) is before tw_start ({stop.get('tw_start')})"
            )
        jobs.append(job)

    problem = Problem(
        locations=[(float(a), float(b)) for a, b in locations],
        durations=durations,
        distances=distances,
        jobs=jobs,
        vehicles=vehicles,
        objective=objective,
        clock=kind == "haversine",
        scale=scale,
    )
    return problem, time_limit


def solution_to_exchange(problem: Problem, solution: Solution) -> dict:
    """{"routes": [[stop ids]...], "cost": ..., "unassigned": {id: reason}} (unassigned only if any)."""
    cost = solution.cost / problem.scale if problem.scale != 1 else solution.cost
    out: dict = {
        "routes": [[visit.job for visit in route.visits] for route in solution.routes if route.visits],
        "cost": round(cost, 6) if isinstance(cost, float) else cost,
    }
    if solution.unassigned:
        out["unassigned"] = {str(key): reason for key, reason in solution.unassigned.items()}
    return out
