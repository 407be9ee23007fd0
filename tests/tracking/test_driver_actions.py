"""The driver working a route (issue #4 items 1–2, 9): tracking.services.driver_route_event /
driver_stop_event, tracking.selectors.driver_route_today and the /api/v1/driver/ endpoints."""

import datetime as dt
import uuid

import pytest
from django.core.exceptions import ValidationError
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from dispatch.models import Order, Route, Stop, StopEvent
from dispatch.services import IllegalTransition
from tests.factories import TODAY, DriverFactory, RouteFactory, StopFactory
from tracking.models import DriverAction
from tracking.selectors import driver_route_today
from tracking.services import driver_route_event, driver_stop_event

# 11:00 in Berlin on TODAY.
NOW = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)

pytestmark = [pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _frozen_now(time_machine):
    time_machine.move_to(NOW, tick=False)


@pytest.fixture
def route(org, driver):
    """A published route of three stops whose orders are assigned, as publishing leaves them."""
    route = RouteFactory(organization=org, driver=driver, status=Route.Status.PUBLISHED)
    for sequence in (1, 2, 3):
        StopFactory(route=route, sequence=sequence, order__status=Order.Status.ASSIGNED)
    return route


def stops(route: Route) -> list[Stop]:
    return list(route.stops.order_by("sequence"))


def stop_event(driver, stop, kind, at=None, **extra):
    return driver_stop_event(
        driver=driver,
        stop=stop,
        uuid=extra.pop("uuid", uuid.uuid4()),
        kind=kind,
        at=at or NOW,
        now=NOW,
        **extra,
    )


@pytest.fixture
def driver_api(driver):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=driver.user).key}")
    return client


def post_stop(client, stop, kind, **extra):
    body = {"uuid": str(uuid.uuid4()), "kind": kind, "at": "2026-11-24T10:55:00+01:00", **extra}
    return client.post(f"/api/v1/driver/stops/{stop.pk}/events/", body, format="json")


# --- reading today's route -------------------------------------------------------------------


def test_route_today_is_the_drivers_own_published_or_started_route_for_the_local_day(org, driver):
    mine = RouteFactory(organization=org, driver=driver, status=Route.Status.PUBLISHED)
    RouteFactory(organization=org, driver=driver, status=Route.Status.DRAFT, date=TODAY)
    RouteFactory(organization=org, driver=driver, status=Route.Status.PUBLISHED, date=TODAY - dt.timedelta(1))
    RouteFactory(organization=org, status=Route.Status.PUBLISHED)  # another driver's
    assert driver_route_today(driver=driver, now=NOW) == mine
    # 23:30 UTC on TODAY is already tomorrow in Berlin: nothing is published for that day.
    late = dt.datetime(2026, 11, 24, 23, 30, tzinfo=dt.UTC)
    assert driver_route_today(driver=driver, now=late) is None


def test_route_today_hides_a_draft_and_an_ended_route(org, driver):
    route = RouteFactory(organization=org, driver=driver, status=Route.Status.DRAFT)
    assert driver_route_today(driver=driver, now=NOW) is None
    Route.objects.filter(pk=route.pk).update(status=Route.Status.COMPLETED)
    assert driver_route_today(driver=driver, now=NOW) is None


def test_route_api_lists_stops_in_order_with_only_what_a_driver_needs(driver_api, route):
    Stop.objects.filter(route=route, sequence=1).update(sequence=9)  # planned order, not pk order
    body = driver_api.get("/api/v1/driver/route/").json()["route"]
    assert (body["id"], body["status"]) == (route.pk, "published")
    assert [s["sequence"] for s in body["stops"]] == [2, 3, 9]
    assert set(body["stops"][0]) == {"id", "sequence", "status", "planned_arrival", "order"}
    order = body["stops"][0]["order"]
    assert order["recipient_name"] == stops(route)[0].order.recipient_name
    assert "recipient_email" not in order and "status" not in order and "id" not in order


def test_route_api_answers_null_without_a_route(driver_api):
    assert driver_api.get("/api/v1/driver/route/").json() == {"route": None}


def test_route_api_reads_in_a_constant_number_of_queries(driver_api, route, django_assert_max_num_queries):
    for sequence in range(4, 20):
        StopFactory(route=route, sequence=sequence)
    with django_assert_max_num_queries(8):
        assert len(driver_api.get("/api/v1/driver/route/").json()["route"]["stops"]) == 19


def test_dispatcher_gets_403_from_driver_endpoints(dispatcher, route):
    client = APIClient()
    client.force_login(dispatcher)
    assert client.get("/api/v1/driver/route/").status_code == 403
    assert post_stop(client, stops(route)[0], "arrived").status_code == 403


# --- starting and ending the route -----------------------------------------------------------


def test_start_moves_the_route_and_its_orders_out_for_delivery(driver, route):
    started = NOW - dt.timedelta(minutes=7)
    result = driver_route_event(
        driver=driver, route=route, uuid=uuid.uuid4(), kind="start", at=started, now=NOW
    )
    route.refresh_from_db()
    assert (route.status, route.started_at, result.duplicate) == (Route.Status.IN_PROGRESS, started, False)
    assert {s.order.status for s in stops(route)} == {Order.Status.OUT_FOR_DELIVERY}
    assert DriverAction.objects.get().kind == DriverAction.Kind.ROUTE_START


