"""Issue #4 item 5: each route's travelled distance kept by the GPS ingest, and the arrival
suggestion the driver's route API offers (never applies)."""

import datetime as dt
import random
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils.dateparse import parse_datetime
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from dispatch.models import Order, Plan, Route, Stop
from dispatch.services import route_travelled_set
from tests.factories import TODAY, DriverFactory, PlanFactory, RouteFactory, StopFactory
from tracking.selectors import arrival_suggestion, driver_route_today
from tracking.services import driver_stop_event, location_record_batch

# 11:00 in Berlin on TODAY.
NOW = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)
KM_DEG = 1000 / 111_195  # one kilometre of latitude
START = (52.5, 13.4)
STOP_AT = (52.4980, 13.4330)  # OrderFactory's default coordinates

pytestmark = [pytest.mark.django_db]


def fix(at: dt.datetime, lat: float, lng: float = START[1], accuracy: float = 8.0) -> dict:
    return {"uuid": uuid.uuid4(), "recorded_at": at, "lat": lat, "lng": lng, "accuracy": accuracy}


def line(start: dt.datetime, count: int, step_m: float, every_s: int) -> list[dict]:
    """`count` fixes north from START, `step_m` apart and `every_s` seconds apart."""
    return [
        fix(start + dt.timedelta(seconds=i * every_s), START[0] + i * step_m / 1000 * KM_DEG)
        for i in range(count)
    ]


def travelled(route: Route) -> int:
    route.refresh_from_db()
    return route.travelled_distance_m


@pytest.fixture
def route(org, driver):
    return RouteFactory(
        organization=org,
        driver=driver,
        status=Route.Status.IN_PROGRESS,
        started_at=NOW - dt.timedelta(hours=1),
    )


# --- travelled distance ----------------------------------------------------------------------


def test_three_fixes_a_kilometre_apart_travel_two_kilometres(route, driver):
    location_record_batch(driver=driver, fixes=line(NOW - dt.timedelta(minutes=5), 3, 1000, 60), now=NOW)
    assert travelled(route) == pytest.approx(2000, rel=0.01)


def test_batches_sent_one_after_another_extend_the_distance(route, driver):
    fixes = line(NOW - dt.timedelta(minutes=10), 30, 100, 10)
    for i in range(0, 30, 7):
        location_record_batch(driver=driver, fixes=fixes[i : i + 7], now=NOW)
    assert travelled(route) == pytest.approx(2900, abs=5)


def test_standing_still_jitter_adds_nothing(route, driver):
    rng = random.Random(7)
    parked = [
        fix(
            NOW - dt.timedelta(seconds=5 * i),
            STOP_AT[0] + rng.uniform(-3, 3) / 111_195,
            STOP_AT[1] + rng.uniform(-3, 3) / 67_700,
            accuracy=5,
        )
        for i in range(60)
    ]
    location_record_batch(driver=driver, fixes=parked[:30], now=NOW)
    location_record_batch(driver=driver, fixes=parked[30:], now=NOW)
    assert travelled(route) < 5


def test_a_hop_within_the_fix_accuracy_is_not_driven(route, driver):
    """Fixes 30 m apart with 40 m accuracy: the phone cannot tell, so nothing is added."""
    fixes = [
        fix(f["recorded_at"], f["lat"], accuracy=40) for f in line(NOW - dt.timedelta(minutes=1), 5, 30, 5)
    ]
    location_record_batch(driver=driver, fixes=fixes, now=NOW)
    assert travelled(route) == 0


def test_a_late_offline_buffer_gives_the_same_total_as_sending_in_order(org, route, driver):
    other_driver = DriverFactory(organization=org)
    in_order = RouteFactory(
        organization=org, driver=other_driver, status=Route.Status.IN_PROGRESS, started_at=route.started_at
    )
    fixes = line(NOW - dt.timedelta(minutes=10), 30, 100, 10)
    copy = [{**f, "uuid": uuid.uuid4()} for f in fixes]
    for i in range(0, 30, 10):
        location_record_batch(driver=other_driver, fixes=copy[i : i + 10], now=NOW)
    # The phone was offline for the middle ten fixes and sends them last.
    location_record_batch(driver=driver, fixes=fixes[:10], now=NOW)
    location_record_batch(driver=driver, fixes=fixes[20:], now=NOW)
    location_record_batch(driver=driver, fixes=fixes[10:20], now=NOW)
    assert travelled(route) == pytest.approx(2900, abs=5)
    assert abs(travelled(route) - travelled(in_order)) <= 2


def test_a_late_buffer_with_a_detour_is_counted_after_a_recompute(route, driver):
    """In order: 0 → 1 km → 0 (a detour and back). Sent out of order, the straight 0 → 0 hop
    must not stand: the late middle fix recomputes the whole path."""
    first, last = fix(NOW - dt.timedelta(minutes=4), START[0]), fix(NOW - dt.timedelta(minutes=2), START[0])
    middle = fix(NOW - dt.timedelta(minutes=3), START[0] + KM_DEG)
    location_record_batch(driver=driver, fixes=[first, last], now=NOW)
    assert travelled(route) == 0
    location_record_batch(driver=driver, fixes=[middle], now=NOW)
    assert travelled(route) == pytest.approx(2000, rel=0.01)


