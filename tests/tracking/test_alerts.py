"""Dispatchers' alerts (issue #4 item 7): raised once per situation, resolved when it clears,
acknowledged on the live dashboard."""

import datetime as dt
import json
import re
import uuid
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from dispatch import services
from dispatch.models import Route, Stop
from tests.factories import DepotFactory, OrderFactory, RouteFactory, StopFactory
from tracking import alerts
from tracking.models import Alert
from tracking.services import location_record_batch

pytestmark = [pytest.mark.django_db]

BERLIN = ZoneInfo("Europe/Berlin")
DAY = dt.date(2026, 11, 24)
HTMX = {"HX-Request": "true"}
# Between the depot (52.5035, 13.3989) and the stops (52.4980, 13.4330): on the way, at no stop.
ON_THE_WAY = (52.5010, 13.4150)
FAR_AWAY = (52.5400, 13.3400)  # ~5 km north-west of everything


def at(hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(DAY, dt.time(hour, minute), tzinfo=BERLIN)


@pytest.fixture(autouse=True)
def _clock(time_machine):
    time_machine.move_to(at(10), tick=False)


@pytest.fixture
def route(org):
    """A route in progress since 09:00 with three stops, windows 09:00–12:00 by default."""
    depot = DepotFactory(organization=org)
    route = RouteFactory(organization=org, depot=depot, driver__user__first_name="Dana", date=DAY)
    for n in range(3):
        StopFactory(
            route=route,
            sequence=n + 1,
            planned_arrival=at(10, 30 + 10 * n),
            order=OrderFactory(organization=org, lat=52.4980 + n * 0.001, lng=13.4330),
        )
    services.route_transition(route=route, to=Route.Status.PUBLISHED, by=None, at=at(8))
    services.route_transition(route=route, to=Route.Status.IN_PROGRESS, by=None, at=at(9))
    return route


def send(route, point, when):
    result = location_record_batch(
        driver=route.driver,
        fixes=[{"uuid": uuid.uuid4(), "recorded_at": when, "lat": point[0], "lng": point[1], "accuracy": 10}],
        now=when,
    )
    assert result["accepted"] == 1, result


def open_alerts(kind=None):
    rows = Alert.objects.filter(resolved_at=None)
    return list(rows.filter(kind=kind) if kind else rows)


# --- Failed delivery ----------------------------------------------------------------------------


def test_a_failed_stop_raises_one_alert_at_once_and_acknowledging_resolves_it(
    route, dispatcher, django_capture_on_commit_callbacks
):
    stop = route.stops.get(sequence=1)
    with django_capture_on_commit_callbacks(execute=True):
        services.stop_transition(stop=stop, to=Stop.Status.FAILED, by=None, reason="Nobody home", at=at(10))
    [alert] = open_alerts(Alert.Kind.FAILED)
    assert alert.stop_id == stop.pk and "Nobody home" in alert.message and "Dana" in alert.message

    alerts.alerts_sweep(now=at(10, 1))
    assert Alert.objects.filter(kind=Alert.Kind.FAILED).count() == 1

    alerts.alert_acknowledge(alert=alert, by=dispatcher)
    alerts.alerts_sweep(now=at(10, 2))
    assert open_alerts(Alert.Kind.FAILED) == []
    assert Alert.objects.filter(kind=Alert.Kind.FAILED).count() == 1  # not raised again


def test_the_sweep_raises_a_failure_the_signal_missed(route):
    stop = route.stops.get(sequence=1)
    services.stop_transition(stop=stop, to=Stop.Status.FAILED, by=None, reason="Refused", at=at(10))
    assert open_alerts() == []  # on_commit never ran inside the test transaction
    send(route, ON_THE_WAY, at(10))
    assert alerts.alerts_sweep(now=at(10))["raised"] == 1
    assert [a.stop_id for a in open_alerts(Alert.Kind.FAILED)] == [stop.pk]


# --- Running late -------------------------------------------------------------------------------


def test_a_stop_projected_after_its_window_raises_late_once_and_closing_it_resolves(route):
    first = route.stops.get(sequence=1)
    first.order.window_end = at(10, 45)
    first.order.save()
    send(route, ON_THE_WAY, at(10, 59))
    # 11:00: the stop planned for 10:30 is not reached; it cannot be served before 10:45.
    result = alerts.alerts_sweep(now=at(11))
    assert result["raised"] == 1
    [late] = open_alerts(Alert.Kind.LATE)
    assert late.stop_id == first.pk and "after its window closes (10:45)" in late.message
    alerts.alerts_sweep(now=at(11, 1))
    assert Alert.objects.filter(kind=Alert.Kind.LATE).count() == 1

    services.stop_transition(stop=first, to=Stop.Status.ARRIVED, by=None, at=at(11, 2))
    alerts.alerts_sweep(now=at(11, 2))
    assert open_alerts(Alert.Kind.LATE) == []


def test_a_route_on_time_raises_nothing(route):
    send(route, ON_THE_WAY, at(10))
    assert alerts.alerts_sweep(now=at(10))["raised"] == 0
    assert open_alerts() == []


# --- Idle, off route, no positions ------------------------------------------------------------


def test_standing_still_away_from_stops_is_idle_and_moving_on_resolves_it(route, settings):
    settings.ALERT_IDLE_MINUTES = 10
    for minute in range(0, 12):
        send(route, (ON_THE_WAY[0] + minute * 1e-5, ON_THE_WAY[1]), at(10, minute))
    alerts.alerts_sweep(now=at(10, 9))
    assert open_alerts(Alert.Kind.IDLE) == []  # 9 minutes is not yet idle
    alerts.alerts_sweep(now=at(10, 11))
    [idle] = open_alerts(Alert.Kind.IDLE)
    assert "has not moved for 11 min" in idle.message

    send(route, (52.5000, 13.4250), at(10, 12))  # ~700 m further on
    alerts.alerts_sweep(now=at(10, 12))
    assert open_alerts(Alert.Kind.IDLE) == []


def test_waiting_at_a_stop_is_not_idle(route):
    stop = route.stops.get(sequence=1).order
    for minute in range(0, 20):
        send(route, (stop.lat, stop.lng), at(10, minute))
    alerts.alerts_sweep(now=at(10, 19))
    assert open_alerts(Alert.Kind.IDLE) == []


def test_far_from_the_remaining_stops_is_off_route_until_back(route):
    send(route, FAR_AWAY, at(10))
    alerts.alerts_sweep(now=at(10))
    [off] = open_alerts(Alert.Kind.OFF_ROUTE)
    assert "km off the way" in off.message and off.details["away_m"] > 3000
    send(route, ON_THE_WAY, at(10, 5))  # 60 km/h from there: plausible
    alerts.alerts_sweep(now=at(10, 5))
    assert open_alerts(Alert.Kind.OFF_ROUTE) == []


def test_no_positions_for_a_started_route_raises_then_a_fix_resolves(route):
    alerts.alerts_sweep(now=at(9, 5))
    assert open_alerts(Alert.Kind.NO_FIXES) == []
    alerts.alerts_sweep(now=at(9, 15))
    [quiet] = open_alerts(Alert.Kind.NO_FIXES)
    assert "no position for 15 min" in quiet.message
    send(route, ON_THE_WAY, at(9, 16))
    alerts.alerts_sweep(now=at(9, 16))
    assert open_alerts(Alert.Kind.NO_FIXES) == []


def test_ending_the_route_resolves_its_alerts(route):
    alerts.alerts_sweep(now=at(9, 15))
    assert open_alerts(Alert.Kind.NO_FIXES)
    for stop in route.stops.all():
        services.stop_transition(stop=stop, to=Stop.Status.SKIPPED, by=None, at=at(9, 20))
    services.route_transition(route=route, to=Route.Status.COMPLETED, by=None, at=at(9, 21))
    alerts.alerts_sweep(now=at(9, 30))
    assert open_alerts() == []


def test_two_sweeps_racing_raise_one_alert_per_situation(route):
    for now in (at(9, 15), at(9, 15), at(9, 16)):
        alerts.alerts_sweep(now=now)
    assert Alert.objects.filter(kind=Alert.Kind.NO_FIXES).count() == 1


def test_the_sweep_runs_in_a_fixed_number_of_queries(org):
    def build(n):
        depot = DepotFactory(organization=org)
        for _ in range(n):
            r = RouteFactory(organization=org, depot=depot, date=DAY, status=Route.Status.IN_PROGRESS)
            r.started_at = at(9)
            r.save()
            for s in range(3):
                StopFactory(route=r, sequence=s + 1, planned_arrival=at(10, 30))
            send(r, ON_THE_WAY, at(10))

    build(3)
    with CaptureQueriesContext(connection) as few:
        alerts.alerts_sweep(now=at(10, 1), organization=org)
    build(12)
    alerts.alerts_sweep(now=at(10, 1), organization=org)  # the first sweep raises
    with CaptureQueriesContext(connection) as many:
        alerts.alerts_sweep(now=at(10, 1), organization=org)
    assert len(many) <= len(few), [q["sql"] for q in many.captured_queries]


# --- On the dashboard -------------------------------------------------------------------------


@pytest.fixture
def an_alert(route):
    alerts.alerts_sweep(now=at(9, 15))
    return Alert.objects.get(kind=Alert.Kind.NO_FIXES)


def test_the_dashboard_lists_open_alerts_and_acknowledging_takes_it_off(dispatcher_client, an_alert):
    html = dispatcher_client.get("/").content.decode()
    assert f'id="alert-{an_alert.pk}"' in html and "No positions" in html

    response = dispatcher_client.post(f"/alerts/{an_alert.pk}/acknowledge/", headers=HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="live"' in html and f'id="alert-{an_alert.pk}"' not in html
    assert "1 acknowledged alert still going on" in html
    an_alert.refresh_from_db()
    assert an_alert.acknowledged_by is not None and an_alert.resolved_at is None


def test_acknowledging_without_htmx_goes_back_to_the_dashboard(dispatcher_client, an_alert):
    response = dispatcher_client.post(f"/alerts/{an_alert.pk}/acknowledge/")
    assert response.status_code == 302 and response["Location"] == "/"


def test_a_polled_alert_is_acknowledged_with_the_pages_csrf_header(dispatcher, an_alert):
    """The poll's alerts are in the fragment every dispatcher shares, so their forms carry no
    token of anyone's: htmx sends the page's own, from <body hx-headers>."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(dispatcher)
    page = client.get("/").content.decode()
    assert 'name="csrfmiddlewaretoken"' in page  # the full page's forms work without JavaScript
    header_token = json.loads(re.search(r"hx-headers='([^']+)'", page).group(1))["X-CSRFToken"]
    poll = client.get("/", headers=HTMX).content.decode()
    assert f'id="alert-{an_alert.pk}"' in poll and "csrfmiddlewaretoken" not in poll

    url = f"/alerts/{an_alert.pk}/acknowledge/"
    assert client.post(url, headers=HTMX).status_code == 403
    assert Alert.objects.get(pk=an_alert.pk).acknowledged_at is None
    response = client.post(url, headers={**HTMX, "X-CSRFToken": header_token})
    assert response.status_code == 200 and f'id="alert-{an_alert.pk}"' not in response.content.decode()
    assert Alert.objects.get(pk=an_alert.pk).acknowledged_at is not None


def test_a_new_alert_changes_the_dashboard_etag(dispatcher_client, route):
    first = dispatcher_client.get("/", headers=HTMX)
    unchanged = dispatcher_client.get("/", headers={**HTMX, "If-None-Match": first["ETag"]})
    assert unchanged.status_code == 304
    alerts.alerts_sweep(now=at(10))  # no position since 09:00: raises "no positions"
    changed = dispatcher_client.get("/", headers={**HTMX, "If-None-Match": first["ETag"]})
    assert changed.status_code == 200 and "No positions" in changed.content.decode()


def test_another_organisations_alert_is_a_404_and_a_driver_gets_403(
    client, other_dispatcher, an_alert, route
):
    client.force_login(other_dispatcher)
    assert client.post(f"/alerts/{an_alert.pk}/acknowledge/").status_code == 404
    assert "No positions" not in client.get("/").content.decode()
    client.force_login(route.driver.user)
    assert client.post(f"/alerts/{an_alert.pk}/acknowledge/").status_code == 403
    an_alert.refresh_from_db()
    assert an_alert.acknowledged_at is None
