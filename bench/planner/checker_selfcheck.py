"""Known answers for the independent checker: `python -m bench.planner.checker_selfcheck`.

Small hand-made instances whose right verdicts and distances are worked out by hand, plus
deliberately broken answers (a stop twice, a stop missing, over capacity, late at a stop, late
back at the depot, too many routes) that must be flagged. Not part of the test suite: the
benchmark's own sanity check, run before trusting its figures.
"""

import copy

from bench.planner.checker import check


def _euclid() -> dict:
    # Depot at (0, 0); legs chosen so trunc1 matters: (0,0)-(1,1) = floor(14.142...)/10 = 1.4,
    # (1,1)-(4,5) = 5.0 exactly, (4,5)-(0,0) = floor(64.031...)/10 = 6.4, (0,0)-(0,3) = 3.0.
    return {
        "name": "toy",
        "distance": "euclidean",
        "rounding": "trunc1",
        "depot": {"id": 0, "x": 0, "y": 0, "tw_start": 0, "tw_end": 100},
        "vehicles": {"count": 2, "capacity": 10, "shift_start": 0, "shift_end": 100},
        "stops": [
            {"id": 1, "x": 1, "y": 1, "demand": 4, "tw_start": 0, "tw_end": 100, "service": 1},
            {"id": 2, "x": 4, "y": 5, "demand": 4, "tw_start": 20, "tw_end": 30, "service": 1},
            {"id": 3, "x": 0, "y": 3, "demand": 7, "tw_start": 0, "tw_end": 100, "service": 0},
        ],
    }


def _pickups() -> dict:
    # Matrix instance (times = costs), heterogeneous fleet, one pickup.
    return {
        "name": "toy-pd",
        "distance": "matrix",
        "depot": {"id": 0, "x": 0, "y": 0, "tw_start": 0, "tw_end": 1000},
        "vehicles": [
            {"id": 7, "capacity": 5, "shift_start": 0, "shift_end": 1000},
            {"id": 8, "capacity": 5, "shift_start": 0, "shift_end": 50},
        ],
        "stops": [
            {"id": 11, "x": 0, "y": 0, "demand": 5, "pickup": 0, "tw_start": 0, "tw_end": 1000, "service": 0},
            {"id": 12, "x": 0, "y": 0, "demand": 0, "pickup": 5, "tw_start": 0, "tw_end": 1000, "service": 0},
        ],
        "matrix": [[0, 10, 20], [10, 0, 15], [20, 15, 0]],
    }


def main() -> int:
    failures = []

    def expect(label, instance, answer, feasible, distance=None, contains=None):
        result = check(instance, answer)
        ok = result.feasible == feasible
        if distance is not None:
            ok = ok and abs(result.distance - distance) < 1e-9
        if contains is not None:
            ok = ok and any(contains in v for v in result.violations)
        print(f"{'ok  ' if ok else 'FAIL'} {label}: feasible={result.feasible} distance={result.distance}")
        for v in result.violations:
            print(f"       {v}")
        if not ok:
            failures.append(label)

    toy = _euclid()
    # 0 -> 1 (1.4) -> 2 (5.0, wait until 20) -> 0 (6.4); 0 -> 3 -> 0 (3.0 + 3.0).
    expect("trunc1 distances, waiting allowed", toy, {"routes": [[1, 2], [3]]}, True, 1.4 + 5.0 + 6.4 + 6.0)
    expect("a stop twice", toy, {"routes": [[1, 2], [3, 1]]}, False, contains="visited twice")
    expect("a stop missing", toy, {"routes": [[1, 2]]}, False, contains="not visited")
    expect("the depot inside a route", toy, {"routes": [[1, 0, 2], [3]]}, False, contains="depot")
    expect("an unknown stop", toy, {"routes": [[1, 2], [3, 99]]}, False, contains="unknown stop")
    expect("over capacity", toy, {"routes": [[1, 2, 3]]}, False, contains="capacity")
    expect("too many routes", toy, {"routes": [[1], [2], [3]]}, False, contains="only 2 vehicles")
    late = copy.deepcopy(toy)
    late["stops"][1].update(tw_start=0, tw_end=5)  # reached at 6.4 at the earliest
    expect("late at a stop", late, {"routes": [[1, 2], [3]]}, False, contains="after its window closes")
    short = copy.deepcopy(toy)
    short["depot"]["tw_end"] = 30  # route 1 is back at 20 + 1 + 6.4 = 27.4; fine
    expect("back just in time", short, {"routes": [[1, 2], [3]]}, True)
    short["depot"]["tw_end"] = 27
    expect("back after the depot closes", short, {"routes": [[1, 2], [3]]}, False, contains="back at")

    pd = _pickups()
    # Deliver 5 then collect 5: never more than 5 on board. Cost 10 + 15 + 20.
    expect("delivery then pickup", pd, {"routes": [[11, 12]], "vehicles": [7]}, True, 45)
    # Collect 5 first while still carrying the 5 to deliver: 10 on board.
    expect("pickup before delivery", pd, {"routes": [[12, 11]], "vehicles": [7]}, False, contains="on board")
    # Vehicle 8's shift ends at 50: back at 45 is fine, at 45 + wait is not.
    expect("short shift, in time", pd, {"routes": [[11, 12]], "vehicles": [8]}, True, 45)
    tight = copy.deepcopy(pd)
    tight["stops"][1]["tw_start"] = 40  # wait at 12 until 40 -> back at 60 > 50
    expect("short shift, late", tight, {"routes": [[11, 12]], "vehicles": [8]}, False, contains="back at")
    expect("one route per vehicle, fleet order", pd, {"routes": [[11, 12], []]}, True, 45)
    expect("a vehicle twice", pd, {"routes": [[11], [12]], "vehicles": [7, 7]}, False, contains="drives 2")
    expect("an unknown vehicle", pd, {"routes": [[11, 12]], "vehicles": [9]}, False, contains="not in")

    print(f"\n{'all checks passed' if not failures else f'{len(failures)} FAILED: {failures}'}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
