"""The ETA engine (issue #6 items 4–5): scenarios whose answers are worked out by hand, when it
runs, and what it costs.

The travel model is set to 36 km/h with no detour, so one kilometre takes exactly 100 s; the
stops lie on a meridian north of the depot, k kilometres out for stop k.
"""

import datetime as dt
import math
import uuid
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from dispatch.models import Route, Stop
from dispatch.planner.matrix import EARTH_RADIUS_M
from dispatch.services import stops_eta_set
from tests.factories import (
    DepotFactory,
    DriverPositionFactory,
    OrderFactory,
    OrganizationFactory,
    RouteFactory,
    StopFactory,
)
from tracking import alerts, eta
from tracking.eta import current_leg_pace, eta_recompute, pace_factor
from tracking.models import Alert

pytestmark = [pytest.mark.django_db]

BERLIN = ZoneInfo("Europe/Berlin")
DAY = dt.date(2026, 11, 24)
DEPOT = (52.5, 13.4)
KM = math.degrees(1000 / EARTH_RADIUS_M)  # one kilometre of latitude, as the model measures it
STARTED = dt.datetime(2026, 11, 24, 9, 0, tzinfo=dt.UTC)  # 10:00 in Berlin


def at(hour: int, minute: int = 0, second: int = 0) -> dt.datetime:
    return dt.datetime.combine(DAY, dt.time(hour, minute, second), tzinfo=BERLIN)


def km_north(k: float) -> tuple[float, float]:
    return (DEPOT[0] + k * KM, DEPOT[1])


@pytest.fixture(autouse=True)
def _model(settings, time_machine):
    settings.ROUTING_URL = ""
    settings.ROUTING_SPEED_KMH = 36.0  # 10 m/s
    settings.ROUTING_DETOUR = 1.0
    time_machine.move_to(at(10), tick=False)


def make_route(org, *, stops=3, started=STARTED, windows=None, date=DAY, status=Route.Status.IN_PROGRESS):
    """A route in progress since `started`: stop k at k km north, 5 minutes of service each,
    no window unless `windows` gives (start, end) for a sequence."""
    windows = windows or {}
    depot = DepotFactory(organization=org, lat=DEPOT[0], lng=DEPOT[1])
    route = RouteFactory(organization=org, depot=depot, date=date, status=status, started_at=started)
    for k in range(1, stops + 1):
        start, end = windows.get(k, (None, None))
        lat, lng = km_north(k)
        StopFactory(
            route=route,
            sequence=k,
            order=OrderFactory(
                organization=org, lat=lat, lng=lng, service_minutes=5, window_start=start, window_end=end
            ),
        )
    return route


def close(route, sequence, *, arrived, departed=None, status=Stop.Status.COMPLETED):
    """Record a visit as it happened (the engine reads only the times and the status)."""
    Stop.objects.filter(route=route, sequence=sequence).update(
        status=status if departed else Stop.Status.ARRIVED, arrived_at=arrived, departed_at=departed
    )


def etas(route) -> dict[int, dt.datetime | None]:
    return dict(route.stops.order_by("sequence").values_list("sequence", "eta"))


# --- Scenarios with known answers -------------------------------------------------------------


def test_a_straight_line_at_a_known_speed_with_no_position_yet_starts_at_the_depot(org):
    route = make_route(org)  # started at 10:00, no position, nothing done

    result = eta_recompute(now=at(10))

    assert result == {"routes": 1, "stops": 3}
    # 100 s a kilometre, 5 minutes at each stop.
    assert etas(route) == {1: at(10, 1, 40), 2: at(10, 8, 20), 3: at(10, 15)}
    assert set(route.stops.values_list("eta_updated_at", flat=True)) == {at(10)}


def test_the_latest_position_is_where_the_next_leg_starts(org):
    route = make_route(org)
    DriverPositionFactory(driver=route.driver, lat=km_north(0.5)[0], lng=DEPOT[1], recorded_at=at(10, 0, 50))

    eta_recompute(now=at(10, 1))

    # Half a kilometre to go from 10:00:50.
    assert etas(route) == {1: at(10, 1, 40), 2: at(10, 8, 20), 3: at(10, 15)}


