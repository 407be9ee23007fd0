"""Tracker apps over the OsmAnd protocol (issue #4 item 4): /api/v1/tracker/osmand/ and the
dispatcher's Trackers page."""

import datetime as dt
import json
import re
from urllib.parse import urlencode

import pytest
from django.urls import reverse
from django.utils import timezone

from dispatch.models import Membership
from tests.factories import DriverFactory, MembershipFactory
from tracking.api import TrackerThrottle
from tracking.models import DriverPosition, LocationPing, TrackerDevice
from tracking.services import tracker_device_create, tracker_device_revoke

URL = "/api/v1/tracker/osmand/"
KNOT = 1852 / 3600

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def device_key(driver, dispatcher):
    device, key = tracker_device_create(driver=driver, name="Traccar on the Samsung", by=dispatcher)
    return device, key


def recent(seconds: int = 30) -> dt.datetime:
    return (timezone.now() - dt.timedelta(seconds=seconds)).replace(microsecond=0)


def query(key: str, at: dt.datetime, **extra) -> dict:
    return {"id": key, "timestamp": int(at.timestamp()), "lat": "52.5200", "lon": "13.4050", **extra}


def traccar_json(key: str, at: dt.datetime, **coords) -> dict:
    """What traccar-client's _locationTemplate plus its device_id param produce."""
    lat, lon = coords.pop("latitude", 52.52), coords.pop("longitude", 13.405)
    return {
        "location": {
            "timestamp": at.isoformat().replace("+00:00", ".000Z"),
            "coords": {
                "latitude": lat,
                "longitude": lon,
                "accuracy": 4.3,
                "speed": 8.5,
                "heading": 158.4,
                "altitude": 103,
                **coords,
            },
            "is_moving": True,
            "odometer": 0,
            "event": "",
            "battery": {"level": 0.88, "is_charging": False},
            "activity": {"type": "in_vehicle"},
            "extras": {},
            "_": f"&id={key}&lat={lat}&lon={lon}&timestamp={at.isoformat()}&",
        },
        "device_id": key,
    }


# --- the protocol's forms ---------------------------------------------------------------------


def test_query_string_get_stores_the_fix_with_speed_converted_from_knots(client, driver, device_key):
    device, key = device_key
    at = recent()
    response = client.get(
        URL, query(key, at, speed="10", bearing="90.5", accuracy="6", altitude="34", batt="87")
    )
    assert response.status_code == 200, response.content
    assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": [], "flagged": 0}
    ping = LocationPing.objects.get(driver=driver)
    assert (ping.recorded_at, ping.lat, ping.lng) == (at, 52.52, 13.405)
    assert ping.speed_mps == pytest.approx(10 * KNOT)
    assert (ping.heading_deg, ping.accuracy_m, ping.source) == (90.5, 6.0, "tracker")


def test_post_with_a_form_body_as_traccar_client_10_sends_it(client, driver, device_key):
    _, key = device_key
    body = urlencode(query(key, recent(), speed="0.0", bearing="0.0"))
    response = client.post(URL, body, content_type="application/x-www-form-urlencoded; charset=UTF-8")
    assert response.status_code == 200, response.content
    assert response.json()["accepted"] == 1
    assert LocationPing.objects.filter(driver=driver, source="tracker").count() == 1


def test_post_with_the_parameters_in_the_url_and_an_empty_body(client, driver, device_key):
    # Traccar Client 7.x for Android: POST /?id=…&lat=…&lon=… with no body.
    _, key = device_key
    response = client.post(f"{URL}?{urlencode(query(key, recent(), heading='45'))}")
    assert response.status_code == 200, response.content
    assert LocationPing.objects.get(driver=driver).heading_deg == 45.0


def test_json_form_of_traccar_client_9_keeps_speed_in_metres_per_second(client, driver, device_key):
    _, key = device_key
    at = recent()
    response = client.post(URL, json.dumps(traccar_json(key, at)), content_type="application/json")
    assert response.status_code == 200, response.content
    assert response.json()["accepted"] == 1
    ping = LocationPing.objects.get(driver=driver)
    assert (ping.recorded_at, ping.lat, ping.lng) == (at, 52.52, 13.405)
    assert (ping.speed_mps, ping.heading_deg, ping.accuracy_m) == (8.5, 158.4, 4.3)


