"""Organisation API keys, Idempotency-Key, rate limits and pagination on the integration API."""

import datetime as dt
import hashlib

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from dispatch import services
from dispatch.models import ApiKey, Contact, Depot, IdempotencyRecord, Order, Plan, Shift, StopEvent
from dispatch.tasks import purge_idempotency_records
from tests.factories import (
    ContactFactory,
    DepotFactory,
    DriverFactory,
    OrderFactory,
    PlanFactory,
    RouteFactory,
    ShiftFactory,
    StopFactory,
)


def key_client(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.fixture
def key(org, org_admin):
    return services.api_key_create(organization=org, name="Shop", by=org_admin)


@pytest.fixture
def api(key):
    return key_client(key[1])


@pytest.fixture
def other_api(other_org):
    return key_client(services.api_key_create(organization=other_org, name="Rival", by=None)[1])


def order_payload(**overrides):
    return {
        "recipient_name": "Ada Lovelace",
        "address": "Oranienstraße 1, Berlin",
        "service_date": "2026-11-24",
        "parcels": 1,
        **overrides,
    }


# --- Keys: format, hashing, revocation, last use ------------------------------------------------


def test_the_database_keeps_no_usable_key(key):
    row, raw = key
    stored = ApiKey.objects.filter(pk=row.pk).values().get()
    assert raw.startswith(f"dsk_{row.prefix}_") and len(raw) > 40
    assert raw not in str(stored)
    assert stored["key_hash"] == hashlib.sha256(raw.encode()).hexdigest()
    # What the database holds does not authenticate.
    assert key_client(stored["key_hash"]).get("/api/v1/orders/").status_code == 401
    assert key_client(f"dsk_{row.prefix}_{stored['key_hash']}").get("/api/v1/orders/").status_code == 401


def test_a_key_reads_its_organisations_orders(api, org, other_org):
    OrderFactory(organization=org, external_ref="MINE")
    OrderFactory(organization=other_org, external_ref="THEIRS")
    response = api.get("/api/v1/orders/")
    assert response.status_code == 200
    assert [o["external_ref"] for o in response.json()["results"]] == ["MINE"]


def test_a_revoked_key_is_refused_at_once(api, key):
    assert api.get("/api/v1/orders/").status_code == 200
    services.api_key_revoke(api_key=key[0])
    response = api.get("/api/v1/orders/")
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_a_wrong_secret_with_a_real_prefix_is_refused(key):
    row, raw = key
    assert (
        key_client(raw[:-2] + ("aa" if raw[-2:] != "aa" else "bb")).get("/api/v1/orders/").status_code == 401
    )


def test_last_used_is_written_at_most_once_a_minute(api, key, time_machine):
    row = key[0]
    time_machine.move_to(dt.datetime(2026, 11, 24, 9, 0, tzinfo=dt.UTC), tick=False)
    api.get("/api/v1/orders/")
    row.refresh_from_db()
    assert row.last_used_at == dt.datetime(2026, 11, 24, 9, 0, tzinfo=dt.UTC)
    time_machine.move_to(dt.datetime(2026, 11, 24, 9, 0, 30, tzinfo=dt.UTC), tick=False)
    api.get("/api/v1/orders/")
    row.refresh_from_db()
    assert row.last_used_at == dt.datetime(2026, 11, 24, 9, 0, tzinfo=dt.UTC)
    time_machine.move_to(dt.datetime(2026, 11, 24, 9, 1, 5, tzinfo=dt.UTC), tick=False)
    api.get("/api/v1/orders/")
    row.refresh_from_db()
    assert row.last_used_at == dt.datetime(2026, 11, 24, 9, 1, 5, tzinfo=dt.UTC)


def test_a_request_within_the_minute_does_not_write_the_key(api, key, django_assert_num_queries):
    api.get("/api/v1/drivers/")  # first use writes last_used_at
    # The key's lookup and the (empty) list's count: no UPDATE of the key.
    with django_assert_num_queries(2):
        assert api.get("/api/v1/drivers/").status_code == 200


def test_orders_created_with_a_key_have_no_person_as_actor(api, org):
    response = api.post("/api/v1/orders/", order_payload(), format="json")
    assert response.status_code == 201, response.json()
    event = StopEvent.objects.get(order_id=response.json()["id"])
    assert event.kind == StopEvent.Kind.CREATED and event.actor is None


# --- Who reaches what ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", "/api/v1/driver/route/"),
        ("post", "/api/v1/driver/locations/"),
        ("post", "/api/v1/driver/stops/1/events/"),
        ("post", "/api/v1/driver/routes/1/events/"),
    ],
)
def test_keys_never_reach_driver_endpoints(api, method, url):
    response = getattr(api, method)(url, {}, format="json")
    assert response.status_code == 403


