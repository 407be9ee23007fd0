"""The dispatcher's live dashboard at / (issue #4 item 6): page, #live partial, ETag, scoping."""

import datetime as dt
import json
import re

import pytest
import time_machine
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext

from dispatch.models import Route, Stop
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
# Who is asking: the session row and, joined to it, the user with his membership (one query).
# With REDIS_URL both come from the cache once read (cached_db, SIGNED_IN_USER_CACHE_SECONDS).
SIGNED_IN_QUERIES = 0 if settings.SESSION_ENGINE.endswith("cached_db") else 1


@pytest.fixture(autouse=True)
def _clock():
    with time_machine.travel(NOW, tick=False):
        yield


def live_data(html: str) -> dict:
    match = re.search(r'<script id="live-data" type="application/json">(.*?)</script>', html, re.S)
    assert match, "no #live-data JSON in the response"
    return json.loads(match.group(1))


def map_json(client) -> dict:
    response = client.get("/live/map.json")
    assert response.status_code == 200, response.status_code
    return response.json()


def stop_states(data: dict, route_id: int) -> dict[str, list[int]]:
    """The partial's stop states of one route: sequences of done and failed stops, sorted."""
    states = data["states"].get(str(route_id), {})
    return {k: sorted(int(n) for n in states.get(k, "").split(",") if n) for k in ("done", "failed")}


def touch(route) -> None:
    """What dispatch's services do with every change of a route's stops: bump its version."""
    Route.objects.filter(pk=route.pk).update(version=F("version") + 1)


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
    [driver] = data["drivers"]
    assert (driver["name"], driver["route"], driver["heading"], driver["stale"]) == (
        "Dana Driver",
        route.pk,
        90.0,
        False,
    )
    assert stop_states(data, route.pk) == {"done": [1, 2, 3], "failed": []}
    # The geometry comes once from /live/map.json, of the version the partial names.
    geometry = map_json(dispatcher_client)
    assert geometry["map_version"] == data["map_version"]
    assert [d["name"] for d in geometry["depots"]] == ["Kreuzberg depot"]
    [line] = geometry["routes"]
    assert (line["id"], line["driver"], line["name"]) == (route.pk, route.driver_id, "Dana Driver")
    assert [s["n"] for s in line["stops"]] == list(range(1, 11))
    assert all(s["label"] for s in line["stops"])


def test_failed_stops_are_counted_and_coloured(dispatcher_client, org, depot):
    route = route_with_stops(org, depot, done=2, total=4)
    Stop.objects.filter(route=route, sequence=3).update(status=Stop.Status.FAILED)
    Stop.objects.filter(route=route, sequence=4).update(status=Stop.Status.ARRIVED)

    html = dispatcher_client.get("/", headers=HTMX).content.decode()

    assert "3 / 4" in html and "1 failed" in html
    assert stop_states(live_data(html), route.pk) == {"done": [1, 2], "failed": [3]}


def test_map_json_answers_304_and_its_version_ignores_stop_states(dispatcher_client, org, depot):
    route = route_with_stops(org, depot, done=1, total=3)
    first = dispatcher_client.get("/live/map.json")
    etag = first.headers["ETag"]
    assert dispatcher_client.get("/live/map.json", headers={"If-None-Match": etag}).status_code == 304
    version = live_data(dispatcher_client.get("/", headers=HTMX).content.decode())["map_version"]

    # A delivery changes the partial (states, counts) but not the geometry: no map re-fetch.
    Stop.objects.filter(route=route, sequence=2).update(status=Stop.Status.COMPLETED)
    touch(route)
    data = live_data(dispatcher_client.get("/", headers=HTMX).content.decode())
    assert data["map_version"] == version
    assert stop_states(data, route.pk)["done"] == [1, 2]
    assert dispatcher_client.get("/live/map.json", headers={"If-None-Match": etag}).status_code == 304

    # A stop added to the route, or re-sequenced, is new geometry.
    StopFactory(route=route, sequence=4)
    touch(route)
    data = live_data(dispatcher_client.get("/", headers=HTMX).content.decode())
    assert data["map_version"] != version
    moved = dispatcher_client.get("/live/map.json", headers={"If-None-Match": etag})
    assert moved.status_code == 200 and moved.json()["map_version"] == data["map_version"]
    version = data["map_version"]
    Stop.objects.filter(route=route, sequence=1).update(sequence=9)
    touch(route)
    assert live_data(dispatcher_client.get("/", headers=HTMX).content.decode())["map_version"] != version


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