def test_end_is_refused_while_stops_are_open_then_allowed(driver, route):
    first, second, third = stops(route)
    stop_event(driver, first, "delivered")
    with pytest.raises(IllegalTransition, match="2 stops are still open"):
        driver_route_event(driver=driver, route=route, uuid=uuid.uuid4(), kind="end", at=NOW, now=NOW)
    stop_event(driver, second, "skipped")
    stop_event(driver, third, "failed", reason="not_home")
    driver_route_event(driver=driver, route=route, uuid=uuid.uuid4(), kind="end", at=NOW, now=NOW)
    route.refresh_from_db()
    assert (route.status, route.completed_at) == (Route.Status.COMPLETED, NOW)


def test_route_end_api_answers_409_with_the_open_count(driver_api, route):
    body = {"uuid": str(uuid.uuid4()), "kind": "end", "at": "2026-11-24T11:00:00+01:00"}
    response = driver_api.post(f"/api/v1/driver/routes/{route.pk}/events/", body, format="json")
    assert response.status_code == 409
    assert "3 stops are still open" in response.json()["detail"]
    assert Route.objects.get(pk=route.pk).status == Route.Status.PUBLISHED


def test_route_start_api_is_idempotent_per_uuid(driver_api, route):
    body = {"uuid": str(uuid.uuid4()), "kind": "start", "at": "2026-11-24T10:50:00+01:00"}
    url = f"/api/v1/driver/routes/{route.pk}/events/"
    first, again = (driver_api.post(url, body, format="json") for _ in range(2))
    assert (first.status_code, first.json()["duplicate"]) == (200, False)
    assert (again.status_code, again.json()["duplicate"]) == (200, True)
    assert again.json()["route"]["status"] == "in_progress"
    assert DriverAction.objects.count() == 1


# --- stop events -----------------------------------------------------------------------------


def test_arrive_then_deliver_records_device_time_and_starts_the_route(driver, route):
    stop = stops(route)[0]
    arrived, delivered = NOW - dt.timedelta(minutes=20), NOW - dt.timedelta(minutes=15)
    stop_event(driver, stop, "arrived", at=arrived, lat=52.5, lng=13.4)
    result = stop_event(driver, stop, "delivered", at=delivered)
    stop.refresh_from_db()
    assert (stop.status, stop.arrived_at, stop.departed_at) == (Stop.Status.COMPLETED, arrived, delivered)
    assert Route.objects.get(pk=route.pk).status == Route.Status.IN_PROGRESS
    assert Order.objects.get(pk=stop.order_id).status == Order.Status.DELIVERED
    events = {e.kind: e for e in StopEvent.objects.filter(stop=stop)}
    assert (events["arrived"].at, events["arrived"].lat) == (arrived, 52.5)
    assert events["delivered"].at == delivered
    assert (result.action.recorded_at, result.action.received_at) == (delivered, NOW)


def test_delivered_straight_from_pending_passes_through_arrived(driver, route):
    stop = stops(route)[0]
    result = stop_event(driver, stop, "delivered")
    assert result.stop.status == Stop.Status.COMPLETED
    assert [e.kind for e in StopEvent.objects.filter(stop=stop).order_by("pk")][-2:] == [
        "arrived",
        "delivered",
    ]
    assert result.action.result["auto_arrived"] is True


def test_a_device_time_in_the_future_is_clamped_to_now(driver, route):
    stop = stops(route)[0]
    stop_event(driver, stop, "arrived", at=NOW + dt.timedelta(hours=2))
    stop.refresh_from_db()
    assert stop.arrived_at == NOW
    assert StopEvent.objects.get(stop=stop, kind="arrived").at == NOW


def test_failed_stores_the_reason_label(driver, route):
    stop = stops(route)[0]
    stop_event(driver, stop, "failed", reason="not_home", note="Left a card")
    stop.refresh_from_db()
    assert (stop.status, stop.failure_reason) == (Stop.Status.FAILED, "Nobody home")
    assert StopEvent.objects.get(stop=stop, kind="failed").reason == "Nobody home"


def test_failed_with_other_keeps_the_drivers_words(driver, route):
    stop = stops(route)[0]
    with pytest.raises(ValidationError):
        stop_event(driver, stop, "failed", reason="other")
    stop_event(driver, stop, "failed", reason="other", note="Gate locked")
    stop.refresh_from_db()
    assert stop.failure_reason == "Other: Gate locked"


def test_failed_with_an_unknown_reason_is_refused_and_changes_nothing(driver, route):
    stop = stops(route)[0]
    with pytest.raises(ValidationError):
        stop_event(driver, stop, "failed", reason="dog")
    assert (Stop.objects.get(pk=stop.pk).status, DriverAction.objects.count()) == (Stop.Status.PENDING, 0)


