import math
from pathlib import Path

import numpy as np
import pytest

from dispatch.planner.exchange import problem_from_exchange, solution_to_exchange
from dispatch.planner.matrix import haversine_metres
from dispatch.planner.solver import solve

SOLOMON = Path(__file__).resolve().parents[4] / "shared" / "benchdata" / "vrptw" / "solomon"


def read_vrplib(path: Path) -> dict:
    """The few VRPLIB fields a Solomon instance has, as the exchange format's JSON."""
    header, sections, current = {}, {}, None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line == "EOF":
            continue
        if ":" in line and not line[0].isdigit():
            key, value = (part.strip() for part in line.split(":", 1))
            header[key] = value
        elif line.endswith("_SECTION"):
            current = sections.setdefault(line, [])
        else:
            current.append([int(float(x)) for x in line.split()])
    coords = sections["NODE_COORD_SECTION"]
    demand = sections["DEMAND_SECTION"]
    windows = sections["TIME_WINDOW_SECTION"]
    service = int(header["SERVICE_TIME"])
    (_, x0, y0), (_, start, end) = coords[0], windows[0]
    return {
        "name": header["NAME"],
        "distance": "euclidean",
        "rounding": "trunc1",
        "time_limit": 3.0,
        "depot": {"id": 0, "x": x0, "y": y0, "tw_start": start, "tw_end": end},
        "vehicles": {
            "count": int(header["VEHICLES"]),
            "capacity": int(header["CAPACITY"]),
            "shift_start": start,
            "shift_end": end,
        },
        "stops": [
            {
                "id": c[0] - 1,
                "x": c[1],
                "y": c[2],
                "demand": d[1],
                "tw_start": w[1],
                "tw_end": w[2],
                "service": service,
            }
            for c, d, w in zip(coords[1:], demand[1:], windows[1:], strict=True)
        ],
    }


def trunc1(a: dict, b: dict) -> float:
    return math.floor(10 * math.hypot(a["x"] - b["x"], a["y"] - b["y"])) / 10


def check_exchange(data: dict, routes: list[list[int]]) -> float:
    """An independent checker in the README's terms; returns the total distance."""
    stops = {s["id"]: s for s in data["stops"]}
    depot = data["depot"]
    assert sorted(k for r in routes for k in r) == sorted(stops)
    total = 0.0
    for route in routes:
        assert sum(stops[k]["demand"] for k in route) <= data["vehicles"]["capacity"]
        t, here = depot["tw_start"], depot
        for k in route:
            leg = trunc1(here, stops[k])
            total += leg
            t = max(t + leg, stops[k]["tw_start"])
            assert t <= stops[k]["tw_end"] + 1e-9
            t += stops[k]["service"]
            here = stops[k]
        total += trunc1(here, depot)
        assert t + trunc1(here, depot) <= depot["tw_end"] + 1e-9
    assert len(routes) <= data["vehicles"]["count"]
    return round(total, 1)


def test_solomon_c101_is_solved_feasibly_near_the_best_known():
    data = read_vrplib(SOLOMON / "C101.vrp")
    problem, time_limit = problem_from_exchange(data)
    assert time_limit == 3.0
    out = solution_to_exchange(problem, solve(problem, time_limit=time_limit))
    distance = check_exchange(data, out["routes"])
    assert distance == pytest.approx(out["cost"], abs=0.05)
    assert distance <= 827.3 * 1.005  # best known 827.3
    assert "unassigned" not in out


def tiny(**overrides) -> dict:
    data = {
        "distance": "euclidean",
        "rounding": "trunc1",
        "time_limit": 0.2,
        "depot": {"id": 0, "x": 0, "y": 0, "tw_start": 0, "tw_end": 1000},
        "vehicles": {"count": 2, "capacity": 10, "shift_start": 0, "shift_end": 1000},
        "stops": [
            {"id": 1, "x": 1, "y": 1, "demand": 3, "tw_start": 0, "tw_end": 100, "service": 5},
            {"id": 2, "x": 3, "y": 0, "demand": 0, "pickup": 4, "tw_start": 0, "tw_end": 500, "service": 5},
        ],
    }
    data.update(overrides)
    return data


