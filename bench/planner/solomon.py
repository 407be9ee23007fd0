"""Solomon VRPTW instances through the project's own planning service, checked independently.

Each instance in ../shared/benchdata/vrptw/solomon/ is read here (bench.planner.vrplib_reader),
sent through the code path of `manage.py solve_vrp` (exchange dict -> problem_from_exchange ->
solver.solve -> solution_to_exchange, in-process after django.setup(); `--subprocess` pipes it
through the real command instead), and the answer is checked and costed by bench.planner.checker
(every customer once, capacity, windows, depot horizon; distances truncated to one decimal).
The gap is to bks.csv; the time is the wall-clock time of the whole call.

    python -m bench.planner.solomon                     # all 56 at 2 s each (about 2 minutes)
    python -m bench.planner.solomon --time-limit 10     # about 10 minutes
    python -m bench.planner.solomon --only C101,R101 --time-limit 10
    python -m bench.planner.solomon --family R1,RC2 --json r1-rc2.json
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.planner.checker import check, vehicles_used
from bench.planner.vrplib_reader import instance_paths, read_bks, read_vrp

ROOT = Path(__file__).resolve().parents[2]


def family(name: str) -> str:
    """C101 -> C1, RC208 -> RC2, R1_4_1 -> R1 (Gehring-Homberger names)."""
    if "_" in name:
        return name.split("_")[0]
    match = re.match(r"([A-Z]+)(\d)", name)
    return match.group(1) + match.group(2) if match else name


class AppPlanner:
    """The planning service as `manage.py solve_vrp` runs it."""

    def __init__(self, subprocess_mode: bool = False, seed: int = 0):
        self.subprocess_mode = subprocess_mode
        self.seed = seed
        if not subprocess_mode:
            sys.path.insert(0, str(ROOT))
            os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
            import django

            django.setup()
            from dispatch.planner import exchange, solver

            self.exchange, self.solver = exchange, solver

    def __call__(self, data: dict) -> dict:
        if self.subprocess_mode:
            proc = subprocess.run(
                [sys.executable, "manage.py", "solve_vrp"],
                input=json.dumps(data),
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            if proc.returncode != 0:
                lines = proc.stderr.strip().splitlines()
                raise RuntimeError(lines[-1] if lines else f"solve_vrp exited with {proc.returncode}")
            return json.loads(proc.stdout)
        problem, time_limit = self.exchange.problem_from_exchange(data)
        solution = self.solver.solve(problem, time_limit=time_limit, seed=self.seed)
        return self.exchange.solution_to_exchange(problem, solution)


class PyVRPDirect:
    """Reference only (`--reference pyvrp`): PyVRP called directly on the same instance, to tell
    the app's modelling from the search itself. Not the planning service."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def __call__(self, data: dict) -> dict:
        import numpy as np

        from bench.planner.city import solve_pyvrp

        # Integer tenths: trunc1 distances exactly, times, windows and service times x 10.
        nodes = [data["depot"]] + data["stops"]
        xy = np.array([(p["x"], p["y"]) for p in nodes], dtype=np.int64)
        squared = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(axis=2) * 100
        matrix = np.floor(np.sqrt(squared)).astype(np.int64)
        matrix -= (matrix * matrix > squared).astype(np.int64)  # guard the float sqrt's rounding
        scale = lambda d, *fields: d | {f: d[f] * 10 for f in fields if f in d}  # noqa: E731
        fleet = data["vehicles"]
        instance = {
            "depot": scale(data["depot"], "tw_start", "tw_end"),
            "stops": [scale(st, "tw_start", "tw_end", "service") for st in data["stops"]],
            "vehicles": [
                {
                    "id": k,
                    "capacity": fleet["capacity"],
                    "shift_start": fleet["shift_start"] * 10,
                    "shift_end": fleet["shift_end"] * 10,
                }
                for k in range(fleet["count"])
            ],
            "matrix": matrix,
        }
        answer = solve_pyvrp(instance, data["time_limit"], self.seed)
        return {"routes": answer["routes"], "cost": answer["solver_cost"] / 10}


