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
- "small": the same shape with 10 drivers and 100 stops, to show the query count is constant.

It then counts the SQL queries of one dashboard partial request in-process at 10 and at 200
drivers, and writes the tokens, the dispatcher's session key and the counts to --out.
"""

import argparse
import json
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
    parser.add_argument("--small-drivers", type=int, default=10)
    parser.add_argument("--small-stops", type=int, default=100)
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
    _routes_under_way(ingest, drivers, now)
    tokens = Token.objects.bulk_create([Token(key=Token.generate_key(), user=d.user) for d in drivers])

    dash = _dashboard_org("dashboard", args.dashboard_drivers, args.dashboard_stops, password, now, rng)
    small = _dashboard_org("small", args.small_drivers, args.small_stops, password, now, rng)

    User = get_user_model()
    return {
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
    Route.objects.bulk_create(
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


def _dashboard_org(prefix: str, n_drivers: int, n_stops: int, password: str, now: datetime, rng) -> dict:
    """An organisation's day in progress: what a dispatcher's dashboard shows at `now`."""
    from django.contrib.auth import get_user_model

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
    StopEvent.objects.bulk_create(
        [
            StopEvent(
                organization=org,
                order=stop.order,
                stop=stop,
                kind=StopEvent.Kind.FAILED if stop.status == Stop.Status.FAILED else StopEvent.Kind.DELIVERED,
                from_status=Stop.Status.ARRIVED,
                to_status=stop.status,
                at=stop.arrived_at,
            )
            for stop in stops
            if stop.arrived_at
        ]
    )
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
        "today": today.isoformat(),
    }


def _session_for(user) -> str:
    """A logged-in session row, as django.contrib.auth.login() would write it."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
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
    return {
        "partial": len(full),
        "not_modified": len(cached) if not_modified.status_code == 304 else None,
        "bytes": len(response.content),
    }


if __name__ == "__main__":
    sys.exit(main())