def test_a_key_does_not_open_the_portal(api):
    response = api.get(reverse("dispatch:order_list"))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


INTEGRATION_LISTS = [
    "/api/v1/orders/", "/api/v1/routes/", "/api/v1/plans/", "/api/v1/drivers/", "/api/v1/shifts/",
    "/api/v1/depots/", "/api/v1/contacts/",
]  # fmt: skip


@pytest.mark.parametrize("url", INTEGRATION_LISTS)
def test_drivers_tokens_cannot_reach_integration_endpoints(driver, url):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=driver.user).key}")
    assert client.get(url).status_code == 403
    assert client.post(url, {}, format="json").status_code in (403, 405)


# --- Tenancy: another organisation's key gets 404 and changes nothing, on every endpoint ----------


@pytest.fixture
def world_a(org):
    depot = DepotFactory(organization=org)
    driver = DriverFactory(organization=org, depot=depot)
    route = RouteFactory(organization=org, depot=depot, driver=driver)
    order = OrderFactory(organization=org, depot=depot)
    StopFactory(route=route, order=OrderFactory(organization=org, depot=depot), sequence=1)
    return {
        "order": order,
        "route": route,
        "plan": PlanFactory(organization=org, depot=depot),
        "driver": driver,
        "shift": ShiftFactory(driver=driver),
        "depot": depot,
        "contact": ContactFactory(organization=org),
    }


READS = [
    ("orders/{order}/", "order"), ("orders/{order}/events/", "order"), ("orders/{order}/tracking/", "order"),
    ("routes/{route}/", "route"), ("plans/{plan}/", "plan"), ("drivers/{driver}/", "driver"),
    ("shifts/{shift}/", "shift"), ("depots/{depot}/", "depot"), ("contacts/{contact}/", "contact"),
]  # fmt: skip
WRITES = [
    ("patch", "orders/{order}/", {"recipient_name": "Hijacked"}),
    ("post", "orders/{order}/cancel/", {"reason": "rival"}),
    ("post", "plans/{plan}/publish/", {}),
    ("patch", "shifts/{shift}/", {"break_minutes": 30}),
    ("delete", "shifts/{shift}/", None),
    ("patch", "depots/{depot}/", {"name": "Hijacked"}),
    ("patch", "contacts/{contact}/", {"name": "Hijacked"}),
]


def _url(template: str, world: dict) -> str:
    return "/api/v1/" + template.format(**{name: row.pk for name, row in world.items()})


def _state():
    return [
        list(model.objects.order_by("pk").values())
        for model in (Order, StopEvent, Plan, Shift, Depot, Contact)
    ]


@pytest.mark.parametrize(("template", "name"), READS)
def test_another_organisations_key_reads_nothing(other_api, api, world_a, template, name):
    url = _url(template, world_a)
    assert other_api.get(url).status_code == 404
    assert api.get(url).status_code == 200  # the owner's key does reach it


@pytest.mark.parametrize(("method", "template", "data"), WRITES)
def test_another_organisations_key_changes_nothing(other_api, world_a, method, template, data):
    before = _state()
    response = getattr(other_api, method)(_url(template, world_a), data, format="json")
    assert response.status_code == 404
    assert _state() == before


@pytest.mark.parametrize("url", INTEGRATION_LISTS)
def test_another_organisations_key_lists_none_of_its_rows(other_api, world_a, url):
    response = other_api.get(url)
    assert response.status_code == 200 and response.json()["results"] == []


def test_a_key_cannot_point_an_order_at_another_organisations_depot(other_api, world_a):
    response = other_api.post("/api/v1/orders/", order_payload(depot=world_a["depot"].pk), format="json")
    assert response.status_code == 400 and "depot" in response.json()
    assert not Order.objects.filter(recipient_name="Ada Lovelace").exists()


