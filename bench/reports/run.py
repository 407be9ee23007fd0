"""The reports page at scale (issue 7 item 5): 100,000 orders and 1,000,000 stop events on
PostgreSQL, then the render time of /reports/ and its SQL query count.

    .venv/bin/python -m bench.reports.run                      # the figures in docs/benchmarks.md
    .venv/bin/python -m bench.reports.run --orders 10000 --runs 3   # a quick smoke run
    .venv/bin/python -m bench.reports.run --reuse              # build once, then measure again

The parent creates the database `doorstep_bench_reports` on --pg-url's server (dropped first if
a crashed run left it, dropped again afterwards unless --keep) and runs itself as a child with
DATABASE_URL pointing at it, because the app's settings read DATABASE_URL once at import.
With --reuse a database left by an earlier run is kept: it is migrated (new migrations, data
migrations included, run on the built rows) and measured without rebuilding (~270 s saved);
if none is there, it is built and kept.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DB_NAME = "doorstep_bench_reports"
DAYS = 100
DRIVERS = 50
REASONS = ["Nobody home", "Address not found", "Refused by recipient", "Damaged parcel", "No safe place"]


def _admin(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)


def _exists(url: str) -> bool:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone() is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432/postgres",
                        help="a database on the server to connect to for CREATE/DROP DATABASE")  # fmt: skip
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000, help="stop events in all")
    parser.add_argument("--runs", type=int, default=7, help="timed requests per page (median)")
    parser.add_argument("--keep", action="store_true", help="leave the database for a look afterwards")
    parser.add_argument("--reuse", action="store_true",
                        help="measure the database an earlier run kept (built if missing)")  # fmt: skip
    parser.add_argument("--explain", metavar="FILE",
                        help="EXPLAIN ANALYZE each query of one request per page into FILE")  # fmt: skip
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if not (args.reuse and _exists(args.pg_url)):
        _admin(args.pg_url, f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        _admin(args.pg_url, f"CREATE DATABASE {DB_NAME}")
    url = args.pg_url.rsplit("/", 1)[0] + f"/{DB_NAME}"
    env = {**os.environ, "DATABASE_URL": url, "SECURE_SSL_REDIRECT": "false", "DEBUG": "false"}
    try:
        code = subprocess.call([sys.executable, "-m", "bench.reports.run", "--child", *sys.argv[1:]],
                               cwd=ROOT, env=env)  # fmt: skip
    finally:
        if not (args.keep or args.reuse):
            _admin(args.pg_url, f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
    raise SystemExit(code)


def child(args) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command

    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    print(f"migrated in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    world = reuse() if args.reuse else None
    if world:
        print(f"reusing {world['counts']} (built earlier; --orders/--events ignored)")
    else:
        world = build(orders=args.orders, events=args.events)
        print(f"built {world['counts']} in {time.perf_counter() - started:.1f} s")
    rows = measure(world, runs=args.runs, explain=args.explain)
    if args.json:
        Path(args.json).write_text(json.dumps({"counts": world["counts"], "rows": rows}, indent=2))


def reuse() -> dict | None:
    """The world of an earlier run's kept database, or None if it holds none."""
    from django.db import connection
    from django.db.models import Max, Min

    from dispatch.models import Membership, Order, Route, Stop, StopEvent

    membership = (
        Membership.objects.filter(organization__slug="bench", user__username="bench-dispatcher")
        .select_related("user")
        .first()
    )
    if membership is None:
        return None
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # statistics for any column or index a new migration added
    span = Route.objects.aggregate(first=Min("date"), last=Max("date"))
    days = [span["first"] + timedelta(days=n) for n in range((span["last"] - span["first"]).days + 1)]
    counts = {
        "orders": Order.objects.count(), "stops": Stop.objects.count(), "routes": Route.objects.count(),
        "stop_events": StopEvent.objects.count(), "days": len(days), "drivers": DRIVERS,
    }  # fmt: skip
    return {"dispatcher": membership.user, "days": days, "counts": counts}


