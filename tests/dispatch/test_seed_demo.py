import io
import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.test import RequestFactory

from dispatch.demo import build_demo, demo_day_start
from dispatch.models import (
    Contact,
    Depot,
    Driver,
    Membership,
    Order,
    Organization,
    Shift,
    StopEvent,
    Vehicle,
)
from tests.factories import OrganizationFactory, UserFactory

BERLIN = ZoneInfo("Europe/Berlin")
# 06:30 in Berlin on a Tuesday, before the demo's day starts (07:30); "today" is 24 Nov 2026.
NOW = datetime(2026, 11, 24, 5, 30, tzinfo=UTC)
TODAY = date(2026, 11, 24)
# Berlin's city limits, generously: every demo point must fall inside.
LAT_RANGE, LNG_RANGE = (52.33, 52.68), (13.08, 13.77)
DEMO_USERS = ["admin", "dispatcher", *(f"driver{n}" for n in range(1, 9))]


@pytest.fixture(autouse=True)
def _fast_hashing_and_fixed_clock(settings):
    # Django's PBKDF2 costs ~0.3 s per user; the tests seed many times.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    with time_machine.travel(NOW):
        yield


def _seed(*args: str) -> str:
    out = io.StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


def _counts() -> dict[str, int]:
    models = (Organization, Membership, Depot, Vehicle, Driver, Shift, Contact, Order, StopEvent)
    counts = {model.__name__: model.objects.count() for model in models}
    return counts | {"User": get_user_model().objects.count()}


def _login(username: str, password: str):
    request = RequestFactory().post("/accounts/login/")  # django-axes needs the request
    return authenticate(request, username=username, password=password)


@pytest.mark.django_db
def test_seed_creates_the_demo_fleet_and_todays_orders():
    output = _seed()

    org = Organization.objects.get()
    assert (org.slug, org.timezone) == ("demo", "Europe/Berlin")
    assert Depot.objects.filter(organization=org).count() == 1
    drivers = Driver.objects.filter(organization=org).select_related("default_vehicle")
    assert drivers.count() == 8
    for driver in drivers:
        assert 60 <= driver.default_vehicle.capacity <= 120
        shift = driver.shifts.get()
        assert (shift.date, shift.vehicle, shift.break_minutes) == (
            TODAY,
            driver.default_vehicle,
            30,
        )
    assert Vehicle.objects.filter(organization=org).count() == 8
    assert 50 <= Contact.objects.filter(organization=org).count() <= 70
    orders = Order.objects.filter(organization=org)
    assert orders.count() == 150
    assert set(orders.values_list("service_date", flat=True)) == {TODAY}
    assert 5 <= orders.filter(kind=Order.Kind.PICKUP).count() <= 10
    assert orders.filter(priority=Order.Priority.HIGH).exists()
    assert orders.filter(window_start__isnull=True).exists()
    assert orders.filter(contact__isnull=False).exists()
    refs = list(orders.values_list("external_ref", flat=True))
    assert len(set(refs)) == 150 and all(ref.startswith("DEMO-") for ref in refs)
    assert StopEvent.objects.filter(kind=StopEvent.Kind.CREATED).count() == 150
    assert "150 orders" in output and "driver1…driver8" in output and "“demo”" in output


@pytest.mark.django_db
def test_every_window_ends_after_it_starts_and_fits_one_drivers_shift():
    _seed()

    shifts = [(s.starts_at, s.ends_at) for s in Shift.objects.all()]
    windowed = Order.objects.exclude(window_start=None)
    assert windowed.count() >= 100
    for order in windowed:
        assert order.window_end > order.window_start
        hours = (order.window_end - order.window_start).total_seconds() / 3600
        assert 2 <= hours <= 4
        local_start = order.window_start.astimezone(BERLIN).time()
        local_end = order.window_end.astimezone(BERLIN).time()
        assert time(8) <= local_start and local_end <= time(18)
        assert any(start <= order.window_start and order.window_end <= end for start, end in shifts)