def test_json_speed_and_heading_of_minus_one_mean_unknown(client, driver, device_key):
    _, key = device_key
    body = traccar_json(key, recent(), speed=-1, heading=-1)
    assert client.post(URL, body, content_type="application/json").status_code == 200
    ping = LocationPing.objects.get(driver=driver)
    assert (ping.speed_mps, ping.heading_deg) == (None, None)


def test_a_batched_json_location_list_is_stored_fix_by_fix(client, driver, device_key):
    _, key = device_key
    one, two = traccar_json(key, recent(60)), traccar_json(key, recent(30), latitude=52.5203)
    body = {"device_id": key, "location": [one["location"], two["location"]]}
    response = client.post(URL, body, content_type="application/json")
    assert response.json()["accepted"] == 2
    assert DriverPosition.objects.get(driver=driver).lat == 52.5203


def test_millisecond_and_iso_timestamps_are_read_as_utc(client, driver, device_key):
    _, key = device_key
    at_ms = timezone.now().replace(microsecond=250_000) - dt.timedelta(seconds=40)
    client.get(URL, query(key, at_ms, timestamp=str(int(at_ms.timestamp() * 1000))))
    at_iso = recent(20)
    naive_text = at_iso.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S")  # no offset: UTC
    client.get(URL, query(key, at_iso, timestamp=naive_text, lat="52.5201"))
    times = list(
        LocationPing.objects.filter(driver=driver)
        .order_by("recorded_at")
        .values_list("recorded_at", flat=True)
    )
    assert times == [at_ms, at_iso]


def test_location_parameter_and_missing_timestamp_mean_that_place_now(client, driver, device_key):
    _, key = device_key
    before = timezone.now()
    response = client.get(URL, {"id": key, "location": "52.52,13.405"})
    assert response.json()["accepted"] == 1
    ping = LocationPing.objects.get(driver=driver)
    assert (ping.lat, ping.lng) == (52.52, 13.405)
    assert ping.recorded_at >= before


def test_a_retry_of_the_same_fix_is_a_duplicate(client, driver, device_key):
    _, key = device_key
    params = query(key, recent(), speed="3")
    client.get(URL, params)
    response = client.post(URL, urlencode(params), content_type="application/x-www-form-urlencoded")
    assert response.json() == {"accepted": 0, "duplicates": 1, "rejected": [], "flagged": 0}
    assert LocationPing.objects.filter(driver=driver).count() == 1


def test_the_same_fix_from_another_of_the_drivers_devices_is_its_own(client, driver, dispatcher, device_key):
    _, key = device_key
    _, second_key = tracker_device_create(driver=driver, name="Old phone", by=dispatcher)
    at = recent()
    client.get(URL, query(key, at))
    assert client.get(URL, query(second_key, at)).json()["duplicates"] == 0


# --- keys --------------------------------------------------------------------------------------


@pytest.mark.parametrize("params", [{}, {"id": "not-a-key"}, {"deviceid": "x" * 500}])
def test_a_missing_or_unknown_key_is_401_and_stores_nothing(client, driver, device_key, params):
    response = client.get(URL, {**params, "lat": "52.52", "lon": "13.405"})
    assert response.status_code == 401
    assert "key" in response.json()["detail"]
    assert not LocationPing.objects.exists()


def test_a_revoked_key_is_401_and_stores_nothing(client, driver, dispatcher, device_key):
    device, key = device_key
    tracker_device_revoke(device=device, by=dispatcher)
    for response in (
        client.get(URL, query(key, recent())),
        client.post(URL, traccar_json(key, recent()), content_type="application/json"),
    ):
        assert response.status_code == 401
        assert "revoked" in response.json()["detail"]
    assert not LocationPing.objects.exists()
    assert not DriverPosition.objects.exists()


