"""City-sized delivery days: the app's planner against PyVRP called directly and OR-Tools.

A seeded generator makes one day of a parcel carrier in a ~15 x 15 km city (100, 400 or 1,000
orders by default): a depot off the centre, orders clustered in neighbourhoods plus a uniform
scatter, 1-4 h time windows inside 08:00-20:00 (some orders without one), 2-8 min service,
1-5 parcels, about 10 % pickups (returns brought back to the depot), and a fleet of vans with
different capacities and shifts (08:00-17:00, 10:00-19:00, 11:00-20:00) starting and ending at
the depot. Times are seconds since midnight. The travel-time matrix comes from the app's
`StraightLineModel` (25 km/h, detour 1.3), so all three solvers see the same integers, and the
objective is the same for all: total travel time (the sum of matrix entries along the routes).

Each solver runs in its own subprocess, one at a time, with the same time budget:
- `app`: the project's planning service, as `manage.py solve_vrp` does it: the instance in the
  exchange format (`"distance": "matrix"`) -> `problem_from_exchange` -> `solver.solve` ->
  `solution_to_exchange`;
- `pyvrp`: PyVRP called directly on a minimal `ProblemData` built here;
- `ortools`: OR-Tools routing (time windows, one load dimension with deliveries loaded at the
  depot and pickups collected, per-vehicle shifts, guided local search).
Every answer is checked and costed by the independent checker (bench.planner.checker); the peak
memory is the solver process's own maximum resident set size (getrusage).

    python -m bench.planner.city                      # 100/400/1,000 orders, 10/10/60 s
    python -m bench.planner.city --sizes 100 --budgets 100=5 --solvers app,pyvrp
    python -m bench.planner.city --generate 400 > day400.json
"""

import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.planner.checker import check, vehicles_used

ROOT = Path(__file__).resolve().parents[2]
SOLVERS = ("app", "pyvrp", "ortools")
DEFAULT_SIZES = (100, 400, 1000)
DEFAULT_BUDGETS = {100: 10.0, 400: 10.0, 1000: 60.0}

CENTRE = (52.5200, 13.4050)  # (lat, lng): a Berlin-like city, as the demo
HALF_SIDE_KM = 7.5
DAY_START, DAY_END = 8 * 3600, 20 * 3600
SHIFTS = ((8 * 3600, 17 * 3600), (10 * 3600, 19 * 3600), (11 * 3600, 20 * 3600))
CAPACITIES = (60, 80, 100)


def _to_latlng(x_km: float, y_km: float) -> tuple[float, float]:
    lat = CENTRE[0] + y_km / 111.32
    lng = CENTRE[1] + x_km / (111.32 * math.cos(math.radians(CENTRE[0])))
    return round(lat, 6), round(lng, 6)


def fleet_size(orders: int) -> int:
    return {100: 10, 400: 30, 1000: 60}.get(orders, max(2, round(orders / 16)))