def test_trunc1_is_exact_in_integers_scaled_by_ten():
    problem, _ = problem_from_exchange(tiny())
    assert problem.scale == 10 and not problem.clock
    assert problem.distances[0, 1] == 14  # √2 = 1.414… → 1.4
    assert problem.distances[1, 2] == 22  # √5 = 2.236… → 2.2
    assert problem.durations[0, 1] == 14
    job = problem.jobs[0]
    assert (job.tw_end, job.service) == (1000, 50)
    assert problem.jobs[1].pickup == 4


def test_solution_cost_is_in_the_instances_units():
    problem, _ = problem_from_exchange(tiny())
    out = solution_to_exchange(problem, solve(problem, time_limit=0.2))
    assert out["routes"] in ([[1, 2]], [[2, 1]])
    assert out["cost"] == pytest.approx(1.4 + 2.2 + 3.0)


def test_matrix_is_authoritative():
    matrix = [[0, 5, 50], [5, 0, 5], [50, 5, 0]]
    problem, _ = problem_from_exchange(tiny(distance="matrix", matrix=matrix))
    assert problem.scale == 1 and problem.distances.tolist() == matrix
    out = solution_to_exchange(problem, solve(problem, time_limit=0.2))
    assert out["routes"] in ([[1, 2]], [[2, 1]]) and out["cost"] == 60


def test_haversine_takes_x_as_longitude_and_speed_for_time():
    data = tiny(distance="haversine", speed_kmh=36)
    data["depot"].update(x=13.4132, y=52.5219)
    data["stops"][0].update(x=13.3777, y=52.5163)
    data["stops"][1].update(x=13.4500, y=52.5000)
    data["depot"]["tw_end"] = data["vehicles"]["shift_end"] = 36_000
    problem, _ = problem_from_exchange(data)
    metres = haversine_metres([(52.5219, 13.4132), (52.5163, 13.3777)])[0, 1]
    assert problem.distances[0, 1] == round(metres)
    assert problem.durations[0, 1] == round(metres / 10)  # 36 km/h = 10 m/s
    assert problem.clock and problem.locations[0] == (52.5219, 13.4132)


def test_unassigned_stops_come_back_with_reasons():
    data = tiny()
    data["stops"][0]["demand"] = 30
    problem, _ = problem_from_exchange(data)
    out = solution_to_exchange(problem, solve(problem, time_limit=0.2))
    assert out["routes"] == [[2]]
    assert out["unassigned"] == {"1": "Needs 30 parcels of space; the largest vehicle carries 10"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["vehicles"].pop("count"), "vehicles.count is missing"),
        (lambda d: d["vehicles"].update(capacity=-1), "vehicles.capacity must be at least 0"),
        (lambda d: d.update(distance="manhattan"), "distance must be 'euclidean', 'haversine' or 'matrix'"),
        (lambda d: d.update(rounding="round"), "rounding must be 'trunc1'"),
        (lambda d: d.update(time_limit=0), "time_limit must be positive"),
        (lambda d: d["stops"][1].update(id=1), r"stops\[1\].id 1 is used twice"),
        (lambda d: d["stops"][0].update(x="north"), r"stops\[0\].x must be a number"),
        (lambda d: d["stops"][0].update(tw_end=-5), r"stops\[0\].tw_end must not be negative"),
        (
            lambda d: d["stops"][1].update(tw_start=600),
            r"stops\[1\]: tw_end \(500\) is before tw_start \(600\)",
        ),
        (lambda d: d.pop("depot"), "depot must be an object"),
        (lambda d: d.update(stops={}), "stops must be a list"),
        (lambda d: d.update(matrix=[[0, 1], [1, 0]]), "matrix must be a 3×3 list"),
        (lambda d: d.update(distance="haversine"), "instance.speed_kmh is missing"),
        (lambda d: d.update(objective="money"), "objective must be 'distance' or 'time'"),
    ],
)
def test_bad_input_names_the_field(change, message):
    data = tiny()
    change(data)
    with pytest.raises(ValueError, match=message):
        problem_from_exchange(data)


def test_depot_hours_bound_the_shift():
    data = tiny()
    data["depot"]["tw_end"] = 700
    problem, _ = problem_from_exchange(data)
    assert {v.shift_end for v in problem.vehicles} == {7000}
    assert len(problem.vehicles) == 2 and isinstance(problem.durations, np.ndarray)