@pytest.mark.django_db
def test_every_demo_place_lies_in_berlin():
    _seed()

    points = [
        *Order.objects.values_list("lat", "lng"),
        *Contact.objects.values_list("lat", "lng"),
        *Depot.objects.values_list("lat", "lng"),
    ]
    assert len(points) > 200
    for lat, lng in points:
        assert LAT_RANGE[0] < lat < LAT_RANGE[1] and LNG_RANGE[0] < lng < LNG_RANGE[1]
    for address in Order.objects.values_list("address", flat=True):
        assert re.fullmatch(r"[^\d,]+ \d+[ab]?, 1[0-4]\d{3} Berlin", address), address


@pytest.mark.django_db
def test_demo_logins_work_with_the_given_password_only():
    _seed("--password", "k3uzberg-demo")

    for username in DEMO_USERS:
        assert _login(username, "k3uzberg-demo") is not None, username
    assert _login("dispatcher", "demo") is None
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff
    roles = dict(Membership.objects.values_list("user__username", "role"))
    assert roles == {
        "admin": Membership.Role.ADMIN,
        "dispatcher": Membership.Role.DISPATCHER,
        **{f"driver{n}": Membership.Role.DRIVER for n in range(1, 9)},
    }


@pytest.mark.django_db
def test_running_it_twice_changes_nothing():
    _seed()
    before = _counts()

    output = _seed()

    assert _counts() == before
    assert "already exists" in output


@pytest.mark.django_db
def test_if_empty_leaves_a_database_with_an_organisation_alone():
    OrganizationFactory(slug="someone-else")

    output = _seed("--if-empty")

    assert list(Organization.objects.values_list("slug", flat=True)) == ["someone-else"]
    assert not get_user_model().objects.filter(username__in=DEMO_USERS).exists()
    assert "not seeding" in output


@pytest.mark.django_db
def test_if_empty_seeds_an_empty_database_with_password_demo(client):
    _seed("--if-empty")

    assert Organization.objects.get().slug == "demo"
    assert Order.objects.count() == 150
    assert client.login(request=RequestFactory().get("/"), username="driver3", password="demo")


@pytest.mark.django_db
def test_a_taken_username_is_reported_and_nothing_is_written():
    UserFactory(username="dispatcher")

    with pytest.raises(CommandError, match="dispatcher"):
        _seed()

    assert not Organization.objects.exists()
    assert get_user_model().objects.count() == 1


@pytest.mark.django_db
def test_two_seeds_of_fresh_databases_are_identical():
    def seed_and_read() -> list[tuple]:
        with transaction.atomic():
            _seed()
            rows = list(
                Order.objects.order_by("external_ref").values_list(
                    "external_ref", "kind", "priority", "recipient_name", "address", "lat", "lng",
                    "window_start", "window_end", "parcels", "service_minutes", "contact__name",
                )
            )  # fmt: skip
            rows += list(Contact.objects.order_by("name").values_list("name", "address", "lat"))
            rows += list(Shift.objects.order_by("driver__user__username").values_list(
                "driver__user__username", "starts_at", "ends_at", "break_starts_at", "vehicle__name"
            ))  # fmt: skip
            transaction.set_rollback(True)  # back to an empty database for the next seed
        return rows

    first = seed_and_read()
    assert not Organization.objects.exists()
    assert first == seed_and_read()


def test_building_the_demo_is_deterministic_and_only_the_day_moves_the_windows():
    monday, tuesday = date(2026, 11, 23), date(2026, 11, 24)

    assert build_demo(tuesday, BERLIN) == build_demo(tuesday, BERLIN)
    places = [(o["address"], o["lat"], o["lng"]) for o in build_demo(monday, BERLIN).orders]
    assert places == [(o["address"], o["lat"], o["lng"]) for o in build_demo(tuesday, BERLIN).orders]
    assert build_demo(tuesday, BERLIN, seed=1).orders != build_demo(tuesday, BERLIN).orders


