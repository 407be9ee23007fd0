"""The larger Gehring-Homberger instances (200, 400, 1,000 customers), as bench.planner.solomon.

One instance per family and size lives in ../shared/benchdata/vrptw/gh200, gh400, gh1000. Same
code path, checker and table as the Solomon benchmark; the summary is per size.

    python -m bench.planner.gehring_homberger                       # 18 instances, 10 s each
    python -m bench.planner.gehring_homberger --sizes 200 --only C1_2_1
"""

import argparse
import json

from bench.planner.solomon import AppPlanner, PyVRPDirect, common_arguments, run_instances, select, summarise
from bench.planner.vrplib_reader import instance_paths, read_bks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_arguments(parser, 10.0)
    parser.add_argument("--sizes", default="200,400,1000", help="comma-separated: 200,400,1000")
    args = parser.parse_args(argv)
    planner = PyVRPDirect(args.seed) if args.reference else AppPlanner(args.subprocess, args.seed)
    bks = read_bks()
    results, infeasible = {}, 0
    for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
        paths = select(instance_paths(f"gh{size}"), args.only, args.family)
        if not paths:
            continue
        print(f"\nGehring-Homberger {size} customers, {len(paths)} instances, {args.time_limit:g} s each\n")
        rows = run_instances(paths, args.time_limit, planner, bks)
        tag = " (PyVRP direct)" if args.reference else ""
        summary = summarise(rows, f"GH{size} at {args.time_limit:g} s{tag}")
        results[size] = {"summary": summary, "rows": rows}
        infeasible += len(summary["infeasible"])
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"time_limit": args.time_limit, "solver": args.reference or "app", "sizes": results},
                fh,
                indent=1,
            )
    return 0 if not infeasible else 1


if __name__ == "__main__":
    raise SystemExit(main())
