import datetime as dt

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from dispatch.models import Order
from tests.factories import DepotFactory, OrderFactory


@pytest.fixture
def api(dispatcher):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=dispatcher).key}")
    return client


def payload(**overrides):
    data = {
        "external_ref": "API-1",
        "recipient_name": "Margaret Hamilton",
        "address": "Skalitzer Straße 80, 10997 Berlin",
        "lat": 52.4995,
        "lng": 13.4310,
        "service_date": "2026-11-24",
        "window_start": "2026-11-24T14:00:00+01:00",
        "window_end": "2026-11-24T16:00:00+01:00",
        "parcels": 2,
    }
    return {**data, **overrides}


def test_creating_an_order_answers_201_with_the_order(api, org):
    response = api.post("/api/v1/orders/", payload(), format="json")
    assert response.status_code == 201
    assert response.json()["external_ref"] == "API-1" and response.json()["status"] == "new"
    assert Order.objects.get(external_ref="API-1").organization == org


def test_naive_times_are_read_in_the_organisations_zone(api):
    api.post(
        "/api/v1/orders/",
        payload(window_start="2026-11-24T14:00", window_end="2026-11-24T16:00"),
        format="json",
    )
    assert Order.objects.get().window_start == dt.datetime(2026, 11, 24, 13, tzinfo=dt.UTC)


def test_a_naive_time_skipped_by_the_clock_change_is_refused_with_the_next_valid_time(api):
    response = api.post(
        "/api/v1/orders/",
        payload(service_date="2027-03-28", window_start="2027-03-28T02:30", window_end="2027-03-28T05:00"),
        format="json",
    )
    assert response.status_code == 400
    assert "Choose 03:00 or later" in response.json()["window_start"][0]
    assert not Order.objects.exists()


def test_bad_fields_get_field_level_messages(api):
    response = api.post(
        "/api/v1/orders/",
        payload(lat=123, recipient_name="", window_end="2026-11-24T13:00:00+01:00"),
        format="json",
    )
    errors = response.json()
    assert response.status_code == 400
    assert set(errors) >= {"lat", "recipient_name"}
    assert not Order.objects.exists()


def test_window_end_before_start_is_refused(api):
    response = api.post("/api/v1/orders/", payload(window_end="2026-11-24T13:00:00+01:00"), format="json")
    assert response.status_code == 400 and "window_end" in response.json()


def test_duplicate_external_reference_is_a_400_naming_the_field(api, org):
    OrderFactory(organization=org, external_ref="API-1")
    response = api.post("/api/v1/orders/", payload(), format="json")
    assert response.status_code == 400
    assert "already exists" in str(response.json())


def test_bulk_create_is_all_or_nothing(api, org):
    depot = DepotFactory(organization=org)
    good = [payload(external_ref=f"B-{n}", depot=depot.pk) for n in range(3)]
    bad = [*good, payload(external_ref="B-9", parcels=-1)]
    response = api.post("/api/v1/orders/bulk/", bad, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"index": 3, "field": "parcels", "messages": ["Ensure this value is greater than or equal to 0."]}
    ]
    assert not Order.objects.exists()
    response = api.post("/api/v1/orders/bulk/", good, format="json")
    assert response.status_code == 201 and response.json()["created"] == 3
    assert Order.objects.filter(depot=depot).count() == 3




def test_patch_with_a_stale_version_is_a_409(api, org):
    order = OrderFactory(organization=org)
    assert (
        api.patch(f"/api/v1/orders/{order.pk}/", {"parcels": 3, "version": 1}, format="json").status_code
        == 200
    )
    response = api.patch(f"/api/v1/orders/{order.pk}/", {"parcels": 9, "version": 1}, format="json")
    assert response.status_code == 409 and "changed by someone else" in response.json()["detail"]
    order.refresh_from_db()
    assert order.parcels == 3


def test_cancel_then_cancel_again_is_a_409(api, org):
    order = OrderFactory(organization=org)
    first = api.post(f"/api/v1/orders/{order.pk}/cancel/", {"reason": "Out of stock"}, format="json")
    assert first.status_code == 200 and first.json()["status"] == "cancelled"
    second = api.post(f"/api/v1/orders/{order.pk}/cancel/", {}, format="json")
    assert second.status_code == 409 and "cannot become cancelled" in second.json()["detail"]


def test_list_filters_by_date_and_status(api, org):
    OrderFactory(organization=org, external_ref="TODAY")
    OrderFactory(organization=org, external_ref="TOMORROW", service_date=dt.date(2026, 11, 25))
    refs = [o["external_ref"] for o in api.get("/api/v1/orders/?service_date=2026-11-25").json()["results"]]
    assert refs == ["TOMORROW"]


def test_openapi_schema_documents_the_orders_endpoints(client):
    response = client.get("/api/schema/", {"format": "json"})
    paths = response.json()["paths"]
    assert {
        "/api/v1/orders/",
        "/api/v1/orders/{id}/",
        "/api/v1/orders/{id}/cancel/",
        "/api/v1/orders/bulk/",
    } <= set(paths)


def test_api_docs_page_loads_swagger_from_our_own_static_files(client):
    body = client.get("/api/docs/").content.decode()
    assert "swagger-ui" in body and "unpkg" not in body and "cdn" not in body.lower()
