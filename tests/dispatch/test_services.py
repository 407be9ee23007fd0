import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from dispatch import services
from dispatch.models import Order, Route, Stop, StopEvent
from tests.factories import (
    DepotFactory,
    DriverFactory,
    OrderFactory,
    RouteFactory,
    ShiftFactory,
    StopFactory,
    VehicleFactory,
)

BERLIN = ZoneInfo("Europe/Berlin")
DAY = dt.date(2026, 11, 24)


def at(hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(DAY, dt.time(hour, minute), tzinfo=BERLIN)


def order_fields(**overrides):
    fields = {
        "recipient_name": "Ada Lovelace",
        "address": "Oranienstraße 25, 10999 Berlin",
        "lat": 52.5016,
        "lng": 13.4190,
        "service_date": DAY,
        "window_start": at(9),
        "window_end": at(12),
    }
    return {**fields, **overrides}


# --- Integrity in the database ---------------------------------------------------------------


def test_external_reference_is_unique_within_an_organisation(org, dispatcher):
    services.order_create(organization=org, by=dispatcher, **order_fields(external_ref="SHOP-1"))
    with pytest.raises(ValidationError) as error:
        services.order_create(organization=org, by=dispatcher, **order_fields(external_ref="SHOP-1"))
    assert "already exists" in str(error.value)
    assert Order.objects.filter(external_ref="SHOP-1").count() == 1


def test_the_same_external_reference_is_allowed_in_another_organisation(org, other_org, dispatcher):
    services.order_create(organization=org, by=dispatcher, **order_fields(external_ref="SHOP-1"))
    services.order_create(organization=other_org, by=None, **order_fields(external_ref="SHOP-1"))
    assert Order.objects.filter(external_ref="SHOP-1").count() == 2


def test_orders_without_external_reference_do_not_collide(org, dispatcher):
    services.order_create(organization=org, by=dispatcher, **order_fields())
    services.order_create(organization=org, by=dispatcher, **order_fields())
    assert Order.objects.filter(organization=org, external_ref="").count() == 2


def test_database_rejects_a_duplicate_reference_even_past_validation(org):
    OrderFactory(organization=org, external_ref="DUP")
    with pytest.raises(IntegrityError), transaction.atomic():
        OrderFactory(organization=org, external_ref="DUP")


def test_window_must_end_after_it_starts(org, dispatcher):
    with pytest.raises(ValidationError) as error:
        services.order_create(
            organization=org, by=dispatcher, **order_fields(window_start=at(12), window_end=at(9))
        )
    assert "end after it starts" in str(error.value)
    assert not Order.objects.exists()


def test_database_rejects_a_window_ending_before_its_start(org):
    with pytest.raises(IntegrityError), transaction.atomic():
        OrderFactory(organization=org, window_start=at(12), window_end=at(11))


def test_database_rejects_negative_parcels_and_capacity(org):
    with pytest.raises(IntegrityError), transaction.atomic():
        OrderFactory(organization=org, parcels=-1)
    with pytest.raises(IntegrityError), transaction.atomic():
        VehicleFactory(organization=org, capacity=-5)


def test_database_rejects_half_a_coordinate(org):
    with pytest.raises(IntegrityError), transaction.atomic():
        OrderFactory(organization=org, lat=52.5, lng=None)


def test_stop_sequence_is_unique_per_route(org):
    route = RouteFactory(organization=org)
    StopFactory(route=route, sequence=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        StopFactory(route=route, sequence=1)


def test_shift_must_end_after_it_starts(org):
    driver = DriverFactory(organization=org)
    with pytest.raises(ValidationError):
        services.shift_create(driver=driver, date=DAY, starts_at=at(17), ends_at=at(8))
    assert not driver.shifts.exists()


def test_one_shift_per_driver_and_day(org):
    shift = ShiftFactory(driver__organization=org)
    with pytest.raises(ValidationError):
        services.shift_create(driver=shift.driver, date=DAY, starts_at=at(13), ends_at=at(18))


def test_unknown_timezone_is_refused(db):
    with pytest.raises(ValidationError) as error:
        services.organization_create(name="X", slug="x", timezone_name="Mars/Olympus")
    assert "IANA" in str(error.value)


def test_a_reference_to_another_organisations_depot_is_refused(org, other_org, dispatcher):
    foreign = DepotFactory(organization=other_org)
    with pytest.raises(ValidationError) as error:
        services.order_create(organization=org, by=dispatcher, **order_fields(depot=foreign))
    assert "depot" in error.value.message_dict
    assert not Order.objects.exists()


# --- Creating, editing, cancelling -------------------------------------------------------------


def test_creating_an_order_records_a_created_event(org, dispatcher):
    order = services.order_create(organization=org, by=dispatcher, **order_fields())
    assert [(e.kind, e.actor) for e in order.events.all()] == [("created", dispatcher)]


def test_an_order_without_coordinates_needs_a_location(org, dispatcher):
    order = services.order_create(organization=org, by=dispatcher, **order_fields(lat=None, lng=None))
    assert order.needs_location
    located = services.order_set_location(order=order, lat=52.5, lng=13.4, by=dispatcher)
    assert not located.needs_location
    assert [e.kind for e in located.events.all()] == ["created", "located"]


def test_editing_bumps_the_version_and_records_what_changed(org, dispatcher):
    order = services.order_create(organization=org, by=dispatcher, **order_fields())
    updated = services.order_update(
        order=order, by=dispatcher, expected_version=1, parcels=4, instructions="Ring twice"
    )
    assert (updated.version, updated.parcels) == (2, 4)
    assert updated.events.last().note == "Changed: instructions, parcels"


def test_editing_from_a_stale_copy_is_refused_and_overwrites_nothing(org, dispatcher):
    order = services.order_create(organization=org, by=dispatcher, **order_fields())
    services.order_update(order=order, by=dispatcher, expected_version=1, parcels=3)
    with pytest.raises(services.StaleEdit):
        services.order_update(order=order, by=dispatcher, expected_version=1, parcels=9)
    order.refresh_from_db()
    assert order.parcels == 3


def test_a_delivered_order_can_no_longer_be_edited(org, dispatcher):
    order = OrderFactory(organization=org, status=Order.Status.DELIVERED)
    with pytest.raises(ValidationError):
        services.order_update(order=order, by=dispatcher, parcels=2)


def test_bulk_create_saves_all_rows_or_none(org, dispatcher):
    rows = [
        order_fields(external_ref="A"),
        order_fields(external_ref="B", parcels=-2),
        order_fields(external_ref="C"),
    ]
    with pytest.raises(ValidationError) as error:
        services.orders_create_many(organization=org, by=dispatcher, rows=rows)
    assert any(message.startswith("Row 2:") for message in error.value.messages)
    assert not Order.objects.exists()
    rows[1]["parcels"] = 2
    created = services.orders_create_many(organization=org, by=dispatcher, rows=rows)
    assert sorted(o.external_ref for o in created) == ["A", "B", "C"]
    assert StopEvent.objects.filter(kind="created").count() == 3


def test_bulk_create_reports_a_reference_repeated_within_the_batch(org, dispatcher):
    rows = [order_fields(external_ref="A"), order_fields(external_ref="A")]
    with pytest.raises(ValidationError) as error:
        services.orders_create_many(organization=org, by=dispatcher, rows=rows)
    assert "Row 2" in error.value.messages[0] and "repeats row 1" in error.value.messages[0]
    assert not Order.objects.exists()


def test_cancelling_records_the_reason(org, dispatcher):
    order = OrderFactory(organization=org)
    cancelled = services.order_cancel(order=order, by=dispatcher, reason="Customer moved")
    assert (cancelled.status, cancelled.cancel_reason) == ("cancelled", "Customer moved")
    event = cancelled.events.get()
    assert (event.kind, event.from_status, event.to_status, event.reason) == (
        "cancelled",
        "new",
        "cancelled",
        "Customer moved",
    )


@pytest.mark.parametrize("status", ["delivered", "cancelled", "picked_up"])
def test_a_closed_order_cannot_be_cancelled(org, dispatcher, status):
    order = OrderFactory(organization=org, status=status)
    with pytest.raises(services.IllegalTransition) as error:
        services.order_cancel(order=order, by=dispatcher)
    assert "cannot become cancelled" in str(error.value)
    assert not StopEvent.objects.exists()


# --- Life cycles --------------------------------------------------------------------------------

LEGAL_ORDER_PATHS = [
    ("delivery", ["planned", "assigned", "out_for_delivery", "delivered"]),
    (
        "delivery",
        ["assigned", "out_for_delivery", "failed", "assigned", "out_for_delivery", "delivered"],
    ),
    ("pickup", ["assigned", "out_for_delivery", "picked_up"]),
    ("delivery", ["planned", "cancelled"]),
]


@pytest.mark.parametrize(("kind", "path"), LEGAL_ORDER_PATHS)
def test_legal_order_paths_are_followed_and_logged(org, dispatcher, kind, path):
    order = OrderFactory(organization=org, kind=kind)
    for status in path:
        order = services.order_transition(order=order, to=status, by=dispatcher)
    assert order.status == path[-1]
    assert [e.to_status for e in order.events.all()] == path


@pytest.mark.parametrize(
    ("kind", "start", "to"),
    [
        ("delivery", "new", "delivered"),
        ("delivery", "delivered", "failed"),
        ("delivery", "cancelled", "assigned"),
        ("delivery", "out_for_delivery", "picked_up"),
        ("pickup", "out_for_delivery", "delivered"),
        ("delivery", "new", "teleported"),
    ],
)
def test_illegal_order_transitions_are_refused_and_change_nothing(org, dispatcher, kind, start, to):
    order = OrderFactory(organization=org, kind=kind, status=start)
    with pytest.raises(services.IllegalTransition):
        services.order_transition(order=order, to=to, by=dispatcher)
    order.refresh_from_db()
    assert order.status == start
    assert not StopEvent.objects.exists()


def test_a_transition_from_a_stale_status_loses_the_race(org, dispatcher):
    order = OrderFactory(organization=org)
    stale = Order.objects.get(pk=order.pk)
    services.order_cancel(order=order, by=dispatcher)
    with pytest.raises(services.IllegalTransition):
        services.order_transition(order=stale, to="planned", by=dispatcher)
    assert Order.objects.get(pk=order.pk).status == "cancelled"


def test_publishing_and_starting_a_route_moves_its_orders_along(org, dispatcher):
    route = RouteFactory(organization=org)
    stop = StopFactory(route=route)
    services.route_transition(route=route, to=Route.Status.PUBLISHED, by=dispatcher)
    stop.order.refresh_from_db()
    assert stop.order.status == "assigned"
    route = services.route_transition(route=route, to=Route.Status.IN_PROGRESS, by=dispatcher, at=at(8))
    stop.order.refresh_from_db()
    assert (route.status, route.started_at, stop.order.status) == (
        "in_progress",
        at(8),
        "out_for_delivery",
    )


@pytest.mark.parametrize(
    ("start", "to"), [("draft", "in_progress"), ("draft", "completed"), ("completed", "draft")]
)
def test_illegal_route_transitions_are_refused(org, dispatcher, start, to):
    route = RouteFactory(organization=org, status=start)
    with pytest.raises(services.IllegalTransition):
        services.route_transition(route=route, to=to, by=dispatcher)
    route.refresh_from_db()
    assert route.status == start


def _stop_on_started_route(org, dispatcher, kind="delivery"):
    route = RouteFactory(organization=org)
    stop = StopFactory(route=route, order__kind=kind)
    services.route_transition(route=route, to="published", by=dispatcher, at=at(7))
    services.route_transition(route=route, to="in_progress", by=dispatcher, at=at(8))
    return stop


def test_completing_a_stop_delivers_its_order(org, dispatcher):
    stop = _stop_on_started_route(org, dispatcher)
    services.stop_transition(stop=stop, to=Stop.Status.ARRIVED, by=dispatcher, at=at(10))
    stop = services.stop_transition(stop=stop, to=Stop.Status.COMPLETED, by=dispatcher, at=at(10, 4))
    assert (stop.arrived_at, stop.departed_at, stop.order.status) == (
        at(10),
        at(10, 4),
        "delivered",
    )
    assert [e.kind for e in stop.order.events.filter(stop=stop)] == [
        "status",
        "status",
        "arrived",
        "delivered",
    ]


def test_completing_a_pickup_stop_marks_it_picked_up(org, dispatcher):
    stop = _stop_on_started_route(org, dispatcher, kind="pickup")
    services.stop_transition(stop=stop, to="arrived", by=dispatcher)
    stop = services.stop_transition(stop=stop, to="completed", by=dispatcher)
    assert stop.order.status == "picked_up"


def test_a_failed_stop_needs_a_reason_and_fails_the_order(org, dispatcher):
    stop = _stop_on_started_route(org, dispatcher)
    services.stop_transition(stop=stop, to="arrived", by=dispatcher)
    with pytest.raises(services.IllegalTransition):
        services.stop_transition(stop=stop, to="failed", by=dispatcher, reason="  ")
    stop = services.stop_transition(stop=stop, to="failed", by=dispatcher, reason="Nobody home")
    assert (stop.status, stop.failure_reason, stop.order.status) == (
        "failed",
        "Nobody home",
        "failed",
    )


def test_a_completed_stop_cannot_be_completed_again(org, dispatcher):
    stop = _stop_on_started_route(org, dispatcher)
    services.stop_transition(stop=stop, to="arrived", by=dispatcher)
    services.stop_transition(stop=stop, to="completed", by=dispatcher)
    events = StopEvent.objects.count()
    with pytest.raises(services.IllegalTransition):
        services.stop_transition(stop=stop, to="completed", by=dispatcher)
    assert StopEvent.objects.count() == events


def test_creating_a_driver_creates_their_login_and_membership(org):
    driver = services.driver_create(
        organization=org, username="kim", first_name="Kim", password="s3cret-pass!"
    )
    assert driver.user.check_password("s3cret-pass!")
    assert driver.user.membership.role == "driver"


def test_a_taken_username_leaves_nothing_behind(org):
    services.driver_create(organization=org, username="kim", first_name="Kim", password="s3cret-pass!")
    with pytest.raises(ValidationError):
        services.driver_create(organization=org, username="KIM", first_name="Other", password="s3cret-pass!")
    assert org.drivers.count() == 1
