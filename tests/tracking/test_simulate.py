import datetime as dt
import random
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from dispatch.models import Order, Route, Stop
from dispatch.services import route_create, route_transition, stop_transition
from dispatch.timeutils import local_today
from tests.factories import TODAY, DriverFactory, OrderFactory, _at
from tracking.models import DriverPosition, LocationPing
from tracking.simulation import Phase, Simulation, advance, publish_demo_day

NOW = _at(TODAY, 10)  # inside the factories' 9-12 windows: nobody waits at a door
# About 0.5-1.5 km from the factories' depot (52.5035, 13.3989).
STOP_POINTS = [(52.5080, 13.4050), (52.5120, 13.3950), (52.4990, 13.3900)]


def _published_route(org, depot, driver, *, day=TODAY, points=STOP_POINTS):
    orders = [
        OrderFactory(organization=org, lat=lat, lng=lng, service_date=day, service_minutes=5)
        for lat, lng in points
    ]
    route = route_create(organization=org, driver=driver, depot=depot, date=day, orders=orders)
    return route_transition(route=route, to=Route.Status.PUBLISHED, by=None)


def _run(sim, *, start=NOW, step=600, rng=None, until=None, max_steps=50):
    """Advance in `step`-second ticks until nothing is left to drive (or `until()` holds)."""
    rng = rng or random.Random(7)
    now, lines = start, []
    for _ in range(max_steps):
        if not sim.active or (until is not None and until()):
            break
        lines += advance(sim, now=now, dt_seconds=step, rng=rng)
        now += dt.timedelta(seconds=step)
    return now, lines


def _stops(route):
    return list(Stop.objects.filter(route=route).select_related("order").order_by("sequence"))