def build(*, orders: int, events: int) -> dict:
    """One organisation in Berlin: 2 depots, DRIVERS drivers, DAYS days of completed routes
    ending today, `orders` orders (~93 % delivered at the first attempt, the failures re-tried
    the next day), and `events` stop events in all (the lifecycle of each order, padded with
    notes), with bulk_create in batches of 5,000 and COPY for the events."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.db import connection

    from dispatch.models import Depot, Driver, Membership, Order, Organization, Route, Stop, StopEvent
    from dispatch.timeutils import local_today

    rng = random.Random(7)
    org = Organization.objects.create(name="Bench Carrier", slug="bench", timezone="Europe/Berlin")
    tz = org.tzinfo
    User = get_user_model()
    dispatcher = User.objects.create(username="bench-dispatcher", password=make_password(None))
    Membership.objects.create(user=dispatcher, organization=org, role=Membership.Role.DISPATCHER)
    depots = [
        Depot.objects.create(organization=org, name=f"Depot {n}", address="x", lat=52.5 + n / 50, lng=13.4)
        for n in range(2)
    ]
    users = User.objects.bulk_create(
        User(username=f"bench-driver-{n}", first_name="Driver", last_name=f"{n:02d}", password="!")
        for n in range(DRIVERS)
    )  # fmt: skip
    Membership.objects.bulk_create(Membership(user=u, organization=org, role="driver") for u in users)
    drivers = Driver.objects.bulk_create(
        Driver(organization=org, user=u, depot=depots[n % 2]) for n, u in enumerate(users)
    )
    today = local_today(tz)
    days = [today - timedelta(days=DAYS - 1 - n) for n in range(DAYS)]

    def at(day: date, minutes: float) -> datetime:
        return datetime.combine(day, datetime.min.time(), tzinfo=tz).astimezone(UTC) + timedelta(
            minutes=minutes
        )

    per_day = orders // DAYS
    per_route = -(-per_day // DRIVERS)
    routes = Route.objects.bulk_create(
        (
            Route(
                organization=org, depot=driver.depot, driver=driver, date=day, status=Route.Status.COMPLETED,
                planned_start=at(day, 8 * 60), planned_end=at(day, 8 * 60 + per_route * 22 + 40),
                planned_duration_s=(per_route * 22 + 40) * 60, planned_distance_m=rng.randint(55_000, 90_000),
                started_at=at(day, 8 * 60 + rng.gauss(5, 5)), travelled_distance_m=0,
            )
            for day in days for driver in drivers
        ),
        batch_size=5000,
    )  # fmt: skip
    route_of = {(r.date, r.driver_id): r for r in routes}
    order_rows, plan = [], []  # plan: (order index, day, driver index, slot)
    for d, day in enumerate(days):
        for n in range(per_day):
            slot = n // DRIVERS
            start = 8 * 60 + (slot * 22 // 120) * 120 + 60
            order_rows.append(
                Order(
                    organization=org, depot=depots[(n % DRIVERS) % 2], recipient_name="R", address="A",
                    lat=52.5, lng=13.4, service_date=day, window_start=at(day, start),
                    window_end=at(day, start + 180), status=Order.Status.DELIVERED,
                )
            )  # fmt: skip
            plan.append((len(order_rows) - 1, d, n % DRIVERS, slot))
    outcomes = []
    for index, _d, _k, _slot in plan:
        failed = rng.random() < 0.07
        outcomes.append(failed)
        order = order_rows[index]
        order.status = Order.Status.FAILED if failed else Order.Status.DELIVERED
        if not failed and rng.random() < 0.3:
            order.rating = rng.choice([5, 5, 5, 4, 4, 3, 2, 1])
    order_rows = Order.objects.bulk_create(order_rows, batch_size=5000)
    stops, extra_seq = [], {}
    for (index, d, k, slot), failed in zip(plan, outcomes, strict=True):
        day, order = days[d], order_rows[index]
        route = route_of[(day, drivers[k].pk)]
        arrived = at(day, 8 * 60 + 25 + slot * 22 + rng.gauss(0, 25))
        stops.append(_stop(org, route, order, slot + 1, arrived, failed, rng, first=True))
        if failed and d + 1 < DAYS:  # re-attempted the next day at the end of the same driver's route
            nxt = route_of[(days[d + 1], drivers[k].pk)]
            seq = extra_seq[nxt.pk] = extra_seq.get(nxt.pk, per_route) + 1
            again = rng.random() < 0.2
            when = at(days[d + 1], 8 * 60 + 30 + seq * 22)
            stops.append(_stop(org, nxt, order, seq, when, again, rng, first=False))
            if not again:
                order.status = Order.Status.DELIVERED
    Order.objects.bulk_update([o for o in order_rows if o.status == "delivered"], ["status"], batch_size=5000)
    stops = Stop.objects.bulk_create(stops, batch_size=5000)
    # Each route ends after its last stop; it drove about its planned distance.
    ends = {}
    for stop in stops:
        ends[stop.route_id] = max(ends.get(stop.route_id, stop.departed_at), stop.departed_at)
    for route in routes:
        route.completed_at = ends.get(route.pk, route.started_at) + timedelta(minutes=30)
        route.travelled_distance_m = int(route.planned_distance_m * rng.uniform(0.95, 1.15))
    Route.objects.bulk_update(routes, ["completed_at", "travelled_distance_m"], batch_size=5000)
    _copy_events(org, stops, events, StopEvent, connection)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    counts = {
        "orders": Order.objects.count(), "stops": Stop.objects.count(), "routes": Route.objects.count(),
        "stop_events": StopEvent.objects.count(), "days": DAYS, "drivers": DRIVERS,
    }  # fmt: skip
    return {"dispatcher": dispatcher, "days": days, "counts": counts}


def _stop(org, route, order, sequence, arrived, failed, rng, *, first):
    # bulk_create skips dispatch.services.stop_transition (and order_rating_record), so `first`,
    # the window and the rating record what they would.
    from dispatch.models import Stop

    delivered = not failed
    return Stop(
        organization=org, route=route, order=order, sequence=sequence,
        window_start=order.window_start, window_end=order.window_end,
        rating=order.rating if delivered else None,
        status=Stop.Status.FAILED if failed else Stop.Status.COMPLETED,
        planned_arrival=arrived - timedelta(minutes=rng.gauss(0, 10)), arrived_at=arrived,
        departed_at=arrived + timedelta(minutes=rng.uniform(2, 8)),
        failure_reason=rng.choice(REASONS) if failed else "",
        proof_recorded_at=arrived + timedelta(minutes=2) if delivered and rng.random() < 0.97 else None,
        proof_complete=(rng.random() < 0.92) if delivered else None, first_attempt=first,
    )  # fmt: skip


def _copy_events(org, stops, total, StopEvent, connection) -> None:
    """The lifecycle of each stop's order (created … delivered or failed), padded with notes to
    `total` rows, through PostgreSQL's COPY (a million rows in seconds)."""
    columns = (
        "organization_id, order_id, stop_id, kind, from_status, to_status, reason, note, at, recorded_at"
    )
    per_stop = max(1, total // len(stops))
    written = 0
    connection.ensure_connection()
    raw = connection.connection  # psycopg's own connection, in autocommit as Django leaves it
    with (
        raw.cursor() as cursor,
        cursor.copy(f"COPY {StopEvent._meta.db_table} ({columns}) FROM STDIN") as copy,
    ):
        for i, stop in enumerate(stops):
            n = per_stop + (1 if i < total - per_stop * len(stops) else 0)
            outcome = "failed" if stop.failure_reason else "delivered"
            kinds = ["created", "status", "status", "en_route", "arrived", outcome]
            for j in range(n):
                kind = kinds[j] if j < len(kinds) else "note"
                when = stop.arrived_at + timedelta(minutes=j - 5)
                reason = stop.failure_reason if kind == "failed" else ""
                note = "bench" if kind == "note" else ""
                copy.write_row((org.pk, stop.order_id, stop.pk, kind, "", "", reason, note, when, when))
                written += 1
    print(f"copied {written:,} stop events")


def measure(world: dict, *, runs: int, explain: str | None = None) -> list[dict]:
    from django.conf import settings
    from django.db import connection, reset_queries
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    settings.ALLOWED_HOSTS = ["testserver"]
    # No collectstatic for a benchmark: plain static storage, as in the tests.
    plain = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    settings.STORAGES = {**settings.STORAGES, "staticfiles": plain}
    client = Client()
    client.force_login(world["dispatcher"])
    first, last = world["days"][0], world["days"][-1]
    pages = [
        ("/reports/ (default: last 28 days)", "/reports/"),
        (f"/reports/ ({len(world['days'])} days, every order)", f"/reports/?start={first}&end={last}"),
        ("drivers CSV (every order)", f"/reports/?start={first}&end={last}&format=csv&table=drivers"),
        ("routes CSV (every route)", f"/reports/?start={first}&end={last}&format=csv&table=routes"),
    ]
    rows, plans = [], []
    print(f"\n{'page':<40} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'queries':>8}")
    for name, url in pages:
        response = client.get(url)  # warm-up: connection, templates, caches
        assert response.status_code == 200, (url, response.status_code, response.content[:300])
        times = []
        for _ in range(runs):
            reset_queries()
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                client.get(url)
                times.append((time.perf_counter() - started) * 1000)
        row = {"page": name, "median_ms": round(statistics.median(times), 1), "min_ms": round(min(times), 1),
               "max_ms": round(max(times), 1), "queries": len(queries), "runs": runs}  # fmt: skip
        rows.append(row)
        print(f"{name:<40} {row['median_ms']:>10} {row['min_ms']:>8} {row['max_ms']:>8} {row['queries']:>8}")
        if explain:
            plans.append(_explain(name, queries.captured_queries, connection))
    if explain:
        Path(explain).write_text("\n\n".join(plans))
        print(f"query plans written to {explain}")
    return rows


def _explain(page: str, queries: list[dict], connection) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of each SELECT of one request, slowest first, with a
    one-line summary per query printed as it goes."""
    plans = []
    with connection.cursor() as cursor:
        for n, query in enumerate(queries, start=1):
            if not query["sql"].lstrip().upper().startswith("SELECT"):
                continue
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + query["sql"])
            lines = [line for (line,) in cursor.fetchall()]
            ms = next((float(line.split()[2]) for line in lines if line.startswith("Execution Time")), 0.0)
            plans.append((ms, n, query["sql"], lines))
    plans.sort(key=lambda p: -p[0])
    print(f"  {page}: " + ", ".join(f"q{n} {ms:.0f} ms" for ms, n, _sql, _lines in plans[:8]))
    return f"### {page}\n\n" + "\n\n".join(
        f"-- q{n}: {ms:.1f} ms\n{sql}\n" + "\n".join(lines) for ms, n, sql, lines in plans
    )


if __name__ == "__main__":
    main()