def test_a_position_older_than_the_last_departure_is_ignored(org):
    route = make_route(org)
    close(route, 1, arrived=at(10, 1, 40), departed=at(10, 6, 40))
    DriverPositionFactory(driver=route.driver, lat=DEPOT[0], lng=DEPOT[1], recorded_at=at(10, 0, 5))

    eta_recompute(now=at(10, 6, 40))

    assert etas(route) == {1: None, 2: at(10, 8, 20), 3: at(10, 15)}


def test_an_eta_is_never_in_the_past(org):
    route = make_route(org, stops=1)
    DriverPositionFactory(driver=route.driver, lat=DEPOT[0], lng=DEPOT[1], recorded_at=at(10))

    eta_recompute(now=at(10, 10))  # the fix is ten minutes old and stop 1 is not reached

    assert etas(route) == {1: at(10, 10)}


def test_waiting_for_a_window_that_opens_later(org):
    route = make_route(org, windows={2: (at(10, 30), at(11))})

    eta_recompute(now=at(10))

    # At stop 2 by 10:08:20, but its window opens at 10:30: service 10:30–10:35.
    assert etas(route) == {1: at(10, 1, 40), 2: at(10, 30), 3: at(10, 36, 40)}


def test_a_driver_at_a_stop_leaves_when_its_service_ends(org):
    route = make_route(org)
    close(route, 1, arrived=at(10, 1, 40))  # arrived, still serving

    eta_recompute(now=at(10, 3))

    assert etas(route) == {1: None, 2: at(10, 8, 20), 3: at(10, 15)}


def test_out_of_order_work_continues_after_the_stop_done_then_goes_back(org):
    """Stop 3 done first: 4 follows in planned order, then the skipped-over 1 and 2."""
    route = make_route(org, stops=4)
    close(route, 3, arrived=at(10, 5), departed=at(10, 10))  # 3 km in 300 s: the model's pace

    eta_recompute(now=at(10, 10))

    # 3 → 4: 1 km; 4 → 1: 3 km; 1 → 2: 1 km; 5 minutes at each.
    assert etas(route) == {1: at(10, 21, 40), 2: at(10, 28, 20), 3: None, 4: at(10, 11, 40)}


def test_a_late_driver_s_pace_is_learned_from_the_legs_driven(org):
    route = make_route(org, stops=4)
    # Each 1 km leg took 230 s instead of 100 s: 2.3× the model.
    close(route, 1, arrived=at(10, 3, 50), departed=at(10, 8, 50))
    close(route, 2, arrived=at(10, 12, 40), departed=at(10, 17, 40))

    eta_recompute(now=at(10, 17, 40))

    # A 100 s leg weighs 100 / (100 + 60) = 0.625 of a leg, so two weigh 1.25; blended with two
    # of prior at 1×: (1.25 × 2.3 + 2) / 3.25 = 4.875 / 3.25 = pace 1.5, 150 s a kilometre.
    assert etas(route)[3] == at(10, 20, 10)
    assert etas(route)[4] == at(10, 27, 40)  # 5 minutes at stop 3, then 150 s


def test_the_pace_factor_is_blended_towards_one_and_clamped():
    assert pace_factor([]) == 1.0
    # One 100 s leg at 2×: weight 0.625, so (0.625 × 2 + 2) / 2.625.
    assert pace_factor([(200, 100)]) == pytest.approx(3.25 / 2.625)
    assert pace_factor([(300, 100)] * 50) == 2.0  # clamped at the top
    assert pace_factor([(20, 100)] * 50) == 0.6  # each leg held at 0.3×, then clamped at 0.6
    # Eight 100 s legs at 0.8×: weight 8 × 0.625 = 5, so (5 × 0.8 + 2) / 7.
    assert pace_factor([(80, 100)] * 8) == pytest.approx(6 / 7)
    assert pace_factor([(500, 10)]) == 1.0  # next door: no information


def test_one_long_leg_with_a_jam_does_not_set_the_day_s_pace():
    # A 540 s leg at 2× (a jam) weighs 540 / 600 = 0.9 of a leg; two 240 s legs at 0.75× weigh
    # 240 / 300 = 0.8 each. Mean (0.9 × 2 + 1.6 × 0.75) / 2.5 = 1.2; with the prior
    # (2.5 × 1.2 + 2) / 4.5 = 10 / 9. The ratio of the sums, 1440 / 1020 = 1.41, would have
    # made every leg ahead 40 % slower.
    assert pace_factor([(1080, 540), (180, 240), (180, 240)]) == pytest.approx(10 / 9)


