"""Re-planning a day that has started: propose from each driver's position, apply on confirmation."""

import datetime as dt

import pytest
from django.core.exceptions import ValidationError

from dispatch import planning, services
from dispatch.models import Order, Plan, Route, Stop
from tests.dispatch.conftest import DAY, at, create_and_run
from tests.factories import DriverFactory, OrderFactory, ShiftFactory, VehicleFactory

NOON = dt.datetime(2026, 11, 24, 11, 0, tzinfo=dt.UTC)  # 12:00 in Berlin


@pytest.fixture
def started_day(org, day, time_machine):
    """The morning plan published; one route started with its first stop delivered."""
    time_machine.move_to(dt.datetime(2026, 11, 24, 6, 0, tzinfo=dt.UTC))
    plan = create_and_run(org, day)
    planning.plan_publish(plan=plan, by=None)
    route = plan.routes.order_by("pk").first()
    services.route_transition(route=route, to=Route.Status.IN_PROGRESS, by=None)
    first = route.stops.order_by("sequence").first()
    services.stop_transition(stop=first, to=Stop.Status.ARRIVED, by=None)
    services.stop_transition(stop=first, to=Stop.Status.COMPLETED, by=None)
    time_machine.move_to(NOON)
    return {**day, "plan": plan, "route": Route.objects.get(pk=route.pk), "delivered": first}


def replan(org, state, **kwargs) -> Plan:
    plan = planning.replan_create(
        organization=org, by=None, day=DAY, depot=state["depot"], time_budget_seconds=1, **kwargs
    )
    planning.plan_run(plan_id=plan.pk)
    plan.refresh_from_db()
    return plan


def snapshot():
    return sorted(Stop.objects.values_list("pk", "route_id", "sequence", "status"))


def test_a_replan_only_proposes_until_applied(org, started_day):
    before = snapshot()
    plan = replan(org, started_day)
    assert plan.status == Plan.Status.SUCCEEDED, plan.error
    assert plan.result["mode"] == "replan"
    assert snapshot() == before


def test_a_new_urgent_order_is_taken_on_and_visited_stops_stay_put(org, started_day):
    urgent = OrderFactory(
        organization=org, lat=52.4985, lng=13.4200, window_start=at(13), window_end=at(15), priority="high"
    )
    plan = replan(org, started_day)
    assert any(a["order"] == urgent.pk for a in plan.result["changes"]["added"])
    planning.replan_apply(plan=plan, by=None)
    delivered = Stop.objects.get(pk=started_day["delivered"].pk)
    assert (delivered.route_id, delivered.sequence, delivered.status) == (
        started_day["route"].pk,
        1,
        "completed",
    )
    stop = Stop.objects.get(order=urgent)
    assert stop.route.status in (Route.Status.PUBLISHED, Route.Status.IN_PROGRESS)
    urgent.refresh_from_db()
    assert urgent.status in (Order.Status.ASSIGNED, Order.Status.OUT_FOR_DELIVERY)
    # Nobody is sent back in time: every remaining stop is planned after "now".
    for pending in Stop.objects.filter(status=Stop.Status.PENDING):
        assert pending.planned_arrival >= NOON


def test_a_driver_who_drops_out_has_their_stops_shared_among_the_others(org, started_day):
    started = started_day["route"]
    other = next(d for d in started_day["drivers"] if d.pk != started.driver_id)
    gone = Route.objects.filter(driver=other, date=DAY).first()
    if gone is None:  # the morning plan used one van: give the other driver some of its stops
        gone = services.route_create(organization=org, driver=other, depot=started_day["depot"], date=DAY)
        services.route_transition(route=gone, to=Route.Status.PUBLISHED, by=None)
        for stop in list(started.stops.filter(status=Stop.Status.PENDING).order_by("-sequence"))[:3]:
            planning.stop_move(stop=stop, to_route=gone, position=1, by=None)
    leaving = set(gone.stops.filter(status=Stop.Status.PENDING).values_list("order_id", flat=True))
    assert leaving
    plan = replan(org, started_day, driver_ids=[started.driver_id])
    moved = {m["order"] for m in plan.result["changes"]["moved"]}
    dropped = {d["order"] for d in plan.result["changes"]["dropped"]}
    assert leaving <= moved | dropped and leaving & moved
    planning.replan_apply(plan=plan, by=None)
    assert not Stop.objects.filter(route=gone, status=Stop.Status.PENDING).exists()
    assert Stop.objects.filter(route=started, order_id__in=moved & leaving).count() == len(moved & leaving)


