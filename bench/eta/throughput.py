"""Throughput of one ETA run: 1,000 routes in progress, ~20 stops each, on SQLite and PostgreSQL.

    .venv/bin/python -m bench.eta.throughput [--quick] [--routes 1000] [--stops 20]
        [--backends sqlite,postgresql] [--runs 5] [--json FILE]

Each backend gets a fresh database (bench.eta.databases), built with bulk_create: one
organisation, a depot, one driver per route, routes in progress since two hours ago whose first
40 % of stops are done (so the pace factor has legs to learn from), a position per driver a
minute old. It prints the median wall time of `--runs` calls of tracking.eta.eta_recompute
(after one warm-up call) and the number of SQL queries of one call.
"""

import argparse
import json
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

from bench.eta.databases import django_setup, run_child

TARGET_SECONDS = 1.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=1000)
    parser.add_argument("--stops", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--quick", action="store_true", help="3 runs per backend (same size)")
    parser.add_argument("--json", help="save the rows here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.runs = 3
    if args.child:
        return child(args)

    rows = []
    for backend in args.backends.split(","):
        out = Path(f"/tmp/bench-eta-throughput-{backend}.json")
        out.unlink(missing_ok=True)
        child_args = ["--routes", str(args.routes), "--stops", str(args.stops), "--runs", str(args.runs)]
        if run_child("bench.eta.throughput", backend, [*child_args, "--out", str(out)]) != 0:
            print(f"{backend}: the run failed", file=sys.stderr)
            return 1
        rows.append({"backend": backend, **json.loads(out.read_text())})
        out.unlink()
    print(f"{'backend':<11} {'routes':>6} {'stops':>6} {'median s':>9} {'min s':>7} {'queries':>7}  target")
    for row in rows:
        verdict = "met" if row["median_s"] < TARGET_SECONDS else "MISSED"
        print(
            f"{row['backend']:<11} {row['routes']:>6} {row['stops']:>6} {row['median_s']:>9.3f} "
            f"{row['min_s']:>7.3f} {row['queries']:>7}  < {TARGET_SECONDS:g} s: {verdict}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


def child(args) -> int:
    django_setup()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from tracking.eta import eta_recompute

    now = timezone.now()
    stops = build(routes=args.routes, stops=args.stops, now=now)
    eta_recompute(now=now)  # warm-up: connection, imports, caches
    times = []
    for _ in range(args.runs):
        started = time.perf_counter()
        result = eta_recompute(now=now)
        times.append(time.perf_counter() - started)
    with CaptureQueriesContext(connection) as captured:
        eta_recompute(now=now)
    row = {
        "routes": result["routes"],
        "stops": stops,
        "etas_written": result["stops"],
        "median_s": statistics.median(times),
        "min_s": min(times),
        "runs": args.runs,
        "queries": len(captured),
    }
    Path(args.out).write_text(json.dumps(row))
    return 0


def build(*, routes: int, stops: int, now) -> int:
    """The routes in progress; returns how many stops there are."""
    from django.contrib.auth import get_user_model

    from dispatch.models import Depot, Driver, Order, Organization, Route, Stop
    from dispatch.timeutils import local_today
    from tracking.models import DriverPosition

    rng = random.Random(6)
    org = Organization.objects.create(name="Bench ETA", slug="bench-eta", timezone="Europe/Berlin")
    day = local_today(org.tzinfo, now)
    depot = Depot.objects.create(organization=org, name="Depot", address="Depot", lat=52.52, lng=13.405)
    users = get_user_model().objects.bulk_create(
        [get_user_model()(username=f"eta{n}", password="!") for n in range(routes)]
    )
    drivers = Driver.objects.bulk_create([Driver(organization=org, user=u, depot=depot) for u in users])
    started = now - timedelta(hours=2)
    route_rows = Route.objects.bulk_create(
        [
            Route(
                organization=org, depot=depot, driver=d, date=day, status=Route.Status.IN_PROGRESS,
                started_at=started,
            )
            for d in drivers
        ]
    )  # fmt: skip
    orders, stop_rows, done = [], [], int(stops * 0.4)
    for _ in range(len(route_rows) * stops):
        lat, lng = 52.52 + rng.uniform(-0.06, 0.06), 13.405 + rng.uniform(-0.1, 0.1)
        window = now + timedelta(minutes=rng.randint(-120, 240))
        orders.append(
            Order(
                organization=org, recipient_name="R", address="A", lat=lat, lng=lng,
                service_date=day, window_start=window, window_end=window + timedelta(hours=2),
                service_minutes=rng.randint(2, 8),
            )
        )  # fmt: skip
    orders = Order.objects.bulk_create(orders, batch_size=2000)
    for i, route in enumerate(route_rows):
        clock = started
        for k in range(stops):
            stop = Stop(
                organization=org, route=route, order=orders[i * stops + k], sequence=k + 1,
                planned_arrival=started + timedelta(minutes=12 * (k + 1)),
            )  # fmt: skip
            if k < done:
                stop.status = Stop.Status.COMPLETED
                stop.arrived_at = clock + timedelta(minutes=rng.uniform(4, 10))
                stop.departed_at = clock = stop.arrived_at + timedelta(minutes=rng.uniform(2, 8))
            stop_rows.append(stop)
    Stop.objects.bulk_create(stop_rows, batch_size=2000)
    DriverPosition.objects.bulk_create(
        [
            DriverPosition(
                driver=d, organization=org, lat=52.52 + rng.uniform(-0.05, 0.05), lng=13.405,
                recorded_at=now - timedelta(minutes=1), received_at=now - timedelta(minutes=1),
            )
            for d in drivers
        ]
    )  # fmt: skip
    return len(stop_rows)


if __name__ == "__main__":
    sys.exit(main())
