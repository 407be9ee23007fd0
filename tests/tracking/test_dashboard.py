"""The dispatcher's live dashboard at / (issue #4 item 6): page, #live partial, ETag, scoping."""

import datetime as dt
import json
import re

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dispatch.models import Stop
from tests.factories import (
    DepotFactory,
    DriverFactory,
    DriverPositionFactory,
    OrderFactory,
    RouteFactory,
    StopEventFactory,
    StopFactory,
    UserFactory,
)

pytestmark = [pytest.mark.django_db]

# 10:30 in Berlin on the factories' day.
NOW = dt.datetime(2026, 11, 24, 9, 30, tzinfo=dt.UTC)
HTMX = {"HX-Request": "true"}


@pytest.fixture(autouse=True)
def _clock():
    with time_machine.travel(NOW, tick=False):
        yield


def live_data(html: str) -> dict:
    match = re.search(r'<script id="live-data" type="application/json">(.*?)</script>', html, re.S)
    assert match, "no #live-data JSON in the response"
    return json.loads(match.group(1))


def route_with_stops(org, depot, *, done: int, total: int, name: str = "Dana", **route_fields):
    route = RouteFactory(
        organization=org,
        depot=depot,
        driver__user__first_name=name,
        driver__user__last_name="Driver",
        **route_fields,
    )
    for i in range(total):
        StopFactory(
            route=route, sequence=i + 1, status=Stop.Status.COMPLETED if i < done else Stop.Status.PENDING
        )
    return route


def test_page_shows_routes_progress_and_map_data(dispatcher_client, org, depot):
    route = route_with_stops(org, depot, done=3, total=10, name="Dana")
    DriverPositionFactory(driver=route.driver, recorded_at=NOW - dt.timedelta(seconds=30), heading_deg=90.0)

    html = dispatcher_client.get("/").content.decode()

    assert "Dana Driver" in html
    assert "3 / 10" in html
    assert 'id="dash-map"' in html and 'id="live"' in html and 'hx-trigger="every 5s"' in html
    data = live_data(html)
    assert [d["name"] for d in data["depots"]] == ["Kreuzberg depot"]
    [driver] = data["drivers"]
    assert (driver["name"], driver["route"], driver["heading"], driver["stale"]) == (
        "Dana Driver",
        route.pk,
        90.0,
        False,
    )
    [line] = data["routes"]
    assert [s["state"] for s in line["stops"]] == ["done"] * 3 + ["pending"] * 7


def test_partial_is_only_the_live_section(dispatcher_client, org, depot):
    route_with_stops(org, depot, done=3, total=10, name="Dana")

    html = dispatcher_client.get("/", headers=HTMX).content.decode()

    assert html.lstrip().startswith('<section id="live"')
    assert "<html" not in html and "dash-map" not in html
    assert "Dana Driver" in html and "3 / 10" in html


def test_old_fix_is_flagged_stale_with_its_age(dispatcher_client, org, depot):
    route = route_with_stops(org, depot, done=0, total=2)
    DriverPositionFactory(driver=route.driver, recorded_at=NOW - dt.timedelta(minutes=12))

    [driver] = live_data(dispatcher_client.get("/", headers=HTMX).content.decode())["drivers"]

    assert driver["stale"] is True
    assert driver["age"] == "12 min ago"


def test_late_stops_and_projected_finish(dispatcher_client, org, depot):
    route = RouteFactory(organization=org, depot=depot, planned_end=None)
    tz = org.tzinfo
    # Window 9-12 local; now is 10:30 local.
    planned_after_window = StopFactory(route=route, sequence=1)
    planned_after_window.planned_arrival = dt.datetime(2026, 11, 24, 12, 30, tzinfo=tz)
    planned_after_window.save()
    closed_window = StopFactory(
        route=route,
        sequence=2,
        order__window_end=dt.datetime(2026, 11, 24, 10, 0, tzinfo=tz),
        order__window_start=dt.datetime(2026, 11, 24, 9, 0, tzinfo=tz),
        planned_arrival=dt.datetime(2026, 11, 24, 9, 45, tzinfo=tz),
    )
    StopFactory(route=route, sequence=3, planned_arrival=dt.datetime(2026, 11, 24, 11, 15, tzinfo=tz))
    assert closed_window.pk

    html = dispatcher_client.get("/", headers=HTMX).content.decode()

    assert "2 late" in html
    assert "finish 11:15" in html


