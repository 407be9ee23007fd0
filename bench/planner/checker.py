"""An independent feasibility checker and cost calculator for exchange-format answers.

It works only from the exchange JSON instance (see ../shared/benchdata/vrptw/README.md) and an
answer `{"routes": [[stop ids...], ...]}`, and deliberately imports nothing from
`dispatch.planner`: a bug in the planner's own matrix or evaluation must not hide here.

Rules checked:
- every stop is visited exactly once (unknown ids, the depot inside a route, duplicates and
  missing stops are each a violation);
- the load never exceeds the capacity: a route leaves the depot with all its deliveries on
  board, drops `demand` at each stop and collects `pickup` there;
- service starts inside each stop's window (arriving early and waiting is allowed); a vehicle
  leaves the depot at its shift start (or the depot's opening) at the earliest;
- every vehicle is back at the depot by the depot's closing time and its shift end;
- no more routes than vehicles.

Distances and travel times follow the instance's convention: `euclidean` + `trunc1` is
floor(10 * sqrt(dx^2 + dy^2)) / 10 per leg, summed (travel time = distance); `matrix` takes the
matrix entries as travel times and costs; `haversine` uses great-circle metres and
`speed_kmh` (time in seconds, not rounded; a 1e-6 tolerance applies).

Heterogeneous fleets (the city benchmark) give `"vehicles"` as a list of
`{"id", "capacity", "shift_start", "shift_end"}`; an answer then names the vehicle of each route
in `"vehicles": [vehicle id, ...]` (parallel to `"routes"`), or lists one route per vehicle in
fleet order.
"""

import math
from typing import NamedTuple

EARTH_RADIUS_M = 6_371_000.0
_EPS = 1e-6


class CheckResult(NamedTuple):
    feasible: bool
    distance: float  # summed travel cost in the instance's unit (trunc1 distance, matrix entries)
    violations: list[str]


class _Fleet(NamedTuple):
    ids: list
    capacity: dict
    shift_start: dict
    shift_end: dict


def _fleet(instance: dict) -> _Fleet:
    vehicles = instance["vehicles"]
    if isinstance(vehicles, list):
        ids = [v.get("id", i) for i, v in enumerate(vehicles)]
        return _Fleet(
            ids,
            {vid: v["capacity"] for vid, v in zip(ids, vehicles, strict=True)},
            {vid: v.get("shift_start", 0) for vid, v in zip(ids, vehicles, strict=True)},
            {vid: v.get("shift_end", math.inf) for vid, v in zip(ids, vehicles, strict=True)},
        )
    ids = list(range(vehicles["count"]))
    return _Fleet(
        ids,
        dict.fromkeys(ids, vehicles["capacity"]),
        dict.fromkeys(ids, vehicles.get("shift_start", 0)),
        dict.fromkeys(ids, vehicles.get("shift_end", math.inf)),
    )


def _travel(instance: dict):
    """(scale, leg(a, b)) where leg gives the travel time = cost between two point dicts, in units
    of 1/scale of the instance's unit (trunc1 works in exact integer tenths)."""
    kind = instance.get("distance", "euclidean")
    if "matrix" in instance:  # authoritative whenever present
        matrix = instance["matrix"]
        index = {instance["depot"]["id"]: 0} | {s["id"]: k + 1 for k, s in enumerate(instance["stops"])}
        return 1, lambda a, b: matrix[index[a["id"]]][index[b["id"]]]
    if kind == "euclidean":
        if instance.get("rounding", "trunc1") == "trunc1":

            def trunc1(a, b):
                dx, dy = a["x"] - b["x"], a["y"] - b["y"]
                if all(isinstance(v, int) for v in (dx, dy)):
                    return math.isqrt(100 * (dx * dx + dy * dy))  # exact floor(10 * sqrt(.))
                return math.floor(10 * math.hypot(dx, dy) + 1e-9)

            return 10, trunc1
        return 1, lambda a, b: math.hypot(a["x"] - b["x"], a["y"] - b["y"])
    if kind == "haversine":
        speed = instance["speed_kmh"] / 3.6

        def seconds(a, b):
            lat1, lat2 = math.radians(a["y"]), math.radians(b["y"])
            dlat, dlng = lat2 - lat1, math.radians(b["x"] - a["x"])
            h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlng / 2) ** 2
            return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h)) / speed

        return 1, seconds
    raise ValueError(f"unknown distance convention {kind!r}")


