"""`Idempotency-Key` on the driver's POSTs (issue 8 item 3): on top of each endpoint's own
client uuids, the same key and body replay the first answer, a different body is a 422, a key
still in flight a 409. A POST without the header pays no extra query."""

import datetime as dt
import uuid

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from dispatch.models import IdempotencyRecord, Order, Route, StopEvent
from pod.models import ProofOfDelivery, ProofPhoto
from tests.factories import RouteFactory, StopFactory
from tests.pod.test_proof import jpeg, media_files, upload
from tracking.models import DriverAction, LocationPing

NOW = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)  # 11:00 in Berlin on the factories' day
AT = "2026-11-24T10:55:00+01:00"

pytestmark = [pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _frozen_now(time_machine):
    time_machine.move_to(NOW, tick=False)


@pytest.fixture
def route(org, driver):
    route = RouteFactory(organization=org, driver=driver, status=Route.Status.PUBLISHED)
    for sequence in (1, 2):
        StopFactory(route=route, sequence=sequence, order__status=Order.Status.ASSIGNED)
    return route


@pytest.fixture
def api(driver):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=driver.user).key}")
    return client


def locations(route):
    fix = {"uuid": str(uuid.uuid4()), "recorded_at": AT, "lat": 52.5, "lng": 13.4, "accuracy": 5}
    return "/api/v1/driver/locations/", {"fixes": [fix]}, "json"


def stop_event(route):
    stop = route.stops.get(sequence=1)
    body = {"uuid": str(uuid.uuid4()), "kind": "arrived", "at": AT}
    return f"/api/v1/driver/stops/{stop.pk}/events/", body, "json"


def route_event(route):
    return (
        f"/api/v1/driver/routes/{route.pk}/events/",
        {"uuid": str(uuid.uuid4()), "kind": "start", "at": AT},
        "json",
    )


def proof(route):
    stop = route.stops.get(sequence=2)
    body = {"uuid": str(uuid.uuid4()), "kind": "failed", "reason": "not_home", "at": AT}
    return (
        f"/api/v1/driver/stops/{stop.pk}/pod/",
        {**body, "photos": [upload("door.jpg", jpeg())]},
        "multipart",
    )


def written() -> tuple[int, ...]:
    return (
        LocationPing.objects.count(),
        DriverAction.objects.count(),
        StopEvent.objects.count(),
        ProofOfDelivery.objects.count(),
        ProofPhoto.objects.count(),
    )


def rewind(body: dict) -> dict:
    """The same body again (an upload is read once per request)."""
    return {
        k: [upload(f.name, (f.seek(0), f.read())[1]) for f in v] if k == "photos" else v
        for k, v in body.items()
    }


ENDPOINTS = [locations, stop_event, route_event, proof]
# What each POST costs without the header, as before the header existed (a header-less POST
# must not pay for it: the ingest is the hot path). Locations: the token with the membership, its
# organisation and the driver, the batch's one read, the insert, the driver's first position
# (update, insert, update) and the ETA debounce's claim.
QUERIES_WITHOUT_KEY = {locations: 7, stop_event: 39, route_event: 27, proof: 51}


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.__name__)
def test_the_same_key_and_body_replays_the_first_answer_and_writes_nothing_more(api, route, endpoint):
    url, body, fmt = endpoint(route)
    first = api.post(url, body, format=fmt, HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == 200, first.content
    after_first = written()
    again = api.post(url, rewind(body), format=fmt, HTTP_IDEMPOTENCY_KEY="k-1")
    assert (again.status_code, again.json(), again["Idempotent-Replayed"]) == (200, first.json(), "true")
    assert written() == after_first
    record = IdempotencyRecord.objects.get(key="k-1")
    assert (record.principal, record.status_code) == (f"user:{route.driver.user_id}", 200)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.__name__)
def test_the_same_key_with_another_body_is_a_422_and_changes_nothing(api, route, endpoint):
    url, body, fmt = endpoint(route)
    assert api.post(url, body, format=fmt, HTTP_IDEMPOTENCY_KEY="k-1").status_code == 200
    after_first = written()
    changed = {**rewind(body), "uuid": str(uuid.uuid4())} if "uuid" in body else endpoint(route)[1]
    response = api.post(url, changed, format=fmt, HTTP_IDEMPOTENCY_KEY="k-1")
    assert response.status_code == 422, response.content
    assert "different request" in response.json()["detail"]
    assert written() == after_first


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.__name__)
def test_a_key_still_in_flight_is_a_409_and_changes_nothing(api, route, endpoint, driver):
    url, body, fmt = endpoint(route)
    first = api.post(url, body, format=fmt, HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == 200
    # As a request killed mid-handler leaves it: reserved, never answered.
    IdempotencyRecord.objects.filter(key="k-1").update(
        status_code=None, response_body=None, completed_at=None
    )
    before = written()
    response = api.post(url, rewind(body), format=fmt, HTTP_IDEMPOTENCY_KEY="k-1")
    assert response.status_code == 409, response.content
    assert "still being handled" in response.json()["detail"]
    assert written() == before


def test_a_photo_changed_under_the_same_key_is_a_422(api, route, settings):
    url, body, fmt = proof(route)
    assert api.post(url, body, format=fmt, HTTP_IDEMPOTENCY_KEY="pod-1").status_code == 200
    files = media_files(settings)
    other = {**rewind(body), "photos": [upload("door.jpg", jpeg(colour=(10, 200, 10)))]}
    assert api.post(url, other, format=fmt, HTTP_IDEMPOTENCY_KEY="pod-1").status_code == 422
    assert (
        api.post(url, rewind(body), format=fmt, HTTP_IDEMPOTENCY_KEY="pod-1")["Idempotent-Replayed"] == "true"
    )
    assert media_files(settings) == files and len(files) == 2  # one photo and its thumbnail
    assert ProofPhoto.objects.count() == 1


def test_a_key_used_on_one_endpoint_cannot_be_reused_on_another(api, route):
    url, body, fmt = locations(route)
    assert api.post(url, body, format=fmt, HTTP_IDEMPOTENCY_KEY="k-1").status_code == 200
    url, body, fmt = stop_event(route)
    assert api.post(url, body, format=fmt, HTTP_IDEMPOTENCY_KEY="k-1").status_code == 422
    assert not StopEvent.objects.exists()


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.__name__)
def test_a_post_without_the_header_pays_no_extra_query(api, route, endpoint, django_assert_num_queries):
    url, body, fmt = endpoint(route)
    with django_assert_num_queries(QUERIES_WITHOUT_KEY[endpoint]):
        response = api.post(url, body, format=fmt)
    assert response.status_code == 200, response.content
    assert not IdempotencyRecord.objects.exists()


def test_the_schema_documents_the_header_on_the_driver_posts_and_not_on_the_tracker(client):
    schema = client.get("/api/schema/?format=json").json()
    for path in (
        "/api/v1/driver/locations/",
        "/api/v1/driver/stops/{stop_id}/events/",
        "/api/v1/driver/routes/{route_id}/events/",
        "/api/v1/driver/stops/{stop_id}/pod/",
    ):
        operation = schema["paths"][path]["post"]
        assert "Idempotency-Key" in {p["name"] for p in operation["parameters"]}, path
        assert {"409", "422"} <= operation["responses"].keys(), path
    tracker = schema["paths"]["/api/v1/tracker/osmand/"]["post"]
    assert "Idempotency-Key" not in {p["name"] for p in tracker.get("parameters", [])}
