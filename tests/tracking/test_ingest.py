"""GPS ingest (RELIABILITY ING-2 … ING-6): tracking.services.location_record_batch and
POST /api/v1/driver/locations/."""

import datetime as dt
import random
import uuid

import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from dispatch.models import Membership, Route
from tests.factories import DriverFactory, MembershipFactory, RouteFactory
from tracking.models import DriverPosition, LocationPing
from tracking.services import location_record_batch

URL = "/api/v1/driver/locations/"
NOW = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)
# ~50 m north per step: 5 s apart that is 36 km/h, a plausible van in town.
STEP_DEG = 0.00045

pytestmark = [pytest.mark.django_db]


def fix(at: dt.datetime, step: int = 0, **overrides) -> dict:
    return {
        "uuid": uuid.uuid4(),
        "recorded_at": at,
        "lat": 52.5 + step * STEP_DEG,
        "lng": 13.4,
        "accuracy": 8.0,
        **overrides,
    }


def track(start: dt.datetime, count: int, every_s: int = 5, first_step: int = 0) -> list[dict]:
    return [fix(start + dt.timedelta(seconds=i * every_s), first_step + i) for i in range(count)]


def as_json(fixes: list[dict]) -> list[dict]:
    return [
        {**f, "uuid": str(f["uuid"]), "recorded_at": f["recorded_at"].isoformat()}
        if isinstance(f, dict)
        else f
        for f in fixes
    ]


@pytest.fixture
def driver_api(driver):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=driver.user).key}")
    return client


# --- the service -----------------------------------------------------------------------------


def test_a_good_batch_stores_every_fix_and_sets_the_position(driver):
    fixes = track(NOW - dt.timedelta(minutes=1), 10)
    result = location_record_batch(driver=driver, fixes=fixes, now=NOW)
    assert result == {"accepted": 10, "duplicates": 0, "rejected": [], "flagged": 0}
    assert set(LocationPing.objects.filter(driver=driver).values_list("uuid", flat=True)) == {
        f["uuid"] for f in fixes
    }
    position = DriverPosition.objects.get(driver=driver)
    assert (position.recorded_at, position.lat) == (fixes[-1]["recorded_at"], fixes[-1]["lat"])
    assert position.organization == driver.organization


def test_replaying_a_batch_even_shuffled_stores_nothing_new(driver):
    """ING-2: a retried upload is counted as duplicates and changes nothing."""
    fixes = track(NOW - dt.timedelta(minutes=2), 20)
    location_record_batch(driver=driver, fixes=fixes, now=NOW)
    position_before = DriverPosition.objects.values().get(driver=driver)
    shuffled = random.Random(4).sample(fixes, len(fixes))
    for replay in (fixes, shuffled):
        result = location_record_batch(driver=driver, fixes=replay, now=NOW + dt.timedelta(seconds=30))
        assert (result["accepted"], result["duplicates"]) == (0, 20)
    assert LocationPing.objects.filter(driver=driver).count() == 20
    assert DriverPosition.objects.values().get(driver=driver) == position_before


def test_a_uuid_repeated_inside_one_batch_is_stored_once(driver):
    first = fix(NOW - dt.timedelta(seconds=10))
    result = location_record_batch(driver=driver, fixes=[first, dict(first)], now=NOW)
    assert (result["accepted"], result["duplicates"]) == (1, 1)
    assert LocationPing.objects.filter(driver=driver).count() == 1


def test_an_older_offline_buffer_is_stored_but_the_position_does_not_move_back(driver):
    """ING-3: live fixes first, then the buffer from before them."""
    live = track(NOW - dt.timedelta(minutes=1), 5, first_step=100)
    location_record_batch(driver=driver, fixes=live, now=NOW)
    buffer = track(NOW - dt.timedelta(minutes=30), 60)
    result = location_record_batch(driver=driver, fixes=buffer, now=NOW)
    assert (result["accepted"], result["flagged"]) == (60, 0)
    assert LocationPing.objects.filter(driver=driver).count() == 65
    assert DriverPosition.objects.get(driver=driver).recorded_at == live[-1]["recorded_at"]


def test_a_newer_fix_moves_the_position_forward(driver):
    location_record_batch(driver=driver, fixes=track(NOW - dt.timedelta(minutes=2), 3), now=NOW)
    newer = fix(NOW - dt.timedelta(seconds=20), step=3)
    location_record_batch(driver=driver, fixes=[newer], now=NOW)
    assert DriverPosition.objects.get(driver=driver).recorded_at == newer["recorded_at"]