def test_a_poll_goes_out_gzipped_to_a_browser_that_accepts_it(dispatcher_client, org, depot):
    import gzip

    _fleet(org, depot, 20)
    plain = dispatcher_client.get("/", headers=HTMX)
    packed = dispatcher_client.get("/", headers={**HTMX, "Accept-Encoding": "gzip, deflate, br"})

    assert "Content-Encoding" not in plain.headers
    assert packed.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(packed.content) == plain.content
    assert len(packed.content) < len(plain.content) / 4
    # One ETag for both encodings (a weak one), and either answers 304 to it.
    assert packed.headers["ETag"] == plain.headers["ETag"]
    assert packed.headers["ETag"].startswith('W/"')
    for encoding in ("gzip", "identity"):
        again = dispatcher_client.get(
            "/", headers={**HTMX, "Accept-Encoding": encoding, "If-None-Match": plain.headers["ETag"]}
        )
        assert again.status_code == 304 and again.headers["ETag"] == plain.headers["ETag"]
        assert "Accept-Encoding" in again.headers["Vary"]
    assert "Accept-Encoding" in plain.headers["Vary"] and "HX-Request" in plain.headers["Vary"]


def test_the_map_geometry_goes_out_gzipped_to_a_browser_that_accepts_it(dispatcher_client, org, depot):
    import gzip

    _fleet(org, depot, 20)
    plain = dispatcher_client.get("/live/map.json")
    packed = dispatcher_client.get("/live/map.json", headers={"Accept-Encoding": "gzip, deflate, br"})

    assert "Content-Encoding" not in plain.headers
    assert packed.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(packed.content) == plain.content
    assert len(packed.content) < len(plain.content) / 3
    assert packed.headers["ETag"] == plain.headers["ETag"]
    for encoding in ("gzip", "identity"):
        again = dispatcher_client.get(
            "/live/map.json", headers={"Accept-Encoding": encoding, "If-None-Match": plain.headers["ETag"]}
        )
        assert again.status_code == 304 and again.headers["ETag"] == plain.headers["ETag"]
        assert "Accept-Encoding" in again.headers["Vary"]


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
    cache.clear()  # the rendering of an unchanged fingerprint is shared (see the next test)
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/", headers=HTMX)
    assert response.status_code == 200
    return len(queries)


def test_partial_query_count_does_not_grow_with_drivers(dispatcher_client, org, depot):
    _fleet(org, depot, 10)
    small = _partial_queries(dispatcher_client)
    # the session with the user and his membership (one query; from the database, the cache was
    # just cleared), 1 for the ETag, order counts, routes, their stops counted by route (one
    # grouped query), positions, 2 for alerts
    assert small == 8

    _fleet(org, depot, 190)
    html = dispatcher_client.get("/", headers=HTMX).content.decode()
    assert len(live_data(html)["drivers"]) == 200
    assert _partial_queries(dispatcher_client) == small


def test_an_unchanged_fingerprint_is_rendered_once_for_every_dispatcher(
    dispatcher_client, org, depot, org_admin, client
):
    _fleet(org, depot, 10)
    first = dispatcher_client.get("/", headers=HTMX).content.decode()
    client.force_login(org_admin)
    with CaptureQueriesContext(connection) as queries:
        second = client.get("/", headers=HTMX).content.decode()
    # who is asking (the session joined to the user, or with Redis the session's cached copy and
    # then the user) and the fingerprint: the counts, routes, positions and alerts come from the
    # cached rendering.
    assert len(queries) == 2
    assert live_data(second) == live_data(first)
    assert second.count('class="dash-route"') == first.count('class="dash-route"') == 10