def test_a_flagged_fix_does_not_count(route, driver):
    a, b, c = line(NOW - dt.timedelta(minutes=5), 3, 1000, 60)
    wild = fix(a["recorded_at"] + dt.timedelta(seconds=30), START[0] + 5 * KM_DEG, accuracy=2000)
    result = location_record_batch(driver=driver, fixes=[a, wild, b, c], now=NOW)
    assert result["flagged"] == 1
    assert travelled(route) == pytest.approx(2000, rel=0.01)


@pytest.mark.parametrize("status", [Route.Status.PUBLISHED, Route.Status.COMPLETED])
def test_a_route_not_in_progress_does_not_count(org, driver, status):
    route = RouteFactory(organization=org, driver=driver, status=status)
    location_record_batch(driver=driver, fixes=line(NOW - dt.timedelta(minutes=5), 3, 1000, 60), now=NOW)
    assert travelled(route) == 0


def test_fixes_before_the_route_started_do_not_count(route, driver):
    Route.objects.filter(pk=route.pk).update(started_at=NOW - dt.timedelta(minutes=3, seconds=30))
    location_record_batch(driver=driver, fixes=line(NOW - dt.timedelta(minutes=5), 5, 1000, 60), now=NOW)
    # Fixes at -5, -4 min are before the start; -3 → -2 → -1 min is 2 km.
    assert travelled(route) == pytest.approx(2000, rel=0.01)


def test_only_the_route_of_the_local_today_counts(org, driver):
    yesterday = RouteFactory(
        organization=org,
        driver=driver,
        status=Route.Status.IN_PROGRESS,
        date=TODAY - dt.timedelta(days=1),
        started_at=NOW - dt.timedelta(days=1),
    )
    location_record_batch(driver=driver, fixes=line(NOW - dt.timedelta(minutes=5), 3, 1000, 60), now=NOW)
    assert travelled(yesterday) == 0


def test_another_drivers_fixes_do_not_count(org, route):
    other = DriverFactory(organization=org)
    location_record_batch(driver=other, fixes=line(NOW - dt.timedelta(minutes=5), 3, 1000, 60), now=NOW)
    assert travelled(route) == 0


def test_ingest_query_count_does_not_grow_with_the_batch(route, driver):
    location_record_batch(driver=driver, fixes=line(NOW - dt.timedelta(minutes=50), 1, 100, 10), now=NOW)
    counts = []
    for offset, count in ((40, 10), (30, 60)):
        fixes = line(NOW - dt.timedelta(minutes=offset), count, 100, 10)
        with CaptureQueriesContext(connection) as queries:
            location_record_batch(driver=driver, fixes=fixes, now=NOW)
        # SQLite's 999-parameter limit splits a long INSERT in two; count statements otherwise.
        counts.append(sum(1 for q in queries.captured_queries if not q["sql"].startswith("INSERT")))
    assert counts[0] == counts[1]


def test_route_travelled_set_is_a_compare_and_set(route):
    assert route_travelled_set(route_id=route.pk, metres=1200.4, expected=0)
    assert not route_travelled_set(route_id=route.pk, metres=5000, expected=0)
    assert travelled(route) == 1200


def test_route_pages_show_the_travelled_distance(dispatcher_client, route, time_machine):
    time_machine.move_to(NOW, tick=False)
    Route.objects.filter(pk=route.pk).update(travelled_distance_m=12_345, planned_distance_m=20_000)
    html = dispatcher_client.get(route.get_absolute_url()).content.decode()
    assert "planned 20 km" in html and "travelled 12.3 km" in html
    dashboard = dispatcher_client.get("/").content.decode()
    assert "travelled 12.3 km" in dashboard
    # A planned route's page is its plan's page.
    Route.objects.filter(pk=route.pk).update(
        plan=PlanFactory(organization=route.organization, depot=route.depot, status=Plan.Status.SUCCEEDED)
    )
    plan_page = dispatcher_client.get(route.get_absolute_url(), follow=True).content.decode()
    assert "travelled 12.3 km" in plan_page


# --- arrival suggestion ----------------------------------------------------------------------


@pytest.fixture
def work(org, driver):
    """A started route: stop 1 at STOP_AT, stop 2 two kilometres north of it."""
    route = RouteFactory(
        organization=org,
        driver=driver,
        status=Route.Status.IN_PROGRESS,
        started_at=NOW - dt.timedelta(hours=1),
    )
    StopFactory(route=route, sequence=1, order__status=Order.Status.OUT_FOR_DELIVERY)
    StopFactory(
        route=route,
        sequence=2,
        order__status=Order.Status.OUT_FOR_DELIVERY,
        order__lat=STOP_AT[0] + 2 * KM_DEG,
        order__address="Oranienstraße 7, 10997 Berlin",
    )
    return route