def test_bad_fixes_are_rejected_per_item_and_the_good_ones_stored(driver):
    """ING-4: each implausible fix is listed with its index; the rest of the batch is kept."""
    start = NOW - dt.timedelta(minutes=5)
    good = track(start, 4)
    bad = {
        1: fix(start, lat=91.0),
        3: fix(start, lat=0.0, lng=0.0),
        5: fix(NOW + dt.timedelta(minutes=6)),
        7: fix(NOW - dt.timedelta(days=7, seconds=1)),
        8: fix(start, lng=-180.5),
    }
    fixes = [good[0], bad[1], good[1], bad[3], good[2], bad[5], good[3], bad[7], bad[8]]
    result = location_record_batch(driver=driver, fixes=fixes, now=NOW)
    assert [r["index"] for r in result["rejected"]] == [1, 3, 5, 7, 8]
    reasons = {r["index"]: r["reason"] for r in result["rejected"]}
    assert "lat" in reasons[1] and "(0, 0)" in reasons[3] and "lng" in reasons[8]
    assert "future" in reasons[5] and "7 days" in reasons[7]
    assert {r["uuid"] for r in result["rejected"]} == {str(f["uuid"]) for f in bad.values()}
    assert result["accepted"] == 4
    assert set(LocationPing.objects.values_list("uuid", flat=True)) == {f["uuid"] for f in good}


def test_a_low_accuracy_fix_is_stored_flagged_and_never_the_position(driver):
    fixes = track(NOW - dt.timedelta(minutes=1), 3)
    fixes[-1]["accuracy"] = 900.0
    result = location_record_batch(driver=driver, fixes=fixes, now=NOW)
    assert (result["accepted"], result["flagged"]) == (3, 1)
    assert LocationPing.objects.get(uuid=fixes[-1]["uuid"]).flag_list == ["low_accuracy"]
    assert DriverPosition.objects.get(driver=driver).recorded_at == fixes[1]["recorded_at"]


def test_the_accuracy_limit_comes_from_settings(driver, settings):
    settings.GPS_MAX_ACCURACY_M = 50
    result = location_record_batch(driver=driver, fixes=[fix(NOW, accuracy=80.0)], now=NOW)
    assert result["flagged"] == 1
    assert not DriverPosition.objects.filter(driver=driver).exists()


def test_a_speed_jump_is_stored_flagged_and_does_not_become_the_position(driver):
    fixes = track(NOW - dt.timedelta(minutes=1), 4)
    # 5 s after fix 1 but ~5.5 km away: ~4,000 km/h.
    fixes[2]["lat"] = fixes[1]["lat"] + 0.05
    result = location_record_batch(driver=driver, fixes=fixes, now=NOW)
    assert (result["accepted"], result["flagged"]) == (4, 1)
    flags = dict(LocationPing.objects.values_list("uuid", "flags"))
    assert flags[fixes[2]["uuid"]] == "speed_jump"
    # The fix after the jump is judged against the last good one, so it is good again.
    assert flags[fixes[3]["uuid"]] == ""
    assert DriverPosition.objects.get(driver=driver).lat == fixes[3]["lat"]


def test_a_speed_jump_is_judged_against_the_stored_position_across_batches(driver):
    location_record_batch(driver=driver, fixes=track(NOW - dt.timedelta(minutes=1), 2), now=NOW)
    jump = fix(NOW - dt.timedelta(seconds=50), lat=48.1, lng=11.6)  # Munich, 5 s later
    result = location_record_batch(driver=driver, fixes=[jump], now=NOW)
    assert result["flagged"] == 1
    assert DriverPosition.objects.get(driver=driver).lat == pytest.approx(52.5 + STEP_DEG)


def test_a_batch_starting_with_duplicates_is_judged_against_the_fix_before_its_new_ones(driver):
    """The previous good fix of a batch whose earliest fixes were already stored is the newest
    good fix before its first new one (here the duplicate itself), not before the batch."""
    start = NOW - dt.timedelta(minutes=1)
    a = fix(start)
    b = fix(start + dt.timedelta(seconds=5), lat=52.5 + 0.0027)  # 300 m north: 216 km/h
    location_record_batch(driver=driver, fixes=[a, b], now=NOW)
    back = fix(start + dt.timedelta(seconds=6))  # back where a was, 1 s after b: 1,080 km/h
    result = location_record_batch(driver=driver, fixes=[b, back], now=NOW)
    assert (result["accepted"], result["duplicates"], result["flagged"]) == (1, 1, 1)
    assert LocationPing.objects.get(uuid=back["uuid"]).flag_list == ["speed_jump"]


