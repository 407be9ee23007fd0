"""Accuracy of the ETAs on a simulated day of the demo city, against the plan's arrival times.

    .venv/bin/python -m bench.eta.accuracy [--quick] [--seed 1 | --seeds 1-8] [--hours 14] [--json FILE]

In a temporary SQLite database: `seed_demo` for a fixed Tuesday (24 Nov 2026, Berlin), the
demo day planned and published by the app's planner (tracking.simulation.publish_demo_day), then
the simulator (tracking.simulation.advance, as `manage.py simulate`) drives all 8 routes from
06:00 in one-minute steps, with its hidden noise: each driver's own pace, each leg's speed,
traffic jams, service times, failures. After every simulated minute tracking.eta.eta_recompute
runs and the ETA of every open stop is recorded.

For each stop served, the error is the ETA shown 60, 30 and 10 minutes before the driver
arrived minus when service actually started (the arrival, or the window's opening when the
driver was early and waited), next to the plan's planned_arrival minus the same. A stop counts
for a horizon only when an ETA was shown that long before (its route was already in progress).
--quick simulates the first 4 hours only. --seeds runs several days of noise one after the
other and adds the figures of all their stops together (one day's p90 rests on ~13 stops).
"""

import argparse
import io
import json
import random
import sys
from collections import defaultdict
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from bench.eta.databases import django_setup, run_child

