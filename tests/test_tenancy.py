"""Tenancy: a dispatcher of org A never sees or touches org B's orders, by page or by API.

Another organisation's order answers 404 (the same as an id that does not exist), never 403.
"""

import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from dispatch.models import Order, StopEvent
from tests.factories import DepotFactory, DriverFactory, OrderFactory

PASSWORD = "correct-horse-battery"  # tests.factories.UserFactory's password


@pytest.fixture
def own_order(org):
    return OrderFactory(organization=org, recipient_name="Own Recipient", external_ref="OWN-1")


@pytest.fixture
def foreign_order(other_org):
    return OrderFactory(organization=other_org, recipient_name="Foreign Recipient", external_ref="FOREIGN-1")


@pytest.fixture
def api(dispatcher):
    client = APIClient()
    client.force_authenticate(dispatcher)
    return client


def _state(order: Order) -> tuple:
    fresh = Order.objects.get(pk=order.pk)
    events = StopEvent.objects.filter(order=order).count()
    return (fresh.recipient_name, fresh.status, fresh.version, fresh.updated_at, events)


def _order_payload(**extra):
    return {
        "recipient_name": "API Recipient",
        "address": "Skalitzer Straße 1, 10999 Berlin",
        "service_date": "2026-11-25",
        **extra,
    }


# --- Pages ----------------------------------------------------------------------------------


def test_order_list_page_shows_own_orders_only(dispatcher_client, own_order, foreign_order):
    html = dispatcher_client.get(reverse("dispatch:order_list")).content.decode()

    assert "Own Recipient" in html
    assert "Foreign Recipient" not in html and "FOREIGN-1" not in html


def test_order_list_page_search_does_not_reach_other_organisation(dispatcher_client, foreign_order):
    html = dispatcher_client.get(reverse("dispatch:order_list"), {"q": "FOREIGN-1"}).content.decode()

    assert "Foreign Recipient" not in html


@pytest.mark.parametrize("name", ["dispatch:order_detail", "dispatch:order_edit"])
def test_other_organisations_order_page_is_404(dispatcher_client, foreign_order, name):
    response = dispatcher_client.get(reverse(name, args=[foreign_order.pk]))

    assert response.status_code == 404
    assert "Foreign Recipient" not in response.content.decode()


def test_other_organisations_order_cannot_be_edited_by_form(dispatcher_client, foreign_order):
    before = _state(foreign_order)

    response = dispatcher_client.post(
        reverse("dispatch:order_edit", args=[foreign_order.pk]),
        {
            "kind": "delivery",
            "recipient_name": "Hijacked",
            "address": "Elsewhere 1",
            "service_date": "2026-11-24",
            "service_minutes": 5,
            "parcels": 1,
            "priority": "normal",
            "version": foreign_order.version,
        },
    )

    assert response.status_code == 404
    assert _state(foreign_order) == before


def test_other_organisations_order_cannot_be_cancelled_by_form(dispatcher_client, foreign_order):
    before = _state(foreign_order)

    response = dispatcher_client.post(
        reverse("dispatch:order_cancel", args=[foreign_order.pk]), {"reason": "rival"}
    )

    assert response.status_code == 404
    assert _state(foreign_order) == before


# --- API ------------------------------------------------------------------------------------


def test_api_order_list_contains_only_own_orders(api, org, own_order, foreign_order):
    second = OrderFactory(organization=org)

    body = api.get("/api/v1/orders/").json()

    assert body["count"] == 2
    assert {row["id"] for row in body["results"]} == {own_order.pk, second.pk}


def test_api_order_filter_by_reference_does_not_reach_other_organisation(api, foreign_order):
    body = api.get("/api/v1/orders/", {"external_ref": "FOREIGN-1"}).json()

    assert body["count"] == 0 and body["results"] == []


def test_api_reads_own_order(api, own_order):
    response = api.get(f"/api/v1/orders/{own_order.pk}/")

    assert (response.status_code, response.json()["recipient_name"]) == (200, "Own Recipient")


def test_api_other_organisations_order_is_404(api, foreign_order):
    response = api.get(f"/api/v1/orders/{foreign_order.pk}/")

    assert response.status_code == 404
    assert "Foreign" not in response.content.decode()


def test_api_other_organisations_order_is_same_404_as_unknown_id(api, foreign_order):
    foreign = api.get(f"/api/v1/orders/{foreign_order.pk}/")
    unknown = api.get(f"/api/v1/orders/{foreign_order.pk + 1000}/")

    assert (foreign.status_code, foreign.json()) == (unknown.status_code, unknown.json())