def test_the_part_of_the_current_leg_driven_so_far_sets_the_pace_of_its_rest(org):
    route = make_route(org)
    close(route, 1, arrived=at(10, 1, 40), departed=at(10, 6, 40))  # leg 1 at the model's pace
    # 150 s after leaving stop 1 the driver is only 0.75 km on (75 s in the model): 2× so far.
    lat, lng = km_north(1.75)
    DriverPositionFactory(driver=route.driver, lat=lat, lng=lng, recorded_at=at(10, 9, 10))

    eta_recompute(now=at(10, 9, 10))

    # The route's pace is 1 (its one leg went to plan). This leg's rest goes at
    # (150 + 300 × 1) / (75 + 300) = 1.2: the 0.25 km left take 30 s instead of 25 s.
    # Stop 3 is a leg ahead, at the route's pace again: 5 minutes at stop 2, then 100 s.
    assert etas(route) == {1: None, 2: at(10, 9, 40), 3: at(10, 16, 20)}


def test_the_current_leg_s_pace_is_held_and_blended():
    assert current_leg_pace(1.0, elapsed=150, covered=75) == pytest.approx(450 / 375)
    # Stuck for 1,000 s on 75 s of road: held at 3×, (225 + 300) / 375 = 1.4.
    assert current_leg_pace(1.0, elapsed=1000, covered=75) == pytest.approx(1.4)
    assert current_leg_pace(0.8, elapsed=30, covered=0) == 0.8  # not moved yet: the route's pace


def test_a_leg_with_a_stop_failed_on_the_way_teaches_nothing(org):
    route = make_route(org, stops=3)
    Stop.objects.filter(route=route, sequence=1).update(status=Stop.Status.FAILED, departed_at=at(10, 5))
    close(route, 2, arrived=at(10, 20), departed=at(10, 25))  # 20 min for 2 km: a visit in it

    eta_recompute(now=at(10, 25))

    assert etas(route)[3] == at(10, 26, 40)  # pace 1: 100 s


def test_a_stop_without_coordinates_has_no_eta(org):
    route = make_route(org)
    stop = route.stops.get(sequence=2)
    stop.order.lat = stop.order.lng = None
    stop.order.save()
    Stop.objects.filter(pk=stop.pk).update(eta=at(9))

    eta_recompute(now=at(10))

    # Stop 3 follows straight from stop 1: 2 km.
    assert etas(route) == {1: at(10, 1, 40), 2: None, 3: at(10, 10)}


# --- Which routes -------------------------------------------------------------------------------


def test_only_today_s_routes_in_progress_are_recomputed(org):
    live = make_route(org)
    published = make_route(org, status=Route.Status.PUBLISHED, started=None)
    yesterday = make_route(org, date=DAY - dt.timedelta(days=1), started=at(10) - dt.timedelta(days=1))
    completed = make_route(org, status=Route.Status.COMPLETED)

    assert eta_recompute(now=at(10))["routes"] == 1

    assert all(etas(live).values())
    for route in (published, yesterday, completed):
        assert set(etas(route).values()) == {None}


def test_today_is_each_organisation_s_own(org):
    """At 21:00 in Berlin it is already 09:00 the next day in Auckland."""
    auckland = OrganizationFactory(timezone="Pacific/Auckland")
    now = dt.datetime(2026, 11, 23, 20, 0, tzinfo=dt.UTC)
    theirs = make_route(auckland, started=now - dt.timedelta(minutes=30))  # dated 24 Nov
    ours = make_route(org, started=now - dt.timedelta(minutes=30))  # 24 Nov too, not yet in Berlin

    assert eta_recompute(now=now)["routes"] == 1

    assert all(etas(theirs).values()) and set(etas(ours).values()) == {None}


def test_route_ids_limit_the_run(org):
    first, second = make_route(org), make_route(org)

    eta_recompute(route_ids=[second.pk], now=at(10))

    assert set(etas(first).values()) == {None} and all(etas(second).values())