def test_a_key_only_ever_records_for_its_own_driver(client, driver, other_org, device_key):
    _, key = device_key
    rival = DriverFactory(organization=other_org)
    response = client.get(URL, query(key, recent(), driver_id=str(rival.pk), driver=str(rival.pk)))
    assert response.status_code == 200
    assert not LocationPing.objects.filter(driver=rival).exists()
    assert LocationPing.objects.get().driver == driver
    assert not DriverPosition.objects.filter(driver=rival).exists()


def test_a_deactivated_drivers_key_is_refused(client, driver, device_key):
    _, key = device_key
    driver.is_active = False
    driver.save(update_fields=["is_active"])
    assert client.get(URL, query(key, recent())).status_code == 401


def test_the_endpoint_ignores_a_logged_in_session(client, dispatcher):
    client.force_login(dispatcher)
    assert client.get(URL, {"lat": "52.52", "lon": "13.405"}).status_code == 401


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"lat": "95.0"}, "lat 95.0 is outside"),
        ({"lat": "0", "lon": "0"}, "(0, 0)"),
        ({"timestamp": "tomorrow"}, "future"),
        ({"timestamp": "1000000000"}, "7 days old"),  # 2001
    ],
)
def test_an_implausible_fix_is_rejected_with_its_reason_and_the_next_one_still_counts(
    client, driver, device_key, overrides, reason
):
    _, key = device_key
    if overrides.get("timestamp") == "tomorrow":
        overrides = {"timestamp": str(int((timezone.now() + dt.timedelta(days=1)).timestamp()))}
    response = client.get(URL, {**query(key, recent(60)), **overrides})
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 0
    assert [r["index"] for r in body["rejected"]] == [0]
    assert reason in body["rejected"][0]["reason"]
    assert client.get(URL, query(key, recent())).json()["accepted"] == 1
    assert LocationPing.objects.filter(driver=driver).count() == 1


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"path": "?id={key}&lat=abc&lon=13.4"}, "lat must be a number"),
        ({"path": "?id={key}&lat=52.5"}, "lat and lon are missing"),
        ({"path": "?id={key}&lat=52.5&lon=13.4&timestamp=yesterday"}, "timestamp"),
        ({"json": {"device_id": "{key}"}}, "location is missing"),
        ({"json": {"device_id": "{key}", "location": {"timestamp": "2026-01-01T00:00:00Z"}}}, "coords"),
        (
            {"json": {"device_id": "{key}", "location": {"coords": {"latitude": "north", "longitude": 1}}}},
            "latitude",
        ),
    ],
)
def test_unreadable_input_is_400_with_a_message_and_stores_nothing(client, device_key, kwargs, words):
    _, key = device_key
    if "path" in kwargs:
        response = client.get(URL + kwargs["path"].format(key=key))
    else:
        body = json.loads(json.dumps(kwargs["json"]).replace("{key}", key))
        response = client.post(URL, body, content_type="application/json")
    assert response.status_code == 400
    assert words in response.json()["detail"]
    assert not LocationPing.objects.exists()