@pytest.mark.django_db
def test_simulation_delivers_every_stop_in_order_and_completes_the_route(org, depot, driver):
    route = _published_route(org, depot, driver)
    sim = Simulation.from_db(now=NOW, failure_rate=0.0)

    _, lines = _run(sim)

    stops = _stops(route)
    assert [s.status for s in stops] == [Stop.Status.COMPLETED] * 3
    assert [s.order.status for s in stops] == [Order.Status.DELIVERED] * 3
    times = [t for s in stops for t in (s.arrived_at, s.departed_at)]
    assert times == sorted(times) and len(set(times)) == 6
    route.refresh_from_db()
    assert route.status == Route.Status.COMPLETED
    assert route.started_at < stops[0].arrived_at and route.completed_at > stops[-1].departed_at
    pings = LocationPing.objects.filter(driver=driver)
    # A fix every 10 simulated seconds from start to finish, none implausible.
    assert pings.count() >= (route.completed_at - route.started_at).total_seconds() / 10
    assert not pings.exclude(flags="").exists()
    assert {p.accuracy_m // 1 for p in pings} <= set(range(5, 16))
    moving = pings.filter(speed_mps__gt=0)
    # 25 km/h × the driver's pace U(0.8, 1.2) × the leg's U(0.75, 1.25) × the phone's ±10 %,
    # halved in a jam.
    assert moving.exists() and all(1.5 < p.speed_mps < 12 for p in moving)
    position = DriverPosition.objects.get(driver=driver)
    assert dt.timedelta(0) <= route.completed_at - position.recorded_at < dt.timedelta(seconds=10)
    assert abs(position.lat - depot.lat) < 0.001 and abs(position.lng - depot.lng) < 0.001
    name = driver.name
    assert [line.split(" ", 1)[1] for line in lines] == [
        f"{name} started the route with 3 stops",
        *(
            f"{name} {what} stop {s.sequence} ({s.order.address})"
            for s in stops
            for what in ("arrived at", "delivered")
        ),
        f"{name} finished the route back at the depot",
    ]


@pytest.mark.django_db
def test_every_simulated_delivery_carries_a_real_photo_and_signature(org, depot, driver):
    from PIL import Image

    from pod.models import ProofOfDelivery, ProofPolicy

    ProofPolicy.objects.create(organization=org, requires=ProofPolicy.Requires.BOTH, require_pin=True)
    route = _published_route(org, depot, driver)
    _run(Simulation.from_db(now=NOW, failure_rate=0.0))

    proofs = ProofOfDelivery.objects.filter(stop__route=route).prefetch_related("photos")
    assert proofs.count() == 3
    for proof in proofs:
        assert proof.recipient_name == proof.stop.order.recipient_name and proof.pin_checked
        assert proof.distance_from_address_m < 50 and not proof.far_from_address
        [photo] = proof.photos.all()
        with Image.open(photo.image) as image:
            assert image.format == "JPEG" and image.size == (640, 480)
        with Image.open(proof.signature) as signature:
            assert signature.format == "PNG"


@pytest.mark.django_db
def test_distance_and_noisy_speed_decide_the_arrival_time(org, depot, driver):
    route = _published_route(org, depot, driver, points=[(52.5125, 13.3989)])  # 1 km due north
    sim = Simulation.from_db(now=NOW, failure_rate=0.0)

    _run(sim, step=30, until=lambda: Stop.objects.filter(route=route, status="arrived").exists())

    minutes = (_stops(route)[0].arrived_at - NOW).total_seconds() / 60
    # 1 km at 25 km/h × the driver's U(0.8, 1.2) × the leg's U(0.75, 1.25), part of it perhaps
    # jammed at half speed.
    assert 1.6 < minutes < 6.5


@pytest.mark.django_db
def test_failure_rate_one_fails_every_stop_with_a_reason(org, depot, driver):
    route = _published_route(org, depot, driver)
    sim = Simulation.from_db(now=NOW, failure_rate=1.0)

    _, lines = _run(sim)

    stops = _stops(route)
    assert [s.status for s in stops] == [Stop.Status.FAILED] * 3
    assert all(s.failure_reason for s in stops)
    assert [s.order.status for s in stops] == [Order.Status.FAILED] * 3
    route.refresh_from_db()
    assert route.status == Route.Status.COMPLETED
    assert sum(" failed stop " in line for line in lines) == 3


@pytest.mark.django_db
def test_a_new_simulation_resumes_with_the_next_open_stop(org, depot, driver):
    route = _published_route(org, depot, driver)
    first = Simulation.from_db(now=NOW, failure_rate=0.0)
    stopped_at, _ = _run(
        first, step=60, until=lambda: Stop.objects.filter(route=route, status="completed").exists()
    )
    one_done = _stops(route)
    assert [s.status for s in one_done] == ["completed", "pending", "pending"]

    # A restart: nothing in memory, everything from the database.
    second = Simulation.from_db(now=stopped_at, failure_rate=0.0)
    (run,) = second.active
    assert run.phase == Phase.DRIVING
    assert [s.stop_id for s in run.stops] == [one_done[1].pk, one_done[2].pk]
    position = DriverPosition.objects.get(driver=driver)
    assert (run.lat, run.lng) == (position.lat, position.lng)
    assert second.resume_at >= one_done[0].departed_at

    _run(second, start=second.resume_at)

    stops = _stops(route)
    assert [s.status for s in stops] == [Stop.Status.COMPLETED] * 3
    assert (stops[0].arrived_at, stops[0].departed_at) == (one_done[0].arrived_at, one_done[0].departed_at)
    assert stops[0].departed_at < stops[1].arrived_at < stops[2].arrived_at
    assert stops[0].order.events.filter(kind="delivered").count() == 1
    route.refresh_from_db()
    assert route.status == Route.Status.COMPLETED


@pytest.mark.django_db
def test_a_restart_during_a_visit_finishes_that_visit(org, depot, driver):
    route = _published_route(org, depot, driver)
    first = Simulation.from_db(now=NOW, failure_rate=0.0)
    stopped_at, _ = _run(
        first, step=20, until=lambda: Stop.objects.filter(route=route, status="arrived").exists()
    )

    second = Simulation.from_db(now=stopped_at, failure_rate=0.0)
    (run,) = second.active
    assert run.phase == Phase.SERVING and run.stops[0].sequence == 1
    _run(second, start=stopped_at)

    assert [s.status for s in _stops(route)] == [Stop.Status.COMPLETED] * 3


@pytest.mark.django_db
def test_only_todays_published_or_started_routes_are_driven(org, depot, driver):
    todays = _published_route(org, depot, driver)
    _published_route(org, depot, DriverFactory(organization=org), day=TODAY + dt.timedelta(days=1))
    draft_orders = [OrderFactory(organization=org)]
    route_create(
        organization=org, driver=DriverFactory(organization=org), depot=depot, date=TODAY, orders=draft_orders
    )

    sim = Simulation.from_db(now=NOW)

    assert [run.route_id for run in sim.active] == [todays.pk]


@pytest.mark.django_db
def test_a_published_route_waits_for_its_planned_start(org, depot, driver):
    route = _published_route(org, depot, driver)
    Route.objects.filter(pk=route.pk).update(planned_start=NOW + dt.timedelta(minutes=30))
    sim = Simulation.from_db(now=NOW)

    advance(sim, now=NOW, dt_seconds=20 * 60, rng=random.Random(1))
    route.refresh_from_db()
    assert route.status == Route.Status.PUBLISHED
    assert not LocationPing.objects.filter(driver=driver).exists()

    advance(sim, now=NOW + dt.timedelta(minutes=20), dt_seconds=20 * 60, rng=random.Random(1))
    route.refresh_from_db()
    assert (route.status, route.started_at) == (Route.Status.IN_PROGRESS, NOW + dt.timedelta(minutes=30))


@pytest.mark.django_db
def test_same_seed_drives_the_same_way(org, depot, driver):
    route = _published_route(org, depot, driver)
    sim = Simulation.from_db(now=NOW, failure_rate=0.5)
    _run(
        sim,
        rng=random.Random(42),
        until=lambda: Stop.objects.filter(route=route, status="pending").count() < 2,
    )
    first = [(s.status, s.arrived_at, s.departed_at) for s in _stops(route)]

    # The same route for another driver, driven with the same seed.
    route2 = _published_route(org, depot, DriverFactory(organization=org))
    sim2 = Simulation.from_db(now=NOW, failure_rate=0.5)
    sim2.runs.pop(route.pk, None)
    _run(
        sim2,
        rng=random.Random(42),
        until=lambda: Stop.objects.filter(route=route2, status="pending").count() < 2,
    )
    second = [(s.status, s.arrived_at, s.departed_at) for s in _stops(route2)]

    assert first == second


@pytest.mark.django_db
def test_command_once_with_nothing_published_exits_cleanly():
    out = StringIO()

    call_command("simulate", "--once", stdout=out)

    assert "Simulating 0 route(s)" in out.getvalue()
    assert "Simulator stopped." in out.getvalue()


@pytest.mark.django_db
def test_command_once_starts_todays_published_route(org, depot, driver):
    route = _published_route(org, depot, driver, day=local_today(org.tzinfo, timezone.now()))
    out = StringIO()

    call_command("simulate", "--once", "--speed", "30", "--seed", "1", stdout=out)

    route.refresh_from_db()
    assert route.status == Route.Status.IN_PROGRESS
    assert f"{driver.name} started the route with 3 stops" in out.getvalue()
    assert LocationPing.objects.filter(driver=driver).count() >= 3


@pytest.mark.django_db
def test_a_stop_closed_by_someone_else_is_left_out_not_fought_over(org, depot, driver):
    route = _published_route(org, depot, driver)
    sim = Simulation.from_db(now=NOW, failure_rate=0.0)
    advance(sim, now=NOW, dt_seconds=10, rng=random.Random(1))
    second = _stops(route)[1]
    stop_transition(stop=second, to=Stop.Status.SKIPPED, by=None, reason="Customer asked to skip")

    _run(sim, start=NOW + dt.timedelta(seconds=10))

    assert [s.status for s in _stops(route)] == ["completed", "skipped", "completed"]
    route.refresh_from_db()
    assert route.status == Route.Status.COMPLETED


def test_publish_demo_plans_and_publishes_the_demo_day_once(db, time_machine):
    from dispatch.models import Organization

    time_machine.move_to("2026-11-24 06:00:00+00:00")
    call_command("seed_demo", "--password", "pw-demo-123", stdout=StringIO())
    lines = publish_demo_day(budget_seconds=1)
    demo = Organization.objects.get(slug="demo")
    live = Route.objects.filter(organization=demo).exclude(status=Route.Status.DRAFT)
    assert lines and "published the demo day" in lines[0] and live.exists()
    assert publish_demo_day(budget_seconds=1) == []  # something is live now: leave it alone
    assert live.count() == Route.objects.filter(organization=demo).exclude(status="draft").count()


def test_publish_demo_gives_the_demo_a_later_day_starting_now_and_plans_it(db, time_machine):
    from dispatch.models import Organization, Shift

    time_machine.move_to("2026-11-24 06:00:00+00:00")
    call_command("seed_demo", "--password", "pw-demo-123", stdout=StringIO())
    demo = Organization.objects.get(slug="demo")
    first_day = list(Order.objects.filter(organization=demo).values_list("pk", "service_date", "status"))

    time_machine.move_to("2026-11-25 13:05:00+00:00")  # the next afternoon, 14:05 in Berlin
    lines = publish_demo_day(budget_seconds=1)

    assert "Added the demo's day Wed 25 Nov: 150 orders, shifts from 14:15." in lines
    assert any("published the demo day" in line for line in lines)
    next_day = Order.objects.filter(organization=demo, service_date=dt.date(2026, 11, 25))
    assert next_day.count() == 150 and next_day.filter(contact__isnull=False).exists()
    shifts = Shift.objects.filter(organization=demo, date=dt.date(2026, 11, 25))
    assert min(s.starts_at for s in shifts) == dt.datetime(2026, 11, 25, 13, 15, tzinfo=dt.UTC)
    # Planned from shifts that begin now, its stops are on time before anyone has moved.
    stops = Stop.objects.filter(route__organization=demo, route__date=dt.date(2026, 11, 25))
    assert stops.filter(route__status=Route.Status.PUBLISHED).count() >= 100
    windowed = stops.exclude(order__window_end=None).select_related("order")
    assert all(stop.planned_arrival <= stop.order.window_end for stop in windowed)
    earlier = Order.objects.filter(organization=demo, service_date=dt.date(2026, 11, 24))
    assert list(earlier.values_list("pk", "service_date", "status")) == first_day
    assert publish_demo_day(budget_seconds=1) == []  # the day is there and live: nothing more


def test_publish_demo_never_touches_another_organisation(db, org, depot):
    OrderFactory(organization=org)
    assert publish_demo_day(budget_seconds=1) == []
    assert not Route.objects.exists()