def test_a_poll_renders_again_only_the_route_rows_that_changed(dispatcher_client, org, depot, monkeypatch):
    from tracking import views
    from tracking.models import DriverPosition

    rendered_rows = []
    render = views.render_to_string
    monkeypatch.setattr(
        views, "render_to_string", lambda *a, **kw: rendered_rows.append(a) or render(*a, **kw)
    )

    def poll() -> tuple[int, str]:
        rendered_rows.clear()
        html = dispatcher_client.get("/", headers=HTMX).content.decode()
        return len(rendered_rows), html

    _fleet(org, depot, 20)
    assert poll()[0] == 20
    # Every driver moves: the rows are not rendered again, and still say so.
    DriverPosition.objects.update(received_at=NOW, recorded_at=NOW - dt.timedelta(seconds=8), lat=52.6)
    rendered, html = poll()
    assert rendered == 0
    assert html.count("position 8 s ago") == 20
    assert {driver["lat"] for driver in live_data(html)["drivers"]} == {52.6}
    # A stop is delivered on one route: that row only.
    stop = Stop.objects.filter(route__organization=org).order_by("pk").first()
    Stop.objects.filter(pk=stop.pk).update(status=Stop.Status.COMPLETED)
    Route.objects.filter(pk=stop.route_id).update(version=F("version") + 1)
    rendered, html = poll()
    assert rendered == 1
    assert re.search(rf'id="dash-route-{stop.route_id}".*?1 / 3', html, re.S)


def test_304_and_map_json_query_counts_do_not_grow_with_drivers(dispatcher_client, org, depot):
    def counts() -> tuple[int, int, int]:
        etag = dispatcher_client.get("/", headers=HTMX)["ETag"]
        with CaptureQueriesContext(connection) as cached:
            assert dispatcher_client.get("/", headers={**HTMX, "If-None-Match": etag}).status_code == 304
        with CaptureQueriesContext(connection) as geometry:
            response = dispatcher_client.get("/live/map.json")
        with CaptureQueriesContext(connection) as geometry_cached:
            assert (
                dispatcher_client.get(
                    "/live/map.json", headers={"If-None-Match": response["ETag"]}
                ).status_code
                == 304
            )
        return len(cached), len(geometry), len(geometry_cached)

    _fleet(org, depot, 10)
    small = counts()
    # 304: the ETag's one query. map.json: routes, their stops counted by route, depots (its
    # ETag), then the stops. And each time who is asking.
    assert small == (1 + SIGNED_IN_QUERIES, 4 + SIGNED_IN_QUERIES, 3 + SIGNED_IN_QUERIES)
    _fleet(org, depot, 40)
    assert counts() == small


def test_other_organisations_drivers_never_appear(dispatcher_client, org, depot, other_org):
    route_with_stops(org, depot, done=0, total=1, name="Ours")
    theirs = route_with_stops(other_org, DepotFactory(organization=other_org), done=0, total=1, name="Theirs")
    DriverPositionFactory(driver=theirs.driver)
    DriverPositionFactory(driver=DriverFactory(organization=other_org, user__first_name="Idle"))

    for response in (dispatcher_client.get("/"), dispatcher_client.get("/", headers=HTMX)):
        html = response.content.decode()
        assert "Ours Driver" in html
        assert "Theirs" not in html and "Idle" not in html
        assert live_data(html)["drivers"] == []
    geometry = map_json(dispatcher_client)
    assert [d["name"] for d in geometry["depots"]] == ["Kreuzberg depot"]
    assert [r["name"] for r in geometry["routes"]] == ["Ours Driver"]


def test_dispatcher_of_org_b_sees_none_of_org_a(client, org, depot, other_dispatcher):
    route = route_with_stops(org, depot, done=3, total=10, name="Dana")
    DriverPositionFactory(driver=route.driver)
    client.force_login(other_dispatcher)

    html = client.get("/", headers=HTMX).content.decode()

    assert "Dana" not in html and "3 / 10" not in html
    data, geometry = live_data(html), map_json(client)
    assert (data["drivers"], data["states"], geometry["routes"], geometry["depots"]) == ([], {}, [], [])
    assert "Dana" not in json.dumps(geometry)


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