def run_instances(paths: list[Path], time_limit: float, planner: AppPlanner, bks: dict, out=sys.stdout):
    rows = []
    header = (
        f"{'instance':<10} {'veh':>4} {'bks veh':>7} {'distance':>10} {'bks':>10} {'gap %':>7} "
        f"{'time s':>7} {'feasible':>8}"
    )
    print(header, file=out)
    print("-" * len(header), file=out)
    for path in paths:
        data = read_vrp(path, time_limit=time_limit)
        name = data["name"]
        started = time.perf_counter()
        try:
            answer = planner(data)
            error = None
        except Exception as exc:  # a crash is a result too: count it as infeasible
            answer, error = {"routes": []}, f"{type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - started
        feasible, distance, violations = check(data, answer)
        best_vehicles, best = bks.get(name, (None, None))
        gap = 100.0 * (distance - best) / best if best and feasible else None
        row = {
            "instance": name,
            "family": family(name),
            "customers": len(data["stops"]),
            "vehicles": vehicles_used(answer),
            "bks_vehicles": best_vehicles,
            "distance": round(distance, 1),
            "bks": best,
            "gap": gap,
            "seconds": seconds,
            "feasible": feasible,
            "violations": ([error] if error else []) + violations[:5],
            "reported_cost": answer.get("cost"),
        }
        reported = answer.get("cost")
        if reported is not None and feasible and abs(reported - distance) > 0.05:
            row["violations"].append(
                f"the planner reports cost {reported}, the checker measures {distance:.1f}"
            )
        rows.append(row)
        print(
            f"{name:<10} {row['vehicles']:>4} {best_vehicles or '-':>7} {distance:>10.1f} {best or '-':>10} "
            f"{'-' if gap is None else f'{gap:.2f}':>7} {seconds:>7.2f} {'yes' if feasible else 'NO':>8}",
            file=out,
        )
        for v in row["violations"]:
            print(f"{'':<10}   ! {v}", file=out)
        out.flush()
    return rows


def summarise(rows: list, label: str, out=sys.stdout) -> dict:
    gaps = [r["gap"] for r in rows if r["gap"] is not None]
    infeasible = [r["instance"] for r in rows if not r["feasible"]]
    summary = {
        "label": label,
        "instances": len(rows),
        "mean_gap": statistics.fmean(gaps) if gaps else None,
        "max_gap": max(gaps) if gaps else None,
        "infeasible": infeasible,
        "mean_seconds": statistics.fmean(r["seconds"] for r in rows) if rows else None,
        "by_family": {},
    }
    for fam in sorted({r["family"] for r in rows}, key=lambda f: (len(f), f)):
        fam_gaps = [r["gap"] for r in rows if r["family"] == fam and r["gap"] is not None]
        summary["by_family"][fam] = statistics.fmean(fam_gaps) if fam_gaps else None
    print(file=out)
    mean = "-" if summary["mean_gap"] is None else f"{summary['mean_gap']:.2f} %"
    worst = "-" if summary["max_gap"] is None else f"{summary['max_gap']:.2f} %"
    print(
        f"{label}: {len(rows)} instances, mean gap {mean}, max gap {worst}, "
        f"infeasible {len(infeasible)}{' ' + str(infeasible) if infeasible else ''}, "
        f"mean time {summary['mean_seconds'] or 0:.2f} s",
        file=out,
    )
    fams = "  ".join(f"{f} {'-' if g is None else f'{g:.2f}%'}" for f, g in summary["by_family"].items())
    print(f"by family: {fams}", file=out)
    return summary


def select(paths: list[Path], only: str | None, families: str | None) -> list[Path]:
    if only:
        wanted = {n.strip().upper() for n in only.split(",") if n.strip()}
        unknown = wanted - {p.stem.upper() for p in paths}
        if unknown:
            raise SystemExit(f"unknown instance(s): {', '.join(sorted(unknown))}")
        paths = [p for p in paths if p.stem.upper() in wanted]
    if families:
        wanted = {f.strip().upper() for f in families.split(",") if f.strip()}
        paths = [p for p in paths if family(p.stem).upper() in wanted]
    return paths


def common_arguments(parser: argparse.ArgumentParser, default_limit: float) -> None:
    parser.add_argument("--time-limit", type=float, default=default_limit, help="seconds per instance")
    parser.add_argument("--only", help="comma-separated instance names, e.g. C101,R101")
    parser.add_argument("--family", help="comma-separated families, e.g. C1,RC2")
    parser.add_argument("--seed", type=int, default=0, help="solver seed (default 0)")
    parser.add_argument(
        "--subprocess", action="store_true", help="pipe each instance through `manage.py solve_vrp`"
    )
    parser.add_argument("--json", help="save rows and summary to this file")
    parser.add_argument(
        "--reference",
        choices=("pyvrp",),
        help="instead of the app, run PyVRP directly on the same instances (a reference, not the app)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_arguments(parser, 2.0)
    args = parser.parse_args(argv)
    paths = select(instance_paths("solomon"), args.only, args.family)
    planner = PyVRPDirect(args.seed) if args.reference else AppPlanner(args.subprocess, args.seed)
    who = "PyVRP called directly (reference)" if args.reference else "the app's planner"
    print(f"Solomon, {len(paths)} instances, {args.time_limit:g} s each, {who}\n")
    rows = run_instances(paths, args.time_limit, planner, read_bks())
    summary = summarise(
        rows, f"Solomon at {args.time_limit:g} s{' (PyVRP direct)' if args.reference else ''}"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "time_limit": args.time_limit,
                    "solver": args.reference or "app",
                    "summary": summary,
                    "rows": rows,
                },
                fh,
                indent=1,
            )
    return 0 if not summary["infeasible"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
