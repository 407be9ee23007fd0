"""The travelled path (issue #7 item 4): tracking.paths builds it from good fixes between the
route's start and end, simplifies it, and stores it on the route through dispatch.services."""

import datetime as dt
import uuid

import pytest

from dispatch.models import Order, Route
from dispatch.services import route_travelled_paths_set
from tests.factories import LocationPingFactory, RouteFactory, StopFactory
from tracking.management.commands.setup_schedules import SCHEDULES
from tracking.paths import MAX_POINTS, route_path_build, simplify_path, travelled_paths_refresh
from tracking.services import driver_route_event, driver_stop_event
from tracking.tasks import refresh_travelled_paths

NOW = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)
START = NOW - dt.timedelta(hours=1)

pytestmark = [pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _frozen_now(time_machine):
    time_machine.move_to(NOW, tick=False)


def ping(driver, minutes: float, lat: float, lng: float, flags: str = ""):
    at = START + dt.timedelta(minutes=minutes)
    return LocationPingFactory(driver=driver, recorded_at=at, received_at=at, lat=lat, lng=lng, flags=flags)


def test_a_straight_line_keeps_only_its_ends_and_a_corner_survives():
    straight = [(52.50 + i * 0.0001, 13.40) for i in range(50)]
    assert simplify_path(straight) == [[52.50, 13.40], [straight[-1][0], 13.40]]
    # An L: north 500 m, then east 500 m; the corner is kept, the points along each leg are not.
    north = [(52.50 + i * 0.0005, 13.40) for i in range(10)]
    east = [(52.5045, 13.40 + i * 0.0008) for i in range(1, 10)]
    assert simplify_path(north + east) == [[52.50, 13.40], [52.5045, 13.40], [52.5045, 13.40 + 9 * 0.0008]]


def test_a_long_wiggly_path_is_cut_to_the_cap():
    wiggle = [(52.50 + i * 0.00005, 13.40 + (0.0003 if i % 2 else 0)) for i in range(5000)]
    path = simplify_path(wiggle)
    assert 2 <= len(path) <= MAX_POINTS
    assert path[0] == [52.50, 13.40] and path[-1] == list(wiggle[-1])


def test_the_path_uses_only_good_fixes_between_start_and_end(org, driver):
    route = RouteFactory(organization=org, driver=driver, status=Route.Status.IN_PROGRESS, started_at=START)
    ping(driver, -5, 52.40, 13.30)  # before the route started
    ping(driver, 0, 52.50, 13.40)
    ping(driver, 10, 52.51, 13.40)
    ping(driver, 15, 52.90, 13.90, flags="speed_jump")
    ping(driver, 20, 52.51, 13.42)
    assert route_path_build(route=route) == [[52.50, 13.40], [52.51, 13.40], [52.51, 13.42]]
    route.refresh_from_db()
    assert route.travelled_path == [[52.50, 13.40], [52.51, 13.40], [52.51, 13.42]]


def test_ending_the_route_stores_its_path(org, driver):
    route = RouteFactory(organization=org, driver=driver, status=Route.Status.PUBLISHED)
    stop = StopFactory(route=route, sequence=1, order__status=Order.Status.ASSIGNED)
    driver_route_event(driver=driver, route=route, uuid=uuid.uuid4(), kind="start", at=START, now=START)
    ping(driver, 1, 52.50, 13.40)
    ping(driver, 30, 52.51, 13.40)
    ping(driver, 59, 52.51, 13.42)
    ping(driver, 61, 52.60, 13.50)  # after the end: not on this route
    driver_stop_event(driver=driver, stop=stop, uuid=uuid.uuid4(), kind="delivered", at=NOW, now=NOW)
    driver_route_event(driver=driver, route=route, uuid=uuid.uuid4(), kind="end", at=NOW, now=NOW)
    route.refresh_from_db()
    assert route.travelled_path == [[52.50, 13.40], [52.51, 13.40], [52.51, 13.42]]


def test_the_periodic_job_refreshes_routes_in_progress_in_bounded_queries(
    org, driver, django_assert_max_num_queries
):
    routes = []
    for n in range(3):
        other = RouteFactory(organization=org, status=Route.Status.IN_PROGRESS, started_at=START)
        ping(other.driver, 1, 52.50 + n / 100, 13.40)
        ping(other.driver, 2, 52.50 + n / 100, 13.41)
        routes.append(other)
    done_long_ago = RouteFactory(
        organization=org, driver=driver, status=Route.Status.COMPLETED,
        started_at=START - dt.timedelta(days=2), completed_at=START - dt.timedelta(days=2, hours=-3),
    )  # fmt: skip
    # One query for the routes, one per route for its fixes, one UPDATE.
    with django_assert_max_num_queries(1 + 3 + 1):
        assert refresh_travelled_paths() == 3
    assert [Route.objects.get(pk=r.pk).travelled_path[0] for r in routes] == [
        [52.50, 13.40], [52.51, 13.40], [52.52, 13.40],
    ]  # fmt: skip
    assert Route.objects.get(pk=done_long_ago.pk).travelled_path == []
    assert travelled_paths_refresh(limit=1) == 1
    assert SCHEDULES["refresh travelled paths"][0] == "tracking.tasks.refresh_travelled_paths"


def test_a_path_off_the_earth_or_too_long_is_refused(org):
    route = RouteFactory(organization=org)
    with pytest.raises(ValueError, match="not a position"):
        route_travelled_paths_set(paths={route.pk: [[91, 0]]})
    with pytest.raises(ValueError, match="at most"):
        route_travelled_paths_set(paths={route.pk: [[52, 13]] * 501})
    assert Route.objects.get(pk=route.pk).travelled_path == []