def check(instance: dict, answer: dict) -> CheckResult:
    """Check an answer against an instance; see the module docstring for the rules."""
    violations: list[str] = []
    scale, leg = _travel(instance)
    depot = instance["depot"]
    stops = {s["id"]: s for s in instance["stops"]}
    fleet = _fleet(instance)
    routes = [list(r) for r in answer.get("routes", [])]

    # Which vehicle drives which route.
    n_routes = sum(1 for r in routes if r)
    if n_routes > len(fleet.ids):
        violations.append(f"{n_routes} routes but only {len(fleet.ids)} vehicles")
    if "vehicles" in answer:
        assigned = list(answer["vehicles"])
        if len(assigned) != len(routes):
            violations.append(f"{len(routes)} routes but {len(assigned)} vehicle ids")
    elif isinstance(instance["vehicles"], list):
        specs = {(fleet.capacity[v], fleet.shift_start[v], fleet.shift_end[v]) for v in fleet.ids}
        if len(specs) > 1 and len(routes) != len(fleet.ids):
            violations.append("heterogeneous fleet, but the answer does not name the vehicle of each route")
        assigned = fleet.ids[: len(routes)]
    else:  # one vehicle type: any route can be any vehicle
        assigned = fleet.ids[: len(routes)]
    assigned = (assigned + [None] * len(routes))[: len(routes)]
    used = [v for v, r in zip(assigned, routes, strict=True) if r and v is not None]
    for vid in sorted({v for v in used if used.count(v) > 1}, key=str):
        violations.append(f"vehicle {vid} drives {used.count(vid)} routes")
    for vid in sorted(set(used) - set(fleet.ids), key=str):
        violations.append(f"vehicle {vid} is not in the fleet")
    if isinstance(instance["vehicles"], dict):
        # Extra routes of a one-type fleet are already reported above; check them as that type.
        kind = fleet.ids[0] if fleet.ids else None
        assigned = [kind if v is None else v for v in assigned]

    # Every stop exactly once.
    seen: dict = {}
    for r, route in enumerate(routes):
        for sid in route:
            if sid == depot["id"]:
                violations.append(f"route {r}: the depot ({sid}) is listed as a stop")
            elif sid not in stops:
                violations.append(f"route {r}: unknown stop {sid}")
            elif sid in seen:
                violations.append(f"stop {sid} visited twice (routes {seen[sid]} and {r})")
            else:
                seen[sid] = r
    missing = [sid for sid in stops if sid not in seen]
    if missing:
        head = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        violations.append(f"{len(missing)} stops not visited: {head}")

    total = 0
    for r, (route, vid) in enumerate(zip(routes, assigned, strict=True)):
        visits = [stops[s] for s in route if s in stops]
        if not visits:
            continue
        capacity = fleet.capacity.get(vid, 0)
        opens = max(depot.get("tw_start", 0), fleet.shift_start.get(vid, 0))
        closes = min(depot.get("tw_end", math.inf), fleet.shift_end.get(vid, math.inf))

        if vid not in fleet.capacity:
            violations.append(f"route {r}: no vehicle of the fleet drives it")
            capacity = math.inf
        load = sum(s.get("demand", 0) for s in visits)
        if load > capacity:
            violations.append(f"route {r}: leaves the depot with {load} > capacity {capacity}")
        else:
            for s in visits:  # the first stop after which the load is too high, if any
                load += s.get("pickup", 0) - s.get("demand", 0)
                if load > capacity:
                    violations.append(
                        f"route {r}: {load} on board after stop {s['id']} > capacity {capacity}"
                    )
                    break

        # Times in 1/scale units; leave at the earliest moment (later never helps feasibility).
        t = opens * scale
        prev = depot
        for s in visits:
            travel = leg(prev, s)
            total += travel
            arrival = t + travel
            start = max(arrival, s.get("tw_start", 0) * scale)
            if start > s.get("tw_end", math.inf) * scale + _EPS:
                violations.append(
                    f"route {r}: stop {s['id']} service starts at {start / scale:g}, "
                    f"after its window closes at {s['tw_end']}"
                )
            t = start + s.get("service", 0) * scale
            prev = s
        travel = leg(prev, depot)
        total += travel
        back = t + travel
        if back > closes * scale + _EPS:
            violations.append(f"route {r}: back at the depot at {back / scale:g}, after {closes}")

    distance = total / scale if scale != 1 else total
    return CheckResult(not violations, distance, violations)


def vehicles_used(answer: dict) -> int:
    return sum(1 for r in answer.get("routes", []) if r)


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description="Check an answer against an exchange instance.")
    parser.add_argument("instance", help="exchange JSON instance")
    parser.add_argument("answer", help='answer JSON {"routes": [[...], ...]}')
    args = parser.parse_args()
    with open(args.instance) as fi, open(args.answer) as fa:
        result = check(json.load(fi), json.load(fa))
    print(json.dumps(result._asdict(), indent=1))
    raise SystemExit(0 if result.feasible else 1)
