"""Build the benchmark database (run as a subprocess of bench.live.run, one per backend).

    DJANGO_SETTINGS_MODULE=bench.live.settings DATABASE_URL=... \
        python -m bench.live.prepare --out prepared.json

Migrates the empty database named by DATABASE_URL, then creates three organisations with the
app's own models (bulk_create: factories would take minutes for 3,000 rows of each kind):

- "ingest": the drivers that send fixes, each with its own API token and an in-progress route
  today (ingest keeps the route's travelled distance, so that work is part of the figure); an
  organisation of its own, so their positions do not change the dashboard being measured;
- "dashboard": 200 drivers, 200 published/in-progress routes today, 2,000 stops, a position per
  driver, and the delivery events of the stops already done;
- "small": the same shape with 10 drivers and 100 stops, to show the query count is constant;
- "tracking" (with --tracking-links N): the customers' side, N open orders on 100 in-progress
  routes today (N / 100 open stops per route after 10 done ones), each stop with a live ETA,
  each driver with a position, and a tracking link per open order (tracking_link_ensure); two
  more routes of 5 and 200 stops for the query count.

It then counts the SQL queries of one dashboard partial request in-process at 10 and at 200
drivers (and of the tracking partial on the 5- and 200-stop routes), and writes the tokens, the
dispatcher's session key, the tracking tokens and the counts to --out.
"""

import argparse
import json
import math
import os
import random
import sys
from datetime import datetime, time, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The ingest drivers spread around Berlin; bench.live.fixes moves each on its own circle.
BERLIN = (52.52, 13.405)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file for tokens, session key, query counts")
    parser.add_argument("--tokens", required=True, help="text file: one ingest driver token a line")
    parser.add_argument("--ingest-drivers", type=int, default=1000)
    parser.add_argument("--dashboard-drivers", type=int, default=200)
    parser.add_argument("--dashboard-stops", type=int, default=2000)
    parser.add_argument(
        "--history-days",
        type=int,
        default=90,
        help="days of stop events before today in the dashboard organisation (a carrier in service)",
    )
    parser.add_argument("--small-drivers", type=int, default=10)
    parser.add_argument("--small-stops", type=int, default=100)
    parser.add_argument(
        "--tracking-links", type=int, default=0, help="open orders with a tracking link (0: none)"
    )
    parser.add_argument(
        "--ingest-stops", type=int, default=0, help="open stops per ingest route (JOB-7; 0: none)"
    )
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.live.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    result = build(args)
    Path(args.tokens).write_text("".join(f"{token}\n" for token in result.pop("tokens")))
    Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


def build(args) -> dict:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.utils import timezone
    from rest_framework.authtoken.models import Token

    from dispatch.models import Organization

    now = timezone.now()
    rng = random.Random(4)  # the same city every run
    # Nobody logs in with a password: the API uses tokens, the dispatcher a session made here.
    # One unusable hash for all, because hashing 1,200 passwords would take minutes.
    password = make_password(None)

    ingest = Organization.objects.create(name="Bench ingest", slug="bench-ingest", timezone="Europe/Berlin")
    drivers = _drivers(ingest, args.ingest_drivers, "ingest", password)
    routes = _routes_under_way(ingest, drivers, now)
    if args.ingest_stops:
        _open_stops(ingest, routes, args.ingest_stops, now, random.Random(7))
    tokens = Token.objects.bulk_create([Token(key=Token.generate_key(), user=d.user) for d in drivers])

    dash = _dashboard_org(
        "dashboard", args.dashboard_drivers, args.dashboard_stops, password, now, rng, args.history_days
    )
    small = _dashboard_org("small", args.small_drivers, args.small_stops, password, now, rng)

    User = get_user_model()
    tracking = _tracking_org(args.tracking_links, password, now, rng) if args.tracking_links else None
    return {
        "tracking": tracking,
        "tokens": [t.key for t in tokens],
        "dashboard_session": _session_for(User.objects.get(username="dashboard-dispatcher")),
        "dashboard": dash,
        "small": small,
        "queries": {
            str(args.small_drivers): _queries(User.objects.get(username="small-dispatcher")),
            str(args.dashboard_drivers): _queries(User.objects.get(username="dashboard-dispatcher")),
        },
    }