def test_skip_closes_the_stop_without_a_reason(driver, route):
    stop = stops(route)[0]
    stop_event(driver, stop, "skipped", note="Customer asked to come back")
    assert Stop.objects.get(pk=stop.pk).status == Stop.Status.SKIPPED
    assert StopEvent.objects.get(stop=stop, kind="skipped").note == "Customer asked to come back"


def test_out_of_order_completion_is_allowed_and_recorded(driver, route):
    first, second, third = stops(route)
    in_order = stop_event(driver, first, "delivered")
    late = stop_event(driver, third, "delivered")
    assert late.stop.status == Stop.Status.COMPLETED
    assert late.action.payload["out_of_planned_order"] is True
    assert late.action.payload["earlier_open_stops"] == 1
    assert "out_of_planned_order" not in in_order.action.payload


def test_the_same_uuid_twice_writes_one_event_and_says_duplicate(driver, route):
    """Offline replay: the app resends its queue after a lost answer."""
    stop, action_id = stops(route)[0], uuid.uuid4()
    first = stop_event(driver, stop, "arrived", uuid=action_id)
    again = stop_event(driver, stop, "arrived", uuid=action_id, at=NOW - dt.timedelta(minutes=1))
    assert (first.duplicate, again.duplicate) == (False, True)
    assert again.action.pk == first.action.pk
    assert StopEvent.objects.filter(stop=stop, kind="arrived").count() == 1
    assert Stop.objects.get(pk=stop.pk).arrived_at == NOW


def test_a_uuid_reused_for_another_stop_is_refused(driver, route):
    first, second, _ = stops(route)
    action_id = uuid.uuid4()
    stop_event(driver, first, "arrived", uuid=action_id)
    with pytest.raises(IllegalTransition, match="already used"):
        stop_event(driver, second, "arrived", uuid=action_id)
    assert Stop.objects.get(pk=second.pk).status == Stop.Status.PENDING


def test_a_stop_of_yesterdays_route_is_refused(org, driver):
    stop = StopFactory(
        route=RouteFactory(
            organization=org, driver=driver, status=Route.Status.PUBLISHED, date=TODAY - dt.timedelta(1)
        )
    )
    with pytest.raises(IllegalTransition, match="today's route"):
        stop_event(driver, stop, "arrived")


# --- stop events through the API -------------------------------------------------------------


def test_api_delivers_and_answers_the_updated_stop(driver_api, route):
    stop = stops(route)[0]
    response = post_stop(driver_api, stop, "delivered", lat=52.5, lng=13.4)
    assert response.status_code == 200
    body = response.json()
    assert (body["duplicate"], body["stop"]["id"], body["stop"]["status"]) == (False, stop.pk, "completed")
    event = StopEvent.objects.get(stop=stop, kind="delivered")
    assert event.at == dt.datetime(2026, 11, 24, 9, 55, tzinfo=dt.UTC)  # device time, not NOW
    assert DriverAction.objects.get().received_at == NOW


def test_api_replay_answers_duplicate_with_one_event(driver_api, route):
    stop = stops(route)[0]
    body = {"uuid": str(uuid.uuid4()), "kind": "arrived", "at": "2026-11-24T10:55:00+01:00"}
    url = f"/api/v1/driver/stops/{stop.pk}/events/"
    first, again = (driver_api.post(url, body, format="json") for _ in range(2))
    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
    assert again.json()["stop"]["status"] == "arrived"
    assert StopEvent.objects.filter(stop=stop, kind="arrived").count() == 1


def test_api_bad_reason_is_a_400_naming_the_field(driver_api, route):
    stop = stops(route)[0]
    response = post_stop(driver_api, stop, "failed", reason="dog")
    assert response.status_code == 400 and "reason" in response.json()
    missing = post_stop(driver_api, stop, "failed")
    assert missing.status_code == 400 and "reason" in missing.json()
    assert Stop.objects.get(pk=stop.pk).status == Stop.Status.PENDING


def test_api_time_without_offset_is_a_400(driver_api, route):
    response = post_stop(driver_api, stops(route)[0], "arrived", at="2026-11-24T10:55:00")
    assert response.status_code == 400 and "at" in response.json()


def test_api_delivering_a_completed_stop_again_is_a_409(driver_api, route):
    stop = stops(route)[0]
    assert post_stop(driver_api, stop, "delivered").status_code == 200
    response = post_stop(driver_api, stop, "delivered")
    assert response.status_code == 409
    assert "already completed" in response.json()["detail"]
    assert StopEvent.objects.filter(stop=stop, kind="delivered").count() == 1


def test_api_another_drivers_stop_is_a_404(driver_api, org, route):
    other = RouteFactory(
        organization=org, driver=DriverFactory(organization=org), status=Route.Status.PUBLISHED
    )
    stop = StopFactory(route=other)
    assert post_stop(driver_api, stop, "arrived").status_code == 404
    assert Stop.objects.get(pk=stop.pk).status == Stop.Status.PENDING


def test_api_a_draft_routes_stop_is_a_404(driver_api, org, driver):
    stop = StopFactory(route=RouteFactory(organization=org, driver=driver, status=Route.Status.DRAFT))
    assert post_stop(driver_api, stop, "arrived").status_code == 404