def test_unchanged_data_answers_304_and_a_new_position_200(dispatcher_client, org, depot):
    route = route_with_stops(org, depot, done=1, total=3)
    position = DriverPositionFactory(driver=route.driver, recorded_at=NOW - dt.timedelta(seconds=20))

    first = dispatcher_client.get("/", headers=HTMX)
    etag = first.headers["ETag"]
    again = dispatcher_client.get("/", headers={**HTMX, "If-None-Match": etag})
    assert (again.status_code, again.content) == (304, b"")

    position.lat, position.received_at = 52.51, NOW - dt.timedelta(seconds=1)
    position.save()
    moved = dispatcher_client.get("/", headers={**HTMX, "If-None-Match": etag})
    assert moved.status_code == 200
    assert moved.headers["ETag"] != etag
    assert live_data(moved.content.decode())["drivers"][0]["lat"] == 52.51


def test_a_stop_event_changes_the_etag(dispatcher_client, org, depot):
    route = route_with_stops(org, depot, done=0, total=2)
    etag = dispatcher_client.get("/", headers=HTMX).headers["ETag"]

    StopEventFactory(order=route.stops.first().order)

    assert dispatcher_client.get("/", headers={**HTMX, "If-None-Match": etag}).status_code == 200


def _fleet(org, depot, n: int) -> None:
    for _ in range(n):
        route = RouteFactory(organization=org, depot=depot)
        for i in range(3):
            StopFactory(route=route, sequence=i + 1)
        DriverPositionFactory(driver=route.driver)


def _partial_queries(client) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/", headers=HTMX)
    assert response.status_code == 200
    return len(queries)


def test_partial_query_count_does_not_grow_with_drivers(dispatcher_client, org, depot):
    _fleet(org, depot, 10)
    small = _partial_queries(dispatcher_client)
    # session, user, membership, 4 for the ETag, counts, routes, stops, positions, depots, 2 for alerts
    assert small == 14

    _fleet(org, depot, 190)
    html = dispatcher_client.get("/", headers=HTMX).content.decode()
    assert len(live_data(html)["drivers"]) == 200
    assert _partial_queries(dispatcher_client) == small


def test_other_organisations_drivers_never_appear(dispatcher_client, org, depot, other_org):
    route_with_stops(org, depot, done=0, total=1, name="Ours")
    theirs = route_with_stops(other_org, DepotFactory(organization=other_org), done=0, total=1, name="Theirs")
    DriverPositionFactory(driver=theirs.driver)
    DriverPositionFactory(driver=DriverFactory(organization=other_org, user__first_name="Idle"))

    for response in (dispatcher_client.get("/"), dispatcher_client.get("/", headers=HTMX)):
        html = response.content.decode()
        assert "Ours Driver" in html
        assert "Theirs" not in html and "Idle" not in html
        data = live_data(html)
        assert data["drivers"] == []
        assert [d["name"] for d in data["depots"]] == ["Kreuzberg depot"]


def test_dispatcher_of_org_b_sees_none_of_org_a(client, org, depot, other_dispatcher):
    route = route_with_stops(org, depot, done=3, total=10, name="Dana")
    DriverPositionFactory(driver=route.driver)
    client.force_login(other_dispatcher)

    html = client.get("/", headers=HTMX).content.decode()

    assert "Dana" not in html and "3 / 10" not in html
    data = live_data(html)
    assert (data["drivers"], data["routes"], data["depots"]) == ([], [], [])


def test_driver_is_sent_to_the_driver_app(client, driver):
    client.force_login(driver.user)
    assert client.get("/").headers["Location"] == "/driver/"


def test_user_without_organisation_is_refused(client):
    client.force_login(UserFactory())
    assert client.get("/", headers=HTMX).status_code == 403


def test_order_counts_are_kept(dispatcher_client, org):
    OrderFactory.create_batch(2, organization=org)
    html = dispatcher_client.get("/", headers=HTMX).content.decode()
    assert re.search(r'<span class="value">2</span><span class="label">orders today</span>', html)