def test_a_locked_route_is_left_as_it_is(org, started_day):
    route = started_day["route"]
    planning.route_set_locked(route=route, locked=True, by=None)
    before = list(route.stops.order_by("sequence").values_list("order_id", flat=True))
    OrderFactory(organization=org, lat=52.4990, lng=13.4181, window_start=at(13), window_end=at(16))
    plan = replan(org, started_day)
    planning.replan_apply(plan=plan, by=None)
    assert list(route.stops.order_by("sequence").values_list("order_id", flat=True)) == before


def test_applying_a_proposal_after_the_routes_changed_is_refused(org, started_day):
    plan = replan(org, started_day)
    route = started_day["route"]
    planning.route_set_locked(route=route, locked=True, by=None)  # someone changed a route meanwhile
    before = snapshot()
    with pytest.raises(services.StaleEdit):
        planning.replan_apply(plan=plan, by=None)
    assert snapshot() == before


def test_a_proposal_is_applied_once(org, started_day):
    plan = replan(org, started_day)
    planning.replan_apply(plan=plan, by=None)
    with pytest.raises(ValidationError):
        planning.replan_apply(plan=Plan.objects.get(pk=plan.pk), by=None)


def test_nothing_to_replan_before_publishing(org, day):
    with pytest.raises(ValidationError) as error:
        planning.replan_create(organization=org, by=None, day=DAY, depot=day["depot"])
    assert "Nothing is published" in str(error.value)


def test_a_driver_with_a_shift_but_no_route_gets_one(org, started_day):
    van = VehicleFactory(organization=org, capacity=30)
    helper = DriverFactory(organization=org, default_vehicle=van, user__first_name="Helper")
    ShiftFactory(driver=helper, starts_at=at(12), ends_at=at(18))
    for n in range(6):
        OrderFactory(
            organization=org, lat=52.49 + n * 0.002, lng=13.43, window_start=at(14), window_end=at(15, 30)
        )
    plan = replan(org, started_day)
    planning.replan_apply(plan=plan, by=None)
    if any(r["driver"] == helper.pk and r["stops"] for r in plan.result["routes"]):
        assert Route.objects.get(driver=helper).status == Route.Status.PUBLISHED


def test_the_proposal_page_lists_the_changes_and_applies_them(dispatcher_client, org, started_day):
    urgent = OrderFactory(
        organization=org,
        recipient_name="Urgent Ulla",
        lat=52.4985,
        lng=13.42,
        window_start=at(13),
        window_end=at(15),
    )
    plan = replan(org, started_day)
    body = dispatcher_client.get(plan.get_absolute_url()).content.decode()
    assert "Proposed changes" in body and "Urgent Ulla" in body and "Apply changes" in body
    response = dispatcher_client.post(f"/plans/{plan.pk}/apply/", follow=True)
    assert "Re-plan applied" in response.content.decode()
    assert Stop.objects.filter(order=urgent).exists()


def test_the_plans_page_offers_a_replan_once_routes_are_out(dispatcher_client, org, started_day, monkeypatch):
    body = dispatcher_client.get("/plans/", {"date": "2026-11-24"}).content.decode()
    assert "Re-plan the rest of" in body
    monkeypatch.setattr(planning, "async_task", lambda *a, **k: None)
    response = dispatcher_client.post(
        "/plans/replan/",
        {
            "replan-date": "2026-11-24",
            "replan-depot": started_day["depot"].pk,
            "replan-time_budget_seconds": 2,
            "replan-drivers": [d.pk for d in started_day["drivers"]],
        },
    )
    plan = Plan.objects.filter(options__mode="replan").get()
    assert response["Location"] == plan.get_absolute_url()


def test_a_proposal_is_refused_once_a_driver_reached_one_of_its_stops(org, started_day):
    plan = replan(org, started_day)
    route = started_day["route"]
    nxt = route.stops.filter(status=Stop.Status.PENDING).order_by("sequence").first()
    services.stop_transition(stop=nxt, to=Stop.Status.ARRIVED, by=None)  # the driver got there
    before = snapshot()
    with pytest.raises(services.StaleEdit):
        planning.replan_apply(plan=plan, by=None)
    assert snapshot() == before


def test_a_new_order_cancelled_after_the_proposal_is_refused_not_a_500(dispatcher_client, org, started_day):
    urgent = OrderFactory(
        organization=org, lat=52.4985, lng=13.42, window_start=at(13), window_end=at(15), priority="high"
    )
    plan = replan(org, started_day)
    services.order_cancel(order=urgent, by=None)
    response = dispatcher_client.post(f"/plans/{plan.pk}/apply/", follow=True)
    assert response.status_code == 200 and "Run the re-plan again" in response.content.decode()
    assert not Stop.objects.filter(order=urgent).exists()