# --- Bulk create ------------------------------------------------------------------------------------


def test_bulk_create_takes_1000_orders(api, org):
    items = [order_payload(external_ref=f"BULK-{n}") for n in range(1000)]
    response = api.post("/api/v1/orders/bulk/", items, format="json")
    assert response.status_code == 201, str(response.json())[:500]
    assert response.json()["created"] == 1000
    assert Order.objects.filter(organization=org).count() == 1000


def test_bulk_create_refuses_1001_orders_and_creates_none(api, org):
    items = [order_payload(external_ref=f"BULK-{n}") for n in range(1001)]
    response = api.post("/api/v1/orders/bulk/", items, format="json")
    assert response.status_code == 400 and "At most 1000" in response.json()["detail"]
    assert not Order.objects.exists()


def test_bulk_errors_name_each_bad_items_index_and_field(api, org):
    OrderFactory(organization=org, external_ref="TAKEN")
    items = [order_payload(external_ref=f"OK-{n}") for n in range(5)]
    items[1]["recipient_name"] = ""
    items[2]["depot"] = 999999
    items[3]["external_ref"] = "TAKEN"
    items[4]["external_ref"] = "OK-0"
    response = api.post("/api/v1/orders/bulk/", items, format="json")
    assert response.status_code == 400
    errors = {(e["index"], e["field"]) for e in response.json()["errors"]}
    assert errors == {(1, "recipient_name"), (2, "depot"), (3, "external_ref"), (4, "external_ref")}
    assert Order.objects.filter(organization=org).count() == 1


# --- Idempotency-Key --------------------------------------------------------------------------------