def test_query_count_does_not_grow_with_the_batch(driver, django_assert_max_num_queries):
    location_record_batch(driver=driver, fixes=track(NOW - dt.timedelta(hours=1), 1), now=NOW)
    # One read (uuids already stored, the previous good fix, the route being driven), INSERT,
    # position UPDATE, and no savepoint; SQLite's 999-parameter limit splits the 100-row INSERT
    # in two (one statement on PostgreSQL).
    with django_assert_max_num_queries(3):
        location_record_batch(driver=driver, fixes=track(NOW - dt.timedelta(minutes=50), 10), now=NOW)
    with django_assert_max_num_queries(4):
        location_record_batch(
            driver=driver, fixes=track(NOW - dt.timedelta(minutes=40), 100, first_step=20), now=NOW
        )
    assert LocationPing.objects.filter(driver=driver).count() == 111


# --- the endpoint ----------------------------------------------------------------------------


def test_posting_fixes_answers_the_counts(driver_api, driver):
    fixes = as_json(track(timezone.now() - dt.timedelta(minutes=1), 5))
    response = driver_api.post(URL, {"fixes": fixes}, format="json")
    assert response.status_code == 200
    assert response.json() == {"accepted": 5, "duplicates": 0, "rejected": [], "flagged": 0}
    replay = driver_api.post(URL, {"fixes": fixes}, format="json").json()
    assert (replay["accepted"], replay["duplicates"]) == (0, 5)
    assert DriverPosition.objects.get(driver=driver).lat == pytest.approx(fixes[-1]["lat"])


def test_a_session_logged_in_driver_can_post(client, driver):
    client.force_login(driver.user)
    fixes = as_json([fix(timezone.now())])
    response = client.post(URL, {"fixes": fixes}, content_type="application/json")
    assert response.status_code == 200 and response.json()["accepted"] == 1


def test_a_two_hour_offline_buffer_is_accepted_in_three_requests(driver_api, driver):
    """ING-3: 1,440 fixes at 5 s, after newer live fixes, in requests of at most 500."""
    now = timezone.now()
    live = as_json(track(now - dt.timedelta(seconds=30), 3, first_step=2000))
    driver_api.post(URL, {"fixes": live}, format="json")
    buffer = as_json(track(now - dt.timedelta(hours=2, minutes=1), 1440))
    accepted = 0
    for start in range(0, 1440, 500):
        response = driver_api.post(URL, {"fixes": buffer[start : start + 500]}, format="json")
        assert response.status_code == 200
        accepted += response.json()["accepted"]
    assert accepted == 1440
    assert LocationPing.objects.filter(driver=driver).count() == 1443
    assert DriverPosition.objects.get(driver=driver).lat == pytest.approx(live[-1]["lat"])


def test_malformed_items_are_rejected_per_item_with_their_index(driver_api, driver):
    now = timezone.now()
    good = as_json(track(now - dt.timedelta(minutes=1), 3))
    naive = {**good[0], "uuid": str(uuid.uuid4()), "recorded_at": "2026-11-24T09:00:00"}
    body = [
        good[0],
        {**good[1], "lat": "north"},
        "not a fix",
        naive,
        {"recorded_at": good[2]["recorded_at"], "lat": 52.5, "lng": 13.4},
        good[1],
        {**good[2], "lat": 95},
        good[2],
    ]
    response = driver_api.post(URL, {"fixes": body}, format="json")
    assert response.status_code == 200
    data = response.json()
    assert data["accepted"] == 3
    rejected = {r["index"]: r for r in data["rejected"]}
    assert sorted(rejected) == [1, 2, 3, 4, 6]
    assert rejected[1]["reason"].startswith("lat:") and rejected[1]["uuid"] == good[1]["uuid"]
    assert "offset" in rejected[3]["reason"]
    assert rejected[4]["reason"].startswith("uuid:") and rejected[4]["uuid"] is None
    assert "-90" in rejected[6]["reason"]
    assert LocationPing.objects.filter(driver=driver).count() == 3