def generate(orders: int, seed: int = 1, time_limit: float = 10.0) -> dict:
    """One city day as an exchange-format dict with a travel-time `matrix` (seconds)."""
    rng = random.Random(seed * 1_000_003 + orders)
    clip = lambda v: max(-HALF_SIDE_KM, min(HALF_SIDE_KM, v))  # noqa: E731
    hubs = [(rng.uniform(-6, 6), rng.uniform(-6, 6), rng.uniform(0.6, 1.6)) for _ in range(8)]
    depot_lat, depot_lng = _to_latlng(-3.0, -2.0)

    stops = []
    for k in range(1, orders + 1):
        if rng.random() < 0.7:
            hx, hy, spread = rng.choice(hubs)
            x, y = clip(rng.gauss(hx, spread)), clip(rng.gauss(hy, spread))
        else:
            x, y = rng.uniform(-HALF_SIDE_KM, HALF_SIDE_KM), rng.uniform(-HALF_SIDE_KM, HALF_SIDE_KM)
        lat, lng = _to_latlng(x, y)
        if rng.random() < 0.85:
            hours = rng.choices((1, 2, 3, 4), weights=(3, 4, 2, 1))[0]
            half_hours = rng.randrange(0, (DAY_END - DAY_START - hours * 3600) // 1800 + 1)
            tw_start = DAY_START + half_hours * 1800
            tw_end = tw_start + hours * 3600
        else:
            tw_start, tw_end = DAY_START, DAY_END
        parcels = rng.choices((1, 2, 3, 4, 5), weights=(35, 25, 20, 12, 8))[0]
        is_pickup = rng.random() < 0.10
        stops.append(
            {
                "id": k,
                "x": lng,
                "y": lat,
                "demand": 0 if is_pickup else parcels,
                "pickup": parcels if is_pickup else 0,
                "tw_start": tw_start,
                "tw_end": tw_end,
                "service": rng.randrange(120, 481, 30),
            }
        )

    vehicles = []
    for v in range(fleet_size(orders)):
        shift_start, shift_end = SHIFTS[v % len(SHIFTS)]
        vehicles.append(
            {
                "id": v + 1,
                "capacity": CAPACITIES[rng.randrange(len(CAPACITIES))],
                "shift_start": shift_start,
                "shift_end": shift_end,
            }
        )

    from dispatch.planner.matrix import StraightLineModel

    points = [(depot_lat, depot_lng)] + [(s["y"], s["x"]) for s in stops]
    durations, _distances = StraightLineModel(speed_kmh=25.0, detour=1.3).matrices(points)
    return {
        "name": f"city{orders}-s{seed}",
        "distance": "matrix",
        "time_limit": float(time_limit),
        "depot": {"id": 0, "x": depot_lng, "y": depot_lat, "tw_start": DAY_START, "tw_end": DAY_END},
        "vehicles": vehicles,
        "stops": stops,
        "matrix": durations.tolist(),
    }


# --- the three solvers (each runs inside a worker subprocess) ---------------------------------


def solve_app(instance: dict, time_limit: float, seed: int) -> dict:
    """The project's planning service: the exchange code path of `manage.py solve_vrp`.

    The exchange format has one vehicle type (`"vehicles": {"count", "capacity", ...}`), so the
    instance is parsed with its fleet collapsed to one placeholder type and the parsed problem
    then gets one `Vehicle` per van and shift, as `dispatch.planning.build_problem` makes them
    from Shift rows (key, capacity, start and end at the depot, shift start and end). The
    exchange's default objective, "distance", over the travel-time matrix is the benchmark's
    objective: total travel time.
    """
    import dataclasses

    from dispatch.planner import exchange, solver
    from dispatch.planner.problem import Vehicle

    fleet = instance["vehicles"]
    one_type = {
        "count": len(fleet),
        "capacity": max(v["capacity"] for v in fleet),
        "shift_start": min(v["shift_start"] for v in fleet),
        "shift_end": max(v["shift_end"] for v in fleet),
    }
    problem, _budget = exchange.problem_from_exchange(instance | {"vehicles": one_type})
    depot = instance["depot"]
    vehicles = [
        Vehicle(
            key=v["id"],
            capacity=v["capacity"],
            start_location=0,
            end_location=0,
            shift_start=max(v["shift_start"], depot["tw_start"]),
            shift_end=min(v["shift_end"], depot["tw_end"]),
        )
        for v in fleet
    ]
    problem = dataclasses.replace(problem, vehicles=vehicles)
    solution = solver.solve(problem, time_limit=time_limit, seed=seed)
    answer = exchange.solution_to_exchange(problem, solution)
    answer["vehicles"] = [r.vehicle for r in solution.routes if r.visits]  # parallel to "routes"
    return answer | {
        "solver_cost": solution.cost,
        "iterations": solution.iterations,
        "solver_seconds": solution.runtime,  # solve() alone: model building + search
    }


def solve_pyvrp(instance: dict, time_limit: float, seed: int) -> dict:
    """PyVRP called directly on a minimal ProblemData (same matrix, same objective)."""
    import numpy as np
    from pyvrp import Client, Depot, Location, ProblemData, VehicleType
    from pyvrp import solve as pyvrp_solve
    from pyvrp.stop import MaxRuntime

    matrix = np.asarray(instance["matrix"], dtype=np.int64)
    depot, stops = instance["depot"], instance["stops"]
    locations = [Location(depot["x"], depot["y"])] + [Location(s["x"], s["y"]) for s in stops]
    clients = [
        Client(
            location=k + 1,
            delivery=[s.get("demand", 0)],
            pickup=[s.get("pickup", 0)],
            service_duration=s.get("service", 0),
            tw_early=s["tw_start"],
            tw_late=s["tw_end"],
        )
        for k, s in enumerate(stops)
    ]
    types: dict[tuple, list] = {}  # (capacity, shift start, shift end) -> vehicle ids
    for v in instance["vehicles"]:
        types.setdefault((v["capacity"], v["shift_start"], v["shift_end"]), []).append(v["id"])
    vehicle_types = [
        VehicleType(num_available=len(ids), capacity=[cap], tw_early=start, tw_late=end)
        for (cap, start, end), ids in types.items()
    ]
    data = ProblemData(
        locations=locations,
        clients=clients,
        depots=[Depot(location=0, tw_early=depot["tw_start"], tw_late=depot["tw_end"])],
        vehicle_types=vehicle_types,
        distance_matrices=[matrix],  # the objective is travel time: cost = the time matrix
        duration_matrices=[matrix],
    )
    result = pyvrp_solve(data, stop=MaxRuntime(time_limit), seed=seed, display=False)
    free = [list(ids) for ids in types.values()]
    routes, vehicles = [], []
    for route in result.best.routes():
        # A route is a schedule of activities; a client activity's idx indexes `clients`.
        routes.append([stops[act.idx]["id"] for act in route if act.is_client()])
        vehicles.append(free[route.vehicle_type()].pop(0))
    return {
        "routes": routes,
        "vehicles": vehicles,
        "solver_cost": result.cost(),
        "iterations": result.num_iterations,
        "solver_feasible": result.is_feasible(),
        "solver_seconds": result.runtime,  # the search alone
    }


def solve_ortools(instance: dict, time_limit: float, seed: int) -> dict:
    """OR-Tools routing with guided local search from a parallel cheapest-insertion start."""
    from ortools.constraint_solver import pywrapcp, routing_enums_pb2

    depot, stops, fleet = instance["depot"], instance["stops"], instance["vehicles"]
    matrix = instance["matrix"]
    n, m = len(stops) + 1, len(fleet)
    service = [0] + [s.get("service", 0) for s in stops]
    manager = pywrapcp.RoutingIndexManager(n, m, 0)
    routing = pywrapcp.RoutingModel(manager)

    travel = routing.RegisterTransitMatrix(matrix)
    routing.SetArcCostEvaluatorOfAllVehicles(travel)

    # Time: travel plus the service at the node left; waiting is free (slack).
    timed = [[service[i] + t for t in row] for i, row in enumerate(matrix)]
    routing.AddDimension(routing.RegisterTransitMatrix(timed), DAY_END, DAY_END + 86400, False, "time")
    time_dim = routing.GetDimensionOrDie("time")
    for k, s in enumerate(stops, start=1):
        time_dim.CumulVar(manager.NodeToIndex(k)).SetRange(s["tw_start"], s["tw_end"])
    for v, vehicle in enumerate(fleet):
        opens = max(vehicle["shift_start"], depot["tw_start"])
        closes = min(vehicle["shift_end"], depot["tw_end"])
        time_dim.CumulVar(routing.Start(v)).SetRange(opens, closes)
        time_dim.CumulVar(routing.End(v)).SetRange(opens, closes)

    # Load: a route leaves the depot with all its deliveries on board (start cumul = the sum of
    # its deliveries), drops `demand`, collects `pickup`. The start cumul is free in
    # [0, capacity] and tied to the route's deliveries by a second dimension, so a pickup before
    # a delivery counts against the capacity as it does on the road.
    change = [0] + [s.get("pickup", 0) - s.get("demand", 0) for s in stops]
    delivered = [0] + [s.get("demand", 0) for s in stops]
    capacities = [v["capacity"] for v in fleet]
    routing.AddDimensionWithVehicleCapacity(
        routing.RegisterUnaryTransitVector(change), 0, capacities, False, "load"
    )
    routing.AddDimensionWithVehicleCapacity(
        routing.RegisterUnaryTransitVector(delivered), 0, capacities, True, "deliveries"
    )
    load, deliveries = routing.GetDimensionOrDie("load"), routing.GetDimensionOrDie("deliveries")
    cp = routing.solver()
    for v in range(m):
        cp.Add(load.CumulVar(routing.Start(v)) == deliveries.CumulVar(routing.End(v)))

    for v in range(m):
        routing.AddVariableMinimizedByFinalizer(time_dim.CumulVar(routing.End(v)))

    params = pywrapcp.DefaultRoutingSearchParameters()
    params.first_solution_strategy = routing_enums_pb2.FirstSolutionStrategy.PARALLEL_CHEAPEST_INSERTION
    params.local_search_metaheuristic = routing_enums_pb2.LocalSearchMetaheuristic.GUIDED_LOCAL_SEARCH
    params.time_limit.FromMilliseconds(int(time_limit * 1000))
    assignment = routing.SolveWithParameters(params)
    routes, vehicles = [], []
    if assignment is not None:
        for v in range(m):
            index, route = assignment.Value(routing.NextVar(routing.Start(v))), []
            while not routing.IsEnd(index):
                route.append(stops[manager.IndexToNode(index) - 1]["id"])
                index = assignment.Value(routing.NextVar(index))
            if route:
                routes.append(route)
                vehicles.append(fleet[v]["id"])
    return {
        "routes": routes,
        "vehicles": vehicles,
        "solver_cost": assignment.ObjectiveValue() if assignment is not None else None,
        "status": routing.status(),
    }


SOLVE = {"app": solve_app, "pyvrp": solve_pyvrp, "ortools": solve_ortools}


def worker(solver: str, instance_path: str, time_limit: float, seed: int) -> None:
    """Run one solver on one instance file; print its answer and measurements as JSON."""
    if solver == "app":  # the app's start-up is not planning time
        import django

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        django.setup()
    started = time.perf_counter()
    with open(instance_path) as fh:
        instance = json.load(fh)
    loaded = time.perf_counter()
    answer = SOLVE[solver](instance, time_limit, seed)
    done = time.perf_counter()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    answer |= {"seconds": done - loaded, "load_seconds": loaded - started, "peak_mib": peak_kib / 1024}
    json.dump(answer, sys.stdout)


# --- the benchmark -----------------------------------------------------------------------------


def run_one(solver: str, instance: dict, path: str, time_limit: float, seed: int) -> dict:
    cmd = [sys.executable, "-m", "bench.planner.city", "--worker", solver, "--instance", path]
    cmd += ["--time-limit", str(time_limit), "--seed", str(seed)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        return {"solver": solver, "error": " | ".join(tail) or f"exit {proc.returncode}", "wall": wall}
    answer = json.loads(proc.stdout)
    feasible, cost, violations = check(instance, answer)
    return {
        "solver": solver,
        "cost": cost,
        "feasible": feasible,
        "violations": violations[:5],
        "vehicles": vehicles_used(answer),
        "seconds": answer["seconds"],
        "wall": wall,
        "peak_mib": answer["peak_mib"],
        "solver_cost": answer.get("solver_cost"),
        "solver_seconds": answer.get("solver_seconds"),
        "iterations": answer.get("iterations"),
    }


def _budgets(text: str | None) -> dict[int, float]:
    budgets = dict(DEFAULT_BUDGETS)
    for part in (text or "").split(","):
        if part.strip():
            size, _, seconds = part.partition("=")
            budgets[int(size)] = float(seconds)
    return budgets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="orders per day")
    parser.add_argument("--budgets", help="time budget per size, e.g. 100=10,400=10,1000=60 (seconds)")
    parser.add_argument("--solvers", default=",".join(SOLVERS))
    parser.add_argument("--seed", type=int, default=1, help="instance seed (the solvers use seed 0)")
    parser.add_argument("--json", help="save the figures here")
    parser.add_argument("--save-instances", help="also write each instance's exchange JSON to this folder")
    parser.add_argument("--generate", type=int, metavar="ORDERS", help="print one instance and exit")
    parser.add_argument("--worker", choices=SOLVERS, help=argparse.SUPPRESS)
    parser.add_argument("--instance", help=argparse.SUPPRESS)
    parser.add_argument("--time-limit", type=float, default=10.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        worker(args.worker, args.instance, args.time_limit, 0)
        return 0
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    if args.generate:
        json.dump(generate(args.generate, args.seed), sys.stdout)
        return 0

    budgets = _budgets(args.budgets)
    solvers = [s.strip() for s in args.solvers.split(",") if s.strip()]
    rows = []
    header = (
        f"{'instance':<12} {'budget':>6} {'solver':<8} {'cost (s)':>10} {'veh':>4} {'time s':>7} "
        f"{'peak MiB':>8} {'ok':>3}"
    )
    print(header)
    print("-" * len(header))
    for size in [int(s) for s in args.sizes.split(",")]:
        budget = budgets.get(size, 10.0)
        t0 = time.perf_counter()
        instance = generate(size, args.seed, budget)
        matrix_seconds = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, f"{instance['name']}.json")
            with open(path, "w") as fh:
                json.dump(instance, fh)
            if args.save_instances:
                os.makedirs(args.save_instances, exist_ok=True)
                with open(os.path.join(args.save_instances, f"{instance['name']}.json"), "w") as fh:
                    json.dump(instance, fh)
            results = {}
            for solver in solvers:  # one at a time
                r = run_one(solver, instance, path, budget, args.seed)
                results[solver] = r
                if "error" in r:
                    print(f"{instance['name']:<12} {budget:>6g} {solver:<8} ERROR {r['error']}")
                    continue
                print(
                    f"{instance['name']:<12} {budget:>6g} {solver:<8} {r['cost']:>10} {r['vehicles']:>4} "
                    f"{r['seconds']:>7.1f} {r['peak_mib']:>8.0f} {'yes' if r['feasible'] else 'NO':>3}"
                )
                for v in r["violations"]:
                    print(f"{'':<12} {'':>6} {'':<8}   ! {v}")
                sys.stdout.flush()
        ratios = {}
        app = results.get("app")
        for ref in ("pyvrp", "ortools"):
            other = results.get(ref)
            if app and other and "error" not in app and "error" not in other and other["cost"]:
                ratios[ref] = app["cost"] / other["cost"]
        rows.append(
            {
                "instance": instance["name"],
                "orders": size,
                "fleet": len(instance["vehicles"]),
                "budget": budget,
                "matrix_seconds": matrix_seconds,
                "results": results,
                "ratios": ratios,
            }
        )
        line = "  ".join(f"app/{k} = {v:.4f}" for k, v in ratios.items())
        print(f"{'':<12} {'':>6} {line}  (matrix + instance built in {matrix_seconds:.2f} s)")
        print()

    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"seed": args.seed, "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