def test_demo_windows_keep_their_local_times_on_the_day_the_clocks_go_forward():
    spring_forward = date(2026, 3, 29)

    demo = build_demo(spring_forward, BERLIN)

    starts = [o["window_start"] for o in demo.orders if o["window_start"] is not None]
    assert min(s.astimezone(BERLIN).time() for s in starts) >= time(8)
    assert {s.astimezone(BERLIN).utcoffset().total_seconds() / 3600 for s in starts} == {2.0}  # summer time


@pytest.mark.parametrize(
    ("local", "start"),
    [
        ("05:10:00", time(7, 30)),  # before the day as written: it starts as written
        ("07:30:00", time(7, 30)),
        ("15:52:10", time(16, 0)),  # later: at the next quarter hour
        ("16:00:00", time(16, 0)),
        ("16:00:01", time(16, 15)),
        ("22:40:00", time(19, 30)),  # the latest start that still ends by the planner's 06:00
    ],
)
def test_the_demo_day_starts_when_it_is_made(local, start):
    now = datetime.combine(TODAY, time.fromisoformat(local), BERLIN)

    assert demo_day_start(now, BERLIN) == start


@pytest.mark.django_db
def test_seeded_in_the_afternoon_the_shifts_and_windows_start_at_the_next_quarter_hour(time_machine):
    time_machine.move_to(datetime(2026, 11, 24, 14, 52, tzinfo=UTC))  # 15:52 in Berlin

    output = _seed()

    starts = sorted(s.starts_at.astimezone(BERLIN) for s in Shift.objects.all())
    assert starts[0] == datetime(2026, 11, 24, 16, 0, tzinfo=BERLIN)
    assert "shift today from 16:00" in output
    # The day as written, 8 h 30 later: windows 16:30…02:30, each still inside a shift.
    morning = build_demo(TODAY, BERLIN)
    moved = {o.external_ref: o for o in Order.objects.all()}
    assert set(Order.objects.values_list("service_date", flat=True)) == {TODAY}
    for order in morning.orders:
        stored = moved[order["external_ref"]]
        if order["window_start"] is None:
            assert stored.window_start is None
            continue
        assert stored.window_start - order["window_start"] == timedelta(hours=8, minutes=30)
        assert stored.window_end - stored.window_start == order["window_end"] - order["window_start"]
    shifts = [(s.starts_at, s.ends_at) for s in Shift.objects.all()]
    for order in Order.objects.exclude(window_start=None):
        assert any(start <= order.window_start and order.window_end <= end for start, end in shifts)


@pytest.mark.parametrize(
    "local",
    [
        datetime(2026, 3, 28, 16, 5, tzinfo=BERLIN),  # its night has an hour the clocks skip
        datetime(2026, 3, 28, 23, 0, tzinfo=BERLIN),
        datetime(2026, 10, 24, 19, 15, tzinfo=BERLIN),  # its night has an hour twice
        datetime(2026, 11, 24, 22, 40, tzinfo=BERLIN),
    ],
)
def test_a_demo_day_made_late_fits_the_planners_day_around_a_clock_change(local):
    from dispatch.planning import END_OF_DAY

    demo = build_demo(local.date(), BERLIN, start=demo_day_start(local, BERLIN))

    midnight = datetime.combine(local.date(), time(0), BERLIN)
    instants = [p["shift"][k] for p in demo.drivers for k in ("starts_at", "ends_at", "break_starts_at")]
    windows = [(o["window_start"], o["window_end"]) for o in demo.orders if o["window_start"] is not None]
    instants += [t for window in windows for t in window]
    assert all(0 < (t - midnight).total_seconds() <= END_OF_DAY for t in instants)
    assert all(end > start for start, end in windows)