def _drivers(org, n: int, prefix: str, password: str) -> list:
    from django.contrib.auth import get_user_model

    from dispatch.models import Driver, Membership

    User = get_user_model()
    users = User.objects.bulk_create(
        [
            User(
                username=f"{prefix}-{i:04d}", first_name=f"Driver{i:04d}", last_name=prefix, password=password
            )
            for i in range(n)
        ]
    )
    Membership.objects.bulk_create(
        [Membership(user=u, organization=org, role=Membership.Role.DRIVER) for u in users]
    )
    return Driver.objects.bulk_create(
        [Driver(organization=org, user=u, phone=f"+49151{i:07d}") for i, u in enumerate(users)]
    )


def _routes_under_way(org, drivers: list, now: datetime) -> None:
    """One in-progress route today per driver, started before the first fix the load sends."""
    from dispatch.models import Depot, Route
    from dispatch.timeutils import local_today

    depot = Depot.objects.create(
        organization=org, name="Ingest", address="Lindenstraße 1", lat=52.5035, lng=13.3989
    )
    today = local_today(org.tzinfo, now)
    started = now - timedelta(hours=2)
    return Route.objects.bulk_create(
        [
            Route(
                organization=org,
                date=today,
                depot=depot,
                driver=d,
                status=Route.Status.IN_PROGRESS,
                started_at=started,
            )
            for d in drivers
        ]
    )


def _open_stops(org, routes: list, n: int, now: datetime, rng) -> None:
    """JOB-7: `n` open stops per ingest route, so that each ETA recompute has stops to write.

    The orders carry no phone or e-mail: no customer message can be made from them.
    """
    from dispatch.models import Order, Stop
    from dispatch.timeutils import local_today

    today = local_today(org.tzinfo, now)
    orders, stops = [], []
    for i, route in enumerate(routes):
        for seq in range(1, n + 1):
            arrival = now + timedelta(minutes=seq * 8)
            orders.append(
                Order(
                    organization=org,
                    external_ref=f"ingest-{i:04d}-{seq:03d}",
                    status=Order.Status.OUT_FOR_DELIVERY,
                    recipient_name=f"Customer {i}-{seq}",
                    address=f"Oranienstraße {seq}, 10999 Berlin",
                    lat=BERLIN[0] + rng.uniform(-0.07, 0.07),
                    lng=BERLIN[1] + rng.uniform(-0.11, 0.11),
                    service_date=today,
                )
            )
            stops.append(Stop(organization=org, route=route, sequence=seq, planned_arrival=arrival))
    orders = Order.objects.bulk_create(orders)
    for stop, order in zip(stops, orders, strict=True):
        stop.order = order
    Stop.objects.bulk_create(stops)