def test_the_query_count_does_not_grow_with_the_routes(org):
    def queries(routes: int) -> int:
        for _ in range(routes):
            route = make_route(org, stops=4)
            close(route, 1, arrived=at(10, 1, 40), departed=at(10, 6, 40))
            DriverPositionFactory(driver=route.driver, lat=DEPOT[0], lng=DEPOT[1], recorded_at=at(10, 7))
        with CaptureQueriesContext(connection) as captured:
            eta_recompute(now=at(10, 7))
        return len(captured)

    few, many = queries(2), queries(10)
    assert few == many <= 4


def test_writing_etas_leaves_the_route_version_and_closed_stops_alone(org):
    route = make_route(org, stops=2)
    close(route, 1, arrived=at(10, 1), departed=at(10, 5))
    first, second = route.stops.order_by("sequence")
    version = Route.objects.get(pk=route.pk).version

    assert stops_eta_set(etas={first.pk: at(11), second.pk: at(11, 30)}, now=at(10, 5)) == 1

    assert etas(route) == {1: None, 2: at(11, 30)}
    assert Route.objects.get(pk=route.pk).version == version


# --- When it runs -------------------------------------------------------------------------------


def test_two_batches_in_a_row_queue_one_recompute(
    org, driver, monkeypatch, django_capture_on_commit_callbacks
):
    queued = []
    monkeypatch.setattr(eta, "async_task", lambda *args: queued.append(args))
    client = APIClient()
    client.force_authenticate(driver.user)

    for second in (0, 10):
        when = at(10, 0, second)
        fix = {
            "uuid": str(uuid.uuid4()),
            "recorded_at": when.isoformat(),
            "lat": 52.5,
            "lng": 13.4,
            "accuracy": 8,
        }
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post("/api/v1/driver/locations/", {"fixes": [fix]}, format="json")
        assert response.status_code == 200, response.content

    assert queued == [("tracking.tasks.recompute_driver_etas", driver.pk)]


def test_the_debounce_holds_across_processes(
    org, driver, monkeypatch, time_machine, django_capture_on_commit_callbacks
):
    """JOB-7 without Redis: each process has its own local-memory cache (cleared here between
    calls, as another process would see it), yet the driver's ETAs are queued once per 30 s."""
    from django.core.cache import cache

    queued = []
    monkeypatch.setattr(eta, "async_task", lambda *args: queued.append(args))
    DriverPositionFactory(driver=driver, organization=org)

    def refresh(*, another_process: bool = True) -> bool:
        if another_process:
            cache.clear()
        with django_capture_on_commit_callbacks(execute=True):
            return eta.eta_refresh_soon(driver_id=driver.pk)

    assert refresh()
    assert not refresh()
    time_machine.move_to(at(10, 0, 29), tick=False)
    assert not refresh()
    assert len(queued) == 1
    time_machine.move_to(at(10, 0, 30), tick=False)
    assert refresh()
    assert not refresh(another_process=False)  # the same process: its cache says no
    assert queued == [("tracking.tasks.recompute_driver_etas", driver.pk)] * 2


def test_the_cache_spares_the_database_within_30_s(org, driver, django_assert_num_queries, monkeypatch):
    monkeypatch.setattr(eta, "async_task", lambda *args: None)
    DriverPositionFactory(driver=driver, organization=org)
    with django_assert_num_queries(1):
        assert eta.eta_refresh_soon(driver_id=driver.pk)
    with django_assert_num_queries(0):
        assert not eta.eta_refresh_soon(driver_id=driver.pk)


def test_the_queued_task_recomputes_the_driver_s_route(org):
    from tracking.tasks import recompute_driver_etas

    route, other = make_route(org), make_route(org)

    assert recompute_driver_etas(route.driver_id) == {"routes": 1, "stops": 3}
    assert all(etas(route).values()) and set(etas(other).values()) == {None}


# --- The "running late" alert follows the ETA ---------------------------------------------------


def test_an_eta_past_the_window_raises_one_late_alert(org):
    route = make_route(org, windows={2: (at(9), at(10, 5))})  # service at stop 2 at 10:08:20

    eta_recompute(now=at(10))
    alerts.alerts_sweep(now=at(10))
    eta_recompute(now=at(10, 1))
    alerts.alerts_sweep(now=at(10, 1))

    [alert] = Alert.objects.filter(kind=Alert.Kind.LATE, resolved_at=None)
    assert alert.stop_id == route.stops.get(sequence=2).pk
    assert "3 min after its window closes" in alert.message  # 10:08:20, 3 min 20 s after 10:05