def test_more_than_500_fixes_are_refused_naming_the_limit(driver_api, driver):
    """ING-5: 501 → 400, nothing stored."""
    fixes = as_json(track(timezone.now() - dt.timedelta(hours=1), 501))
    response = driver_api.post(URL, {"fixes": fixes}, format="json")
    assert response.status_code == 400
    assert "500" in response.json()["fixes"][0]
    assert not LocationPing.objects.exists()


def test_a_body_without_fixes_is_a_400(driver_api):
    response = driver_api.post(URL, {"positions": []}, format="json")
    assert response.status_code == 400 and "fixes" in response.json()


def test_a_batch_naming_another_driver_is_refused_and_nothing_stored(driver_api, driver, org):
    """ING-6: identity comes from the token only; a body claiming another driver is a 400."""
    other = DriverFactory(organization=org)
    fixes = [{**f, "driver_id": other.pk} for f in as_json([fix(timezone.now())])]
    response = driver_api.post(URL, {"fixes": fixes}, format="json")
    assert response.status_code == 400 and "driver" in response.json()
    assert not LocationPing.objects.exists() and not DriverPosition.objects.exists()


def test_a_batch_naming_the_driver_themself_is_accepted(driver_api, driver):
    fixes = [{**f, "driver": driver.pk} for f in as_json([fix(timezone.now())])]
    response = driver_api.post(URL, {"driver": driver.pk, "fixes": fixes}, format="json")
    assert response.status_code == 200
    assert LocationPing.objects.get().driver == driver


def test_a_dispatcher_gets_403(dispatcher):
    client = APIClient()
    client.force_authenticate(dispatcher)
    response = client.post(URL, {"fixes": as_json([fix(timezone.now())])}, format="json")
    assert response.status_code == 403
    assert not LocationPing.objects.exists()


def test_a_driver_member_without_a_driver_profile_gets_403(org):
    user = MembershipFactory(organization=org, role=Membership.Role.DRIVER).user
    client = APIClient()
    client.force_authenticate(user)
    response = client.post(URL, {"fixes": as_json([fix(timezone.now())])}, format="json")
    assert response.status_code == 403 and "driver profile" in response.json()["detail"]


def test_anonymous_and_revoked_tokens_get_401(driver):
    body = {"fixes": as_json([fix(timezone.now())])}
    assert APIClient().post(URL, body, format="json").status_code == 401
    token = Token.objects.create(user=driver.user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    token.delete()
    assert client.post(URL, body, format="json").status_code == 401
    assert not LocationPing.objects.exists()


def test_one_fix_on_the_route_costs_five_queries(
    driver_api, driver, org, time_machine, django_assert_num_queries
):
    """Issue 4 item 10: the token with the membership and the driver, one read, the insert, the
    route's travelled distance and the position (the ETA's debounce is already claimed)."""
    time_machine.move_to(NOW, tick=False)
    route = RouteFactory(
        organization=org,
        driver=driver,
        status=Route.Status.IN_PROGRESS,
        started_at=NOW - dt.timedelta(hours=1),
    )
    driver_api.post(URL, {"fixes": as_json([fix(NOW - dt.timedelta(seconds=10))])}, format="json")
    step = fix(NOW - dt.timedelta(seconds=5), step=1)  # 50 m on
    with django_assert_num_queries(5):
        response = driver_api.post(URL, {"fixes": as_json([step])}, format="json")
    assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": [], "flagged": 0}
    route.refresh_from_db()
    assert route.travelled_distance_m == 50
    assert DriverPosition.objects.get(driver=driver).recorded_at == step["recorded_at"]


def test_endpoint_query_count_does_not_grow_with_the_batch(driver_api, django_assert_max_num_queries):
    now = timezone.now()
    driver_api.post(URL, {"fixes": as_json([fix(now - dt.timedelta(hours=1))])}, format="json")
    # + one query for the token, the membership and the driver on top of the service's queries.
    with django_assert_max_num_queries(4):
        driver_api.post(URL, {"fixes": as_json(track(now - dt.timedelta(minutes=50), 10))}, format="json")
    with django_assert_max_num_queries(5):
        driver_api.post(
            URL, {"fixes": as_json(track(now - dt.timedelta(minutes=40), 100, first_step=20))}, format="json"
        )