def _dashboard_org(
    prefix: str, n_drivers: int, n_stops: int, password: str, now: datetime, rng, history_days: int = 0
) -> dict:
    """An organisation's day in progress: what a dispatcher's dashboard shows at `now`."""
    from django.contrib.auth import get_user_model
    from django.db.models import F

    from dispatch.models import Depot, Membership, Order, Organization, Route, Stop, StopEvent, Vehicle
    from dispatch.timeutils import local_today
    from tracking.models import DriverPosition

    org = Organization.objects.create(
        name=f"Bench {prefix}", slug=f"bench-{prefix}", timezone="Europe/Berlin"
    )
    tz = org.tzinfo
    today = local_today(tz, now)
    dispatcher = get_user_model().objects.create(username=f"{prefix}-dispatcher", password=password)
    Membership.objects.create(user=dispatcher, organization=org, role=Membership.Role.DISPATCHER)
    depot = Depot.objects.create(
        organization=org, name="Kreuzberg", address="Lindenstraße 1", lat=52.5035, lng=13.3989
    )
    vehicles = Vehicle.objects.bulk_create(
        [Vehicle(organization=org, name=f"Van {i + 1}", capacity=80) for i in range(n_drivers)]
    )
    drivers = _drivers(org, n_drivers, prefix, password)

    def local(hour: float):
        return datetime.combine(today, time(0), tzinfo=tz) + timedelta(hours=hour)

    # Three routes in four are under way, the others published and waiting for their driver.
    routes = Route.objects.bulk_create(
        [
            Route(
                organization=org,
                date=today,
                depot=depot,
                driver=driver,
                vehicle=vehicles[i],
                status=Route.Status.IN_PROGRESS if i % 4 else Route.Status.PUBLISHED,
                planned_start=local(8),
                planned_end=local(18),
                planned_distance_m=60_000,
                planned_duration_s=36_000,
                started_at=local(8) if i % 4 else None,
            )
            for i, driver in enumerate(drivers)
        ]
    )
    per_route = n_stops // n_drivers
    orders, stops = [], []
    for i, route in enumerate(routes):
        for seq in range(1, per_route + 1):
            arrival = local(8.5 + seq * 9.5 / per_route)
            done = route.status == Route.Status.IN_PROGRESS and arrival < now
            failed = done and rng.random() < 0.1
            start_hour = rng.choice([8, 9, 10, 12, 14, 16])
            orders.append(
                Order(
                    organization=org,
                    external_ref=f"{prefix}-{i:03d}-{seq:02d}",
                    status=(Order.Status.FAILED if failed else Order.Status.DELIVERED)
                    if done
                    else Order.Status.OUT_FOR_DELIVERY,
                    recipient_name=f"Customer {i}-{seq}",
                    address=f"Oranienstraße {seq}, 10999 Berlin",
                    lat=BERLIN[0] + rng.uniform(-0.07, 0.07),
                    lng=BERLIN[1] + rng.uniform(-0.11, 0.11),
                    service_date=today,
                    window_start=local(start_hour),
                    window_end=local(start_hour + rng.choice([1, 2, 4])),
                )
            )
            stops.append(
                Stop(
                    organization=org,
                    route=route,
                    sequence=seq,
                    planned_arrival=arrival,
                    status=(Stop.Status.FAILED if failed else Stop.Status.COMPLETED)
                    if done
                    else Stop.Status.PENDING,
                    arrived_at=arrival if done else None,
                    failure_reason="Nobody home" if failed else "",
                )
            )
    orders = Order.objects.bulk_create(orders)
    for stop, order in zip(stops, orders, strict=True):
        stop.order = order
    stops = Stop.objects.bulk_create(stops)

    def events(days_ago: int) -> list:
        return [
            StopEvent(
                organization=org,
                order=stop.order,
                stop=stop,
                kind=StopEvent.Kind.FAILED if stop.status == Stop.Status.FAILED else StopEvent.Kind.DELIVERED,
                from_status=Stop.Status.ARRIVED,
                to_status=stop.status,
                at=stop.arrived_at - timedelta(days=days_ago),
            )
            for stop in stops
            if stop.arrived_at
        ]

    StopEvent.objects.bulk_create(events(0))
    # The days before today, as a carrier's database holds them after a few months: the
    # dashboard reads today's events only and must not pay for the rest. (They hang on today's
    # orders: only their count and times matter here.) recorded_at is auto_now_add, so it is set
    # to each event's own time afterwards.
    for days_ago in range(1, history_days + 1):
        StopEvent.objects.bulk_create(events(days_ago), batch_size=2000)
    StopEvent.objects.filter(organization=org, at__lt=local(0)).update(recorded_at=F("at"))
    # Fixes from the last few minutes; about a third older than STALE_AFTER, drawn greyed out.
    positions = []
    for driver in drivers:
        at = now - timedelta(seconds=rng.uniform(2, 450))
        positions.append(
            DriverPosition(
                driver=driver,
                organization=org,
                lat=BERLIN[0] + rng.uniform(-0.07, 0.07),
                lng=BERLIN[1] + rng.uniform(-0.11, 0.11),
                accuracy_m=8,
                speed_mps=rng.uniform(0, 14),
                heading_deg=rng.uniform(0, 360),
                recorded_at=at,
                received_at=at,
            )
        )
    DriverPosition.objects.bulk_create(positions)
    return {
        "drivers": len(drivers),
        "routes": len(routes),
        "stops": len(stops),
        "done": sum(1 for s in stops if s.arrived_at),
        "positions": len(positions),
        "history_events": StopEvent.objects.filter(organization=org, at__lt=local(0)).count(),
        "today": today.isoformat(),
    }