DAY = datetime(2026, 11, 24).date()
BERLIN = ZoneInfo("Europe/Berlin")
HORIZONS = (60, 30, 10)
TARGET_P90_30 = 5.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1, help="the simulator's noise")
    parser.add_argument("--seeds", help="several days, e.g. 1-8 or 1,3,5: each, then all together")
    parser.add_argument("--hours", type=float, default=15.0, help="simulated hours from 06:00")
    parser.add_argument("--budget", type=int, default=5, help="planner time budget, s")
    parser.add_argument("--quick", action="store_true", help="the first 4 hours only")
    parser.add_argument("--json", help="save the summary and every stop's errors here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.hours = 4.0
    if args.child:
        return child(args)

    results = []
    for seed in _seeds(args.seeds) if args.seeds else [args.seed]:
        out = Path(f"/tmp/bench-eta-accuracy-{seed}.json")
        out.unlink(missing_ok=True)
        child_args = ["--seed", str(seed), "--hours", str(args.hours), "--budget", str(args.budget)]
        if run_child("bench.eta.accuracy", "sqlite", [*child_args, "--out", str(out)]) != 0:
            print(f"the run of seed {seed} failed", file=sys.stderr)
            return 1
        results.append(json.loads(out.read_text()))
        out.unlink()
        print_summary(results[-1])
    if len(results) > 1:
        stops = [stop for result in results for stop in result["stops"]]
        pooled = {
            "seed": ",".join(str(r["seed"]) for r in results),
            "routes": sum(r["routes"] for r in results),
            "served": len(stops),
            "simulated_hours": sum(r["simulated_hours"] for r in results),
            "wall_s": sum(r["wall_s"] for r in results),
            "horizons": [_summary(stops, h) for h in HORIZONS],
        }
        print("\nAll seeds together:")
        print_summary(pooled)
    if args.json:
        Path(args.json).write_text(json.dumps(results[0] if len(results) == 1 else results, indent=2))
    return 0


def _seeds(text: str) -> list[int]:
    """'1-8' or '1,3,5' (or both: '1-3,7')."""
    seeds = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        seeds += range(int(first), int(last or first) + 1)
    return seeds


def print_summary(result: dict) -> None:
    print(
        f"{result['routes']} routes, {result['served']} stops served, {result['simulated_hours']:.1f} h "
        f"simulated in {result['wall_s']:.0f} s (seed {result['seed']})"
    )
    heads = ("ETA mean", 9), ("ETA p90", 8), ("ETA bias", 9), ("plan mean", 10), ("plan p90", 9)
    print(f"{'ahead':>6} {'stops':>5} " + " ".join(f"{h:>{w}}" for h, w in heads))
    for row in result["horizons"]:
        print(
            f"{row['minutes']:>4} m {row['stops']:>5} {row['eta_mean']:>9.1f} {row['eta_p90']:>8.1f} "
            f"{row['eta_bias']:>+9.1f} {row['plan_mean']:>10.1f} {row['plan_p90']:>9.1f}"
        )
    row = next(r for r in result["horizons"] if r["minutes"] == 30)
    better = row["eta_p90"] < row["plan_p90"] and row["eta_mean"] < row["plan_mean"]
    verdict = "met" if row["eta_p90"] < TARGET_P90_30 and better else "MISSED"
    print(f"target: 30 min ahead p90 < {TARGET_P90_30:g} min and better than the plan: {verdict}")
    print("(minutes; bias = mean of ETA − actual, negative = too early)")


def child(args) -> int:
    import time as clock

    django_setup()
    import logging

    import time_machine
    from django.core.management import call_command

    from dispatch.models import Route, Stop
    from tracking.eta import eta_recompute
    from tracking.simulation import Simulation, advance, publish_demo_day

    logging.getLogger("django-q").setLevel(logging.WARNING)  # one line per notification queued
    start = datetime.combine(DAY, time(6), tzinfo=BERLIN).astimezone(UTC)
    wall = clock.perf_counter()
    shown: dict[int, list[tuple[datetime, datetime]]] = defaultdict(list)
    with time_machine.travel(start, tick=False) as traveller:
        call_command("seed_demo", password="demo", stdout=io.StringIO())
        for line in publish_demo_day(now=start, budget_seconds=args.budget):
            print(line)
        sim = Simulation.from_db(now=start, failure_rate=0.05)
        rng = random.Random(args.seed)
        now, end = start, start + timedelta(hours=args.hours)
        while sim.active and now < end:
            advance(sim, now=now, dt_seconds=60, rng=rng)
            now += timedelta(minutes=1)
            traveller.move_to(now)
            eta_recompute(now=now)
            for pk, eta in Stop.objects.filter(
                status__in=(Stop.Status.PENDING, Stop.Status.EN_ROUTE), eta__isnull=False
            ).values_list("pk", "eta"):
                shown[pk].append((now, eta))
    simulated = (now - start).total_seconds() / 3600

    stops = []
    for pk, arrived, planned, window_start in Stop.objects.filter(arrived_at__isnull=False).values_list(
        "pk", "arrived_at", "planned_arrival", "order__window_start"
    ):
        actual = max(arrived, window_start) if window_start else arrived
        row = {"stop": pk, "plan_error": _minutes(planned - actual) if planned else None}
        for h in HORIZONS:
            before = [eta for t, eta in shown.get(pk, []) if t <= arrived - timedelta(minutes=h)]
            row[f"eta_error_{h}"] = _minutes(before[-1] - actual) if before else None
        stops.append(row)
    result = {
        "seed": args.seed,
        "routes": Route.objects.exclude(status=Route.Status.DRAFT).count(),
        "served": len(stops),
        "simulated_hours": simulated,
        "wall_s": clock.perf_counter() - wall,
        "horizons": [_summary(stops, h) for h in HORIZONS],
        "stops": stops,
    }
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    return 0


def _minutes(delta: timedelta) -> float:
    return delta.total_seconds() / 60


def _summary(stops: list[dict], h: int) -> dict:
    import numpy as np

    rows = [s for s in stops if s[f"eta_error_{h}"] is not None and s["plan_error"] is not None]
    eta = np.array([s[f"eta_error_{h}"] for s in rows])
    plan = np.array([s["plan_error"] for s in rows])
    if not rows:
        return {
            "minutes": h,
            "stops": 0,
            **dict.fromkeys(("eta_mean", "eta_p90", "eta_bias", "plan_mean", "plan_p90"), float("nan")),
        }
    return {
        "minutes": h,
        "stops": len(rows),
        "eta_mean": float(np.mean(np.abs(eta))),
        "eta_p90": float(np.percentile(np.abs(eta), 90)),
        "eta_bias": float(np.mean(eta)),
        "plan_mean": float(np.mean(np.abs(plan))),
        "plan_p90": float(np.percentile(np.abs(plan), 90)),
    }


if __name__ == "__main__":
    sys.exit(main())