def parked(driver, seconds: int, until: dt.datetime = NOW, at=STOP_AT, every_s: int = 5) -> None:
    """The driver's phone reports him within ~15 m of `at` for the last `seconds`."""
    rng = random.Random(seconds)
    fixes = [
        fix(
            until - dt.timedelta(seconds=s),
            at[0] + rng.uniform(-10, 10) / 111_195,
            at[1] + rng.uniform(-10, 10) / 67_700,
        )
        for s in range(0, seconds + 1, every_s)
    ]
    location_record_batch(driver=driver, fixes=fixes, now=until)


def suggestion(driver, now=NOW):
    route = driver_route_today(driver=driver, now=now)
    return arrival_suggestion(driver=driver, route=route, now=now)


@pytest.fixture
def driver_api(driver, time_machine):
    time_machine.move_to(NOW, tick=False)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=driver.user).key}")
    return client


def test_no_suggestion_before_the_dwell_time(work, driver):
    parked(driver, 40)
    assert suggestion(driver) is None


def test_suggestion_after_the_dwell_time_within_the_radius(work, driver):
    parked(driver, 65)
    found = suggestion(driver)
    assert found.stop == work.stops.get(sequence=1)
    assert found.since == NOW - dt.timedelta(seconds=65)


def test_the_dwell_and_radius_come_from_settings(work, driver, settings):
    parked(driver, 65)
    settings.ARRIVAL_DWELL_S = 120
    assert suggestion(driver) is None
    settings.ARRIVAL_DWELL_S, settings.ARRIVAL_RADIUS_M = 60, 5
    assert suggestion(driver) is None


def test_no_suggestion_while_passing_by(work, driver):
    """Driving past the stop at 36 km/h: never a minute within 75 m."""
    location_record_batch(
        driver=driver,
        fixes=[
            fix(NOW - dt.timedelta(seconds=120 - 5 * i), STOP_AT[0] + (i - 12) * 50 / 111_195, STOP_AT[1])
            for i in range(25)
        ],
        now=NOW,
    )
    assert suggestion(driver) is None


def test_suggestion_disappears_when_the_driver_moves_on(work, driver):
    parked(driver, 90)
    assert suggestion(driver) is not None
    later = NOW + dt.timedelta(seconds=30)
    location_record_batch(
        driver=driver,
        fixes=[fix(later - dt.timedelta(seconds=15), STOP_AT[0] + 300 / 111_195, STOP_AT[1])],
        now=later,
    )
    assert suggestion(driver, now=later) is None


@pytest.mark.parametrize("kind", ["arrived", "delivered"])
def test_suggestion_disappears_once_the_stop_is_arrived_or_done(work, driver, kind):
    parked(driver, 90)
    stop = work.stops.get(sequence=1)
    driver_stop_event(driver=driver, stop=stop, uuid=uuid.uuid4(), kind=kind, at=NOW, now=NOW)
    assert suggestion(driver) is None


def test_suggestion_names_the_stop_he_is_at_not_the_next_in_sequence(work, driver):
    parked(driver, 90, at=(STOP_AT[0] + 2 * KM_DEG, STOP_AT[1]))
    assert suggestion(driver).stop.sequence == 2


def test_never_a_suggestion_for_another_drivers_stop(org, work):
    other = DriverFactory(organization=org)
    theirs = RouteFactory(organization=org, driver=other, status=Route.Status.IN_PROGRESS)
    StopFactory(route=theirs, sequence=1, order__lat=STOP_AT[0] + 5 * KM_DEG)
    parked(other, 120)  # standing at *our* driver's stop 1
    assert suggestion(other) is None
    assert suggestion(work.driver) is None
    assert (
        arrival_suggestion(driver=other, route=driver_route_today(driver=work.driver, now=NOW), now=NOW)
        is None
    )


def test_route_api_carries_the_suggestion(driver_api, work, driver):
    body = driver_api.get("/api/v1/driver/route/").json()["route"]
    assert body["arrival_suggestion"] is None
    parked(driver, 65)
    body = driver_api.get("/api/v1/driver/route/").json()["route"]
    stop = work.stops.get(sequence=1)
    suggestion = body["arrival_suggestion"]
    assert {k: suggestion[k] for k in ("stop", "sequence", "address")} == {
        "stop": stop.pk,
        "sequence": 1,
        "address": stop.order.address,
    }
    assert parse_datetime(suggestion["since"]) == NOW - dt.timedelta(seconds=65)
    assert Stop.objects.get(pk=stop.pk).status == Stop.Status.PENDING  # offered, never applied


def test_route_api_query_count_does_not_grow_with_stops(driver_api, work, driver):
    parked(driver, 65)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert driver_api.get("/api/v1/driver/route/").json()["route"]["arrival_suggestion"]
        return len(captured.captured_queries)

    few = queries()
    for sequence in range(3, 40):
        StopFactory(route=work, sequence=sequence, order__lat=STOP_AT[0] + sequence * KM_DEG)
    assert queries() == few