TRACKING_ROUTES = 100
TRACKING_DONE_PER_ROUTE = 10


def _tracking_org(n_links: int, password: str, now: datetime, rng) -> dict:
    """The customers' side of a day in progress: `n_links` open orders with a tracking link.

    100 in-progress routes today; on each, 10 stops done (with their events) and n_links / 100
    open ones, every stop with a live ETA updated a minute ago; a position per driver, fresh.
    Then two routes more, of 5 and of 200 open stops, for the query count per partial.
    """
    from dispatch.models import Depot, Order, Organization, Route, Stop, StopEvent, Vehicle
    from dispatch.timeutils import local_today
    from tracking.links import link_token, tracking_link_ensure
    from tracking.models import DriverPosition

    org = Organization.objects.create(name="Bench tracking", slug="bench-tracking", timezone="Europe/Berlin")
    tz = org.tzinfo
    today = local_today(tz, now)
    depot = Depot.objects.create(
        organization=org, name="Kreuzberg", address="Lindenstraße 1", lat=52.5035, lng=13.3989
    )
    open_per_route = math.ceil(n_links / TRACKING_ROUTES)
    shapes = [open_per_route] * TRACKING_ROUTES + [5, 200]  # open stops per route
    drivers = _drivers(org, len(shapes), "tracking", password)
    vehicles = Vehicle.objects.bulk_create(
        [
            Vehicle(organization=org, name=f"Van {i + 1}", registration=f"B-DS {i + 1}", capacity=80)
            for i in range(len(shapes))
        ]
    )
    routes = Route.objects.bulk_create(
        [
            Route(
                organization=org,
                date=today,
                depot=depot,
                driver=driver,
                vehicle=vehicles[i],
                status=Route.Status.IN_PROGRESS,
                planned_start=now - timedelta(hours=3),
                planned_end=now + timedelta(hours=6),
                started_at=now - timedelta(hours=3),
            )
            for i, driver in enumerate(drivers)
        ]
    )
    # Updated a minute ago (on the whole minute: the page shows the time of the update).
    updated = now.replace(second=0, microsecond=0) - timedelta(minutes=1)
    orders, stops = [], []
    for i, (route, n_open) in enumerate(zip(routes, shapes, strict=True)):
        done = TRACKING_DONE_PER_ROUTE if i < TRACKING_ROUTES else 0
        for seq in range(1, done + n_open + 1):
            is_done = seq <= done
            arrival = now + timedelta(minutes=(seq - done) * 8)
            orders.append(
                Order(
                    organization=org,
                    external_ref=f"track-{i:03d}-{seq:03d}",
                    status=Order.Status.DELIVERED if is_done else Order.Status.OUT_FOR_DELIVERY,
                    recipient_name=f"Customer {i}-{seq}",
                    address=f"Oranienstraße {seq}, 10999 Berlin",
                    lat=BERLIN[0] + rng.uniform(-0.07, 0.07),
                    lng=BERLIN[1] + rng.uniform(-0.11, 0.11),
                    service_date=today,
                    window_start=arrival - timedelta(hours=1),
                    window_end=arrival + timedelta(hours=1),
                )
            )
            stops.append(
                Stop(
                    organization=org,
                    route=route,
                    sequence=seq,
                    planned_arrival=arrival,
                    eta=None if is_done else arrival + timedelta(minutes=rng.randint(-10, 10)),
                    eta_updated_at=None if is_done else updated,
                    status=Stop.Status.COMPLETED if is_done else Stop.Status.PENDING,
                    arrived_at=arrival if is_done else None,
                )
            )
    orders = Order.objects.bulk_create(orders)
    for stop, order in zip(stops, orders, strict=True):
        stop.order = order
    stops = Stop.objects.bulk_create(stops)
    StopEvent.objects.bulk_create(
        [
            StopEvent(
                organization=org,
                order=stop.order,
                stop=stop,
                kind=StopEvent.Kind.DELIVERED,
                from_status=Stop.Status.ARRIVED,
                to_status=stop.status,
                at=stop.arrived_at,
            )
            for stop in stops
            if stop.arrived_at
        ]
    )
    DriverPosition.objects.bulk_create(
        [
            DriverPosition(
                driver=driver,
                organization=org,
                lat=BERLIN[0] + rng.uniform(-0.07, 0.07),
                lng=BERLIN[1] + rng.uniform(-0.11, 0.11),
                accuracy_m=8,
                speed_mps=8,
                heading_deg=rng.uniform(0, 360),
                recorded_at=now - timedelta(seconds=5),
                received_at=now - timedelta(seconds=5),
            )
            for driver in drivers
        ]
    )
    # A link per open order, made the app's way (one query to look, one insert each).
    open_stops = [s for s in stops if s.status == Stop.Status.PENDING]
    main = [s for s in open_stops if s.route_id in {r.pk for r in routes[:TRACKING_ROUTES]}][:n_links]
    tokens = [link_token(tracking_link_ensure(order=s.order, now=now)) for s in main]
    queries = {}
    for route, n_open in zip(routes[TRACKING_ROUTES:], shapes[TRACKING_ROUTES:], strict=True):
        own = sorted((s for s in open_stops if s.route_id == route.pk), key=lambda s: s.sequence)
        # The next stop (the driver shown) and the last one (hidden: many stops before it).
        queries[str(n_open)] = {
            which: _tracking_queries(link_token(tracking_link_ensure(order=stop.order, now=now)))
            for which, stop in (("next", own[0]), ("last", own[-1]))
        }
    return {
        "routes": TRACKING_ROUTES,
        "stops": sum(1 for s in stops if s.route_id in {r.pk for r in routes[:TRACKING_ROUTES]}),
        "open_per_route": open_per_route,
        "links": len(tokens),
        "tokens": tokens,
        "queries": queries,
    }