def test_api_patch_of_other_organisations_order_is_404_and_changes_nothing(api, foreign_order):
    before = _state(foreign_order)

    response = api.patch(f"/api/v1/orders/{foreign_order.pk}/", {"recipient_name": "Hijacked"}, format="json")

    assert response.status_code == 404
    assert _state(foreign_order) == before


def test_api_cancel_of_other_organisations_order_is_404_and_changes_nothing(api, foreign_order):
    before = _state(foreign_order)

    response = api.post(f"/api/v1/orders/{foreign_order.pk}/cancel/", {"reason": "x"}, format="json")

    assert response.status_code == 404
    assert _state(foreign_order) == before


def test_api_patch_of_own_order_changes_it(api, own_order):
    # Control for the 404s above: the same request on one's own order works.
    response = api.patch(f"/api/v1/orders/{own_order.pk}/", {"recipient_name": "Renamed"}, format="json")

    assert response.status_code == 200
    assert Order.objects.get(pk=own_order.pk).recipient_name == "Renamed"


def test_api_create_with_other_organisations_depot_is_400_and_creates_nothing(api, other_org):
    foreign_depot = DepotFactory(organization=other_org)

    response = api.post("/api/v1/orders/", _order_payload(depot=foreign_depot.pk), format="json")

    assert response.status_code == 400
    assert str(foreign_depot.pk) in str(response.json()["depot"])
    assert not Order.objects.exists()


def test_api_create_with_other_organisations_driver_is_400_and_creates_nothing(api, other_org):
    foreign_driver = DriverFactory(organization=other_org)

    response = api.post("/api/v1/orders/", _order_payload(required_driver=foreign_driver.pk), format="json")

    assert response.status_code == 400
    assert "required_driver" in response.json()
    assert not Order.objects.exists()


def test_api_bulk_create_with_other_organisations_depot_creates_none(api, org, other_org):
    foreign_depot = DepotFactory(organization=other_org)
    rows = [_order_payload(), _order_payload(depot=foreign_depot.pk)]

    response = api.post("/api/v1/orders/bulk/", rows, format="json")

    assert response.status_code == 400
    assert not Order.objects.exists()


def test_api_create_with_own_depot_and_driver_is_created_in_own_organisation(api, org, depot, driver):
    response = api.post(
        "/api/v1/orders/", _order_payload(depot=depot.pk, required_driver=driver.pk), format="json"
    )

    assert response.status_code == 201
    order = Order.objects.get(pk=response.json()["id"])
    assert (order.organization, order.depot, order.required_driver) == (org, depot, driver)


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", "/api/v1/orders/"), ("post", "/api/v1/orders/"), ("get", "/api/v1/orders/{pk}/")],
)
def test_driver_gets_403_from_orders_api(driver, own_order, method, path):
    client = APIClient()
    client.force_authenticate(driver.user)

    response = getattr(client, method)(path.format(pk=own_order.pk), _order_payload(), format="json")

    assert response.status_code == 403
    assert Order.objects.count() == 1


# --- Token authentication -----------------------------------------------------------------------


def test_token_endpoint_answers_a_token_for_valid_credentials(dispatcher):
    response = APIClient().post(
        "/api/v1/auth/token/", {"username": "disp", "password": PASSWORD}, format="json"
    )

    assert response.status_code == 200
    assert response.json() == {"token": Token.objects.get(user=dispatcher).key}


def test_token_endpoint_refuses_bad_credentials_with_400(dispatcher):
    response = APIClient().post(
        "/api/v1/auth/token/", {"username": "disp", "password": "wrong"}, format="json"
    )

    assert response.status_code == 400
    assert "token" not in response.json()
    assert not Token.objects.exists()


def test_token_authenticates_api_requests(dispatcher, own_order, foreign_order):
    token = (
        APIClient()
        .post("/api/v1/auth/token/", {"username": "disp", "password": PASSWORD}, format="json")
        .json()["token"]
    )
    client = APIClient()

    response = client.get("/api/v1/orders/", HTTP_AUTHORIZATION=f"Token {token}")

    assert response.status_code == 200
    assert [row["id"] for row in response.json()["results"]] == [own_order.pk]


def test_unknown_token_is_401(db):
    response = APIClient().get("/api/v1/orders/", HTTP_AUTHORIZATION="Token " + "0" * 40)

    assert response.status_code == 401