def test_the_same_key_and_body_replays_the_first_answer(api, org):
    first = api.post("/api/v1/orders/", order_payload(), format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = api.post("/api/v1/orders/", order_payload(), format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true" and not first.has_header("Idempotent-Replayed")
    assert Order.objects.filter(organization=org).count() == 1


def test_json_key_order_does_not_make_a_different_request(api, org):
    body = order_payload()
    api.post("/api/v1/orders/", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    reordered = dict(reversed(list(body.items())))
    again = api.post("/api/v1/orders/", reordered, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert again.status_code == 201 and again["Idempotent-Replayed"] == "true"


def test_the_same_key_with_another_body_is_a_422(api, org):
    api.post("/api/v1/orders/", order_payload(), format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    other = api.post("/api/v1/orders/", order_payload(parcels=5), format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert other.status_code == 422 and "different request" in other.json()["detail"]
    assert Order.objects.filter(organization=org).count() == 1


def test_a_repeat_while_the_first_is_in_flight_is_a_409(api, key, org):
    body = order_payload()
    api.post("/api/v1/orders/", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    record = IdempotencyRecord.objects.get()
    IdempotencyRecord.objects.filter(pk=record.pk).update(status_code=None, response_body=None)
    again = api.post("/api/v1/orders/", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert again.status_code == 409 and "still being handled" in again.json()["detail"]
    assert Order.objects.count() == 1


def test_an_abandoned_in_flight_key_runs_again_after_the_timeout(api, org, settings):
    settings.IDEMPOTENCY_IN_FLIGHT_SECONDS = 60
    record = IdempotencyRecord.objects.create(
        organization=org, principal="x", key="unused", method="POST", path="/", request_hash=""
    )
    body = order_payload()
    api.post("/api/v1/orders/", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    mine = IdempotencyRecord.objects.exclude(pk=record.pk).get()
    # As if its process died mid-request: no answer stored, its writes rolled back.
    StopEvent.objects.all().delete()
    Order.objects.filter(organization=org).delete()
    IdempotencyRecord.objects.filter(pk=mine.pk).update(
        status_code=None, created_at=timezone.now() - dt.timedelta(minutes=5)
    )
    again = api.post("/api/v1/orders/", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert again.status_code == 201 and not again.has_header("Idempotent-Replayed")
    assert Order.objects.filter(organization=org).count() == 1


def test_keys_are_per_sender(api, other_api, org, other_org):
    assert (
        api.post("/api/v1/orders/", order_payload(), format="json", HTTP_IDEMPOTENCY_KEY="k").status_code
        == 201
    )
    theirs = other_api.post("/api/v1/orders/", order_payload(), format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert theirs.status_code == 201 and not theirs.has_header("Idempotent-Replayed")
    assert Order.objects.filter(organization=other_org).count() == 1


def test_a_refused_request_is_replayed_too(api, org):
    bad = order_payload(recipient_name="")
    first = api.post("/api/v1/orders/", bad, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = api.post("/api/v1/orders/", bad, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == again.status_code == 400 and again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"


def test_a_server_error_is_not_stored_so_a_retry_runs(api, org, monkeypatch):
    real = services.order_create

    def broken(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(services, "order_create", broken)
    client = api
    client.raise_request_exception = False
    first = client.post("/api/v1/orders/", order_payload(), format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == 500
    assert not IdempotencyRecord.objects.exists()
    monkeypatch.setattr(services, "order_create", real)
    again = client.post("/api/v1/orders/", order_payload(), format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert again.status_code == 201 and Order.objects.count() == 1


def test_an_overlong_idempotency_key_is_a_400(api):
    response = api.post("/api/v1/orders/", order_payload(), format="json", HTTP_IDEMPOTENCY_KEY="x" * 256)
    assert response.status_code == 400 and "Idempotency-Key" in response.json()["detail"]
    assert not Order.objects.exists()


def test_old_idempotency_records_are_purged(api, org, settings):
    settings.IDEMPOTENCY_KEY_HOURS = 24
    api.post("/api/v1/orders/", order_payload(), format="json", HTTP_IDEMPOTENCY_KEY="old")
    api.post("/api/v1/orders/", order_payload(external_ref="2"), format="json", HTTP_IDEMPOTENCY_KEY="new")
    IdempotencyRecord.objects.filter(key="old").update(created_at=timezone.now() - dt.timedelta(hours=25))
    assert purge_idempotency_records() == 1
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new"]


# --- Rate limits and pagination -----------------------------------------------------------------------


def test_too_many_requests_from_one_key_get_429_with_retry_after(api, other_api, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "api_key": "3/min"},
    }
    assert [api.get("/api/v1/depots/").status_code for _ in range(3)] == [200, 200, 200]
    refused = api.get("/api/v1/depots/")
    assert refused.status_code == 429
    assert 0 < int(refused["Retry-After"]) <= 60
    assert other_api.get("/api/v1/depots/").status_code == 200  # another key has its own count


def test_too_many_requests_from_one_address_get_429(dispatcher, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "api_ip": "2/min"},
    }
    client = APIClient()
    client.force_authenticate(dispatcher)
    assert [client.get("/api/v1/depots/").status_code for _ in range(3)] == [200, 200, 429]
    other_address = client.get("/api/v1/depots/", REMOTE_ADDR="10.1.2.3")
    assert other_address.status_code == 200


def test_pages_are_bounded_and_stable(api, org):
    for n in range(7):
        OrderFactory(organization=org, external_ref=f"P-{n}")  # same service date: pk breaks the tie
    first = api.get("/api/v1/orders/", {"page_size": 4}).json()
    second = api.get("/api/v1/orders/", {"page_size": 4, "page": 2}).json()
    refs = [o["external_ref"] for o in first["results"] + second["results"]]
    assert first["count"] == 7 and sorted(refs) == sorted(f"P-{n}" for n in range(7))
    assert len(api.get("/api/v1/orders/", {"page_size": 10_000}).json()["results"]) == 7
    ordered = api.get("/api/v1/orders/", {"ordering": "-external_ref"}).json()["results"]
    assert [o["external_ref"] for o in ordered][:2] == ["P-6", "P-5"]


def test_page_size_is_capped_at_200(api, org):
    Order.objects.bulk_create(
        Order(organization=org, recipient_name="x", address="y", service_date=dt.date(2026, 11, 24))
        for _ in range(201)
    )
    body = api.get("/api/v1/orders/", {"page_size": 500}).json()
    assert len(body["results"]) == 200 and body["next"]


# --- The portal page ------------------------------------------------------------------------------------


def test_an_admin_creates_a_key_shown_once(client, org_admin, org):
    client.force_login(org_admin)
    response = client.post(reverse("dispatch:api_key_list"), {"name": "Shopify"})
    html = response.content.decode()
    row = ApiKey.objects.get(organization=org, name="Shopify")
    shown = html.split('<code class="secret">')[1].split("</code>")[0]
    assert shown.startswith(f"dsk_{row.prefix}_") and response["Cache-Control"] == "no-store"
    assert key_client(shown).get("/api/v1/orders/").status_code == 200
    assert shown not in client.get(reverse("dispatch:api_key_list")).content.decode()


def test_a_dispatcher_sees_keys_but_cannot_create_or_revoke(dispatcher_client, key, org):
    html = dispatcher_client.get(reverse("dispatch:api_key_list")).content.decode()
    assert "Shop" in html and "Create key" not in html
    assert dispatcher_client.post(reverse("dispatch:api_key_list"), {"name": "Mine"}).status_code == 403
    assert dispatcher_client.post(reverse("dispatch:api_key_revoke", args=[key[0].pk])).status_code == 403
    assert ApiKey.objects.filter(organization=org).count() == 1 and ApiKey.objects.get().revoked_at is None


def test_an_admin_revokes_a_key_and_it_stops_working(client, org_admin, key):
    client.force_login(org_admin)
    response = client.post(reverse("dispatch:api_key_revoke", args=[key[0].pk]))
    assert response.status_code == 302
    assert key_client(key[1]).get("/api/v1/orders/").status_code == 401


def test_another_organisations_admin_cannot_revoke_a_key(client, other_org, key):
    from dispatch.models import Membership
    from tests.factories import MembershipFactory

    rival = MembershipFactory(organization=other_org, role=Membership.Role.ADMIN).user
    client.force_login(rival)
    assert client.post(reverse("dispatch:api_key_revoke", args=[key[0].pk])).status_code == 404
    assert ApiKey.objects.get(pk=key[0].pk).revoked_at is None


def test_an_active_key_name_is_unique_per_organisation(org, key):
    with pytest.raises(Exception, match="already exists"):
        services.api_key_create(organization=org, name="shop", by=None)


# --- Schema --------------------------------------------------------------------------------------------


def test_schema_describes_api_keys_and_error_answers(client):
    schema = client.get("/api/schema/", {"format": "json"}).json()
    assert schema["components"]["securitySchemes"]["apiKeyAuth"]["scheme"] == "bearer"
    bulk = schema["paths"]["/api/v1/orders/bulk/"]["post"]
    assert {"201", "400", "401", "403", "409", "422", "429"} <= set(bulk["responses"])
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in bulk["parameters"])
    assert "404" in schema["paths"]["/api/v1/routes/{id}/"]["get"]["responses"]
    assert {"/api/v1/plans/{id}/publish/", "/api/v1/orders/{id}/tracking/", "/api/v1/shifts/{id}/"} <= set(
        schema["paths"]
    )


# --- Found by the fuzzer ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["/api/v1/routes/99999999999999999999/", "/api/v1/orders/99999999999999999999/tracking/"]
)
def test_an_id_too_long_for_the_database_is_a_json_404(api, url):
    response = api.get(url)
    assert response.status_code == 404 and response["Content-Type"] == "application/json"


def test_an_id_filter_too_large_for_the_database_is_a_400(api):
    response = api.get("/api/v1/routes/", {"driver": "99999999999999999999"})
    assert response.status_code == 400 and "driver" in response.json()


def test_a_far_off_year_is_refused(api):
    response = api.post("/api/v1/orders/", order_payload(window_start="0677-04-24T08:51:13"), format="json")
    assert response.status_code == 400 and "1970" in response.json()["window_start"][0]


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("0098-10-22T23:50:27+22:45", "1970"),
        ("2026-10-22T23:50:27+22:45", "-14:00"),
        ("2026-10-22T10:00:00+14:00", ""),
    ],
)
def test_an_updated_since_postgres_could_not_compare_is_a_400_not_a_500(api, value, words):
    # The fuzzer's find on PostgreSQL: an offset beyond ±15:59 there is an error, not a value,
    # and it ended the request (and, in a test, the whole transaction) in a 500.
    response = api.get("/api/v1/orders/", {"updated_since": value})
    if words:
        assert response.status_code == 400 and words in str(response.json()), response.json()
    else:
        assert response.status_code == 200