def test_broken_json_with_a_known_key_in_the_url_is_400(client, device_key):
    _, key = device_key
    response = client.post(f"{URL}?id={key}", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["detail"]
    assert not LocationPing.objects.exists()


def test_the_tracker_is_rate_limited_per_key(client, device_key, dispatcher, driver, monkeypatch):
    monkeypatch.setattr(TrackerThrottle, "THROTTLE_RATES", {"tracker": "2/min"})
    _, key = device_key
    _, other_key = tracker_device_create(driver=driver, name="Second", by=dispatcher)
    statuses = [client.get(URL, query(key, recent(s))).status_code for s in (30, 20, 10)]
    assert statuses == [200, 200, 429]
    assert client.get(URL, query(other_key, recent(5))).status_code == 200


# --- effects: position, last seen, the live map ---------------------------------------------


def test_tracker_fixes_become_the_drivers_position_with_source_tracker(client, driver, device_key):
    device, key = device_key
    at = recent()
    client.get(URL, query(key, at))
    position = DriverPosition.objects.get(driver=driver)
    assert (position.recorded_at, position.source) == (at, "tracker")
    device.refresh_from_db()
    assert device.last_seen_at is not None and device.last_seen_at >= at


def test_the_dashboard_says_the_position_came_from_the_tracker_app(
    client, dispatcher_client, driver, device_key
):
    _, key = device_key
    client.get(URL, query(key, recent()))
    html = dispatcher_client.get(reverse("tracking:dashboard")).content.decode()
    assert "via tracker app" in html


# --- the dispatcher's Trackers page ------------------------------------------------------------


def _page(driver) -> str:
    return reverse("tracking:driver_trackers", args=[driver.pk])


def test_adding_a_tracker_shows_its_key_and_qr_code_once(client, dispatcher_client, driver):
    response = dispatcher_client.post(_page(driver), {"name": "Traccar on Anna's phone"})
    assert response.status_code == 200
    html = response.content.decode()
    device = TrackerDevice.objects.get(driver=driver)
    key = re.search(r'<code id="tracker-key">([^<]+)</code>', html).group(1)
    assert key.startswith(device.key_hint) and len(key) >= 32
    assert key not in device.key_hash  # only the hash is stored
    assert "<svg" in html and 'class="tracker-qr"' in html
    assert "http://testserver/api/v1/tracker/osmand/" in html
    assert " style=" not in html  # CSP: no inline styles, also not in the QR code's SVG
    # The key it showed works.
    assert client.get(URL, query(key, recent())).json()["accepted"] == 1

    again = dispatcher_client.get(_page(driver)).content.decode()
    assert key not in again and "tracker-qr" not in again
    assert "Traccar on Anna" in again and device.key_hint in again and "never" not in again


def test_adding_a_tracker_needs_a_name(dispatcher_client, driver):
    response = dispatcher_client.post(_page(driver), {"name": "  "})
    assert response.status_code == 200
    assert "This field is required" in response.content.decode()
    assert not TrackerDevice.objects.exists()


def test_revoking_a_tracker_refuses_its_key(client, dispatcher_client, driver, device_key):
    device, key = device_key
    response = dispatcher_client.post(reverse("tracking:driver_tracker_revoke", args=[device.pk]))
    assert response.status_code == 302 and response["Location"] == _page(driver)
    device.refresh_from_db()
    assert device.revoked_at is not None
    assert client.get(URL, query(key, recent())).status_code == 401
    html = dispatcher_client.get(_page(driver)).content.decode()
    assert "revoked" in html and "data-confirm=" not in html  # nothing left to revoke


def test_another_organisations_dispatcher_gets_404_and_changes_nothing(
    client, other_dispatcher, driver, device_key
):
    device, _ = device_key
    client.force_login(other_dispatcher)
    assert client.get(_page(driver)).status_code == 404
    assert client.post(_page(driver), {"name": "Mine now"}).status_code == 404
    assert client.post(reverse("tracking:driver_tracker_revoke", args=[device.pk])).status_code == 404
    device.refresh_from_db()
    assert device.revoked_at is None
    assert TrackerDevice.objects.count() == 1


def test_a_driver_gets_403(client, driver, device_key):
    device, _ = device_key
    client.force_login(driver.user)
    assert client.get(_page(driver)).status_code == 403
    assert client.post(reverse("tracking:driver_tracker_revoke", args=[device.pk])).status_code == 403


def test_an_org_admin_may_manage_trackers(client, org, driver):
    admin = MembershipFactory(organization=org, role=Membership.Role.ADMIN).user
    client.force_login(admin)
    assert client.post(_page(driver), {"name": "Admin's"}).status_code == 200
    assert TrackerDevice.objects.get(driver=driver).created_by == admin


def test_the_driver_edit_page_links_to_the_trackers_page(dispatcher_client, driver):
    html = dispatcher_client.get(reverse("dispatch:driver_edit", args=[driver.pk])).content.decode()
    assert _page(driver) in html


def test_broken_json_without_a_key_is_401(client, device_key):
    # The JSON form carries its key inside the body: unreadable JSON names no device.
    response = client.post(URL, "{not json", content_type="application/json")
    assert response.status_code == 401