def _tracking_queries(token: str) -> dict:
    """SQL queries of one tracking partial poll (after a warm-up one): 200, then 304."""
    from django.core.cache import cache
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    cache.clear()  # the limiter's counters: 60 a minute from "127.0.0.1" would be reached here
    client = Client()
    path, htmx = f"/t/{token}/", {"HX-Request": "true"}
    warm = client.get(path, headers=htmx)
    assert warm.status_code == 200, warm.status_code
    with CaptureQueriesContext(connection) as full:
        response = client.get(path, headers=htmx)
    assert response.status_code == 200, response.status_code
    with CaptureQueriesContext(connection) as cached:
        not_modified = client.get(path, headers={**htmx, "If-None-Match": response["ETag"]})
    with CaptureQueriesContext(connection) as page:
        client.get(path)
    with CaptureQueriesContext(connection) as api:
        client.get(f"/api/v1/track/{token}/")
    return {
        "partial": len(full),
        "not_modified": len(cached) if not_modified.status_code == 304 else None,
        "page": len(page),
        "json": len(api),
        "bytes": len(response.content),
        "sql": [q["sql"][:160] for q in full.captured_queries],
    }


def _session_for(user) -> str:
    """A logged-in session row, as django.contrib.auth.login() would write it."""
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

    session = import_module(settings.SESSION_ENGINE).SessionStore()  # the app's, as a login
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "dispatch.auth_backends.MemberBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return session.session_key


def _queries(user) -> dict:
    """SQL queries of one dashboard partial request (after a warm-up one), 200 and 304."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    client.force_login(user)
    htmx = {"HX-Request": "true"}
    warm = client.get("/", headers=htmx)
    assert warm.status_code == 200, warm.status_code
    with CaptureQueriesContext(connection) as full:
        response = client.get("/", headers=htmx)
    assert response.status_code == 200, response.status_code
    with CaptureQueriesContext(connection) as cached:
        not_modified = client.get("/", headers={**htmx, "If-None-Match": response["ETag"]})
    # A minute boundary between the two requests changes the ETag; then it is a 200.
    counted = {
        "partial": len(full),
        "not_modified": len(cached) if not_modified.status_code == 304 else None,
        "bytes": len(response.content),
    }
    # What a browser receives (it accepts gzip), beside the plain size. Counted after the
    # queries: a request's start empties the connection's query log they read.
    packed = client.get("/", headers={**htmx, "Accept-Encoding": "gzip"})
    if packed.headers.get("Content-Encoding") == "gzip":
        counted["gzip_bytes"] = len(packed.content)
    return counted


if __name__ == "__main__":
    sys.exit(main())
