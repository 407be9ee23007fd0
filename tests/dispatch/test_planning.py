"""Planning through the app: plans as jobs, draft routes, publishing, manual changes."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ValidationError

from dispatch import planning, services
from dispatch.models import Order, Plan, Route, Stop
from tests.dispatch.conftest import DAY, at, create_and_run
from tests.factories import DepotFactory, DriverFactory, OrderFactory, ShiftFactory, VehicleFactory

# --- Creating a plan --------------------------------------------------------------------------


def test_a_plan_is_queued_as_a_job_after_commit(org, day, monkeypatch, django_capture_on_commit_callbacks):
    queued = []
    monkeypatch.setattr(planning, "async_task", lambda *args, **kwargs: queued.append(args))
    with django_capture_on_commit_callbacks(execute=True):
        plan = planning.plan_create(organization=org, by=day["by"], day=DAY, depot=day["depot"])
    assert plan.status == Plan.Status.QUEUED
    assert queued == [("dispatch.tasks.run_plan", plan.pk)]
    assert sorted(plan.options["order_ids"]) == sorted(o.pk for o in day["orders"])


def test_a_plan_needs_drivers_with_shifts(org, depot, dispatcher):
    OrderFactory(organization=org)
    with pytest.raises(ValidationError) as error:
        planning.plan_create(organization=org, by=dispatcher, day=DAY, depot=depot)
    assert "No driver has a shift" in str(error.value)
    assert not Plan.objects.exists()


def test_a_driver_without_a_vehicle_is_named(org, depot, dispatcher):
    ShiftFactory(driver__organization=org, driver__user__first_name="Walker", driver__user__last_name="Nocar")
    OrderFactory(organization=org)
    with pytest.raises(ValidationError) as error:
        planning.plan_create(organization=org, by=dispatcher, day=DAY, depot=depot)
    assert "No vehicle for: Walker Nocar" in str(error.value)


def test_a_plan_needs_open_orders(org, day):
    for order in day["orders"]:
        services.order_cancel(order=order, by=None)
    with pytest.raises(ValidationError) as error:
        planning.plan_create(organization=org, by=day["by"], day=DAY, depot=day["depot"])
    assert "no open orders" in str(error.value)


def test_another_organisations_depot_is_refused(org, other_org, day):
    with pytest.raises(ValidationError):
        planning.plan_create(
            organization=org, by=day["by"], day=DAY, depot=DepotFactory(organization=other_org)
        )


# --- Running it -------------------------------------------------------------------------------


def test_running_a_plan_writes_draft_routes_that_respect_windows_and_capacity(org, day):
    plan = create_and_run(org, day)
    assert plan.status == Plan.Status.SUCCEEDED, plan.error
    routes = list(plan.routes.prefetch_related("stops__order"))
    planned = [stop.order for route in routes for stop in route.stops.all()]
    assert sorted(o.pk for o in planned) == sorted(o.pk for o in day["orders"])
    for route in routes:
        assert route.status == Route.Status.DRAFT
        assert sum(s.order.parcels for s in route.stops.all()) <= route.vehicle.capacity
        for stop in route.stops.all():
            assert stop.order.window_start <= stop.planned_arrival <= stop.order.window_end
            assert stop.order.status == Order.Status.PLANNED
    assert plan.result["totals"]["orders"] == 10 and plan.result["unassigned"] == []


def test_the_solver_inputs_are_stored_with_the_plan(org, day):
    plan = create_and_run(org, day)
    problem = planning.problem_load(bytes(plan.problem))
    assert len(problem.jobs) == 10 and len(problem.vehicles) == 2
    assert problem.durations.shape == (len(problem.locations), len(problem.locations))


def test_an_order_without_coordinates_is_left_out_with_the_reason(org, day):
    lost = OrderFactory(organization=org, lat=None, lng=None)
    plan = create_and_run(org, day)
    assert {"order": lost.pk, "reason": "No coordinates: place it on the map first."} in plan.result[
        "unassigned"
    ]
    lost.refresh_from_db()
    assert lost.status == Order.Status.NEW


def test_a_pinned_order_rides_with_its_driver(org, day):
    pinned = day["orders"][0]
    services.order_update(order=pinned, by=None, required_driver=day["drivers"][1])
    plan = create_and_run(org, day)
    stop = Stop.objects.get(order=pinned, route__plan=plan)
    assert stop.route.driver == day["drivers"][1]


def test_an_oversized_order_is_left_out_because_of_capacity(org, day):
    big = OrderFactory(organization=org, parcels=500, lat=52.50, lng=13.42)
    plan = create_and_run(org, day)
    reasons = {u["order"]: u["reason"] for u in plan.result["unassigned"]}
    assert "500" in reasons[big.pk] and "30" in reasons[big.pk]


def test_running_a_plan_twice_writes_its_routes_once(org, day):
    plan = create_and_run(org, day)
    count = Route.objects.count()
    assert planning.plan_run(plan_id=plan.pk) is None
    assert Route.objects.count() == count


def test_a_plan_cancelled_while_solving_writes_nothing(org, day, monkeypatch):
    import dispatch.planner.solver as solver

    real = solver.solve

    def cancelling_solve(problem, **kwargs):
        Plan.objects.update(status=Plan.Status.CANCELLED)
        return real(problem, **kwargs)

    monkeypatch.setattr(solver, "solve", cancelling_solve)
    plan = create_and_run(org, day)
    assert plan.status == Plan.Status.CANCELLED
    assert not Route.objects.exists()
    assert set(Order.objects.values_list("status", flat=True)) == {"new"}


def test_a_finished_plan_never_touches_routes_edited_meanwhile(org, day):
    first = create_and_run(org, day)
    route = first.routes.first()
    stop = route.stops.order_by("sequence").last()
    planning.stop_move(stop=stop, to_route=route, position=1, by=None)
    edited = list(route.stops.order_by("sequence").values_list("order_id", flat=True))
    second = create_and_run(org, day)
    assert second.status == Plan.Status.SUCCEEDED
    assert list(route.stops.order_by("sequence").values_list("order_id", flat=True)) == edited


# --- Publishing -------------------------------------------------------------------------------


def test_publishing_assigns_the_orders_and_shows_the_routes_to_drivers(org, day, client):
    plan = create_and_run(org, day)
    routes = planning.plan_publish(plan=plan, by=day["by"])
    assert {r.status for r in Route.objects.filter(plan=plan)} == {Route.Status.PUBLISHED}
    assert set(
        Order.objects.filter(pk__in=[o.pk for o in day["orders"]]).values_list("status", flat=True)
    ) == {"assigned"}
    driver = routes[0].driver
    client.force_login(driver.user)
    body = client.get("/driver/").content.decode()
    assert routes[0].stops.first().order.recipient_name in body


def test_a_second_plan_cannot_be_published_over_published_routes(org, day):
    planning.plan_publish(plan=create_and_run(org, day), by=day["by"])
    extra = OrderFactory(organization=org, lat=52.50, lng=13.41)
    second = create_and_run(org, day)
    assert second.options["order_ids"] == [extra.pk]
    with pytest.raises(ValidationError) as error:
        planning.plan_publish(plan=second, by=day["by"])
    assert "already has a published route" in str(error.value)


# --- Manual changes ---------------------------------------------------------------------------


def test_moving_a_stop_recomputes_times_and_reports_a_broken_window(org, day):
    plan = create_and_run(org, day)
    route = plan.routes.order_by("pk").first()
    early = OrderFactory(organization=org, lat=52.4990, lng=13.4100, window_start=at(8), window_end=at(8, 30))
    other = Stop.objects.create(organization=org, route=route, order=early, sequence=99)
    planning.route_recompute(route=route)
    route = planning.stop_move(stop=other, to_route=route, position=len(route.stops.all()), by=None)[0]
    assert any("after its window" in v or "late" in v.lower() for v in route.violations), route.violations
    route = planning.stop_move(stop=other, to_route=route, position=1, by=None)[0]
    assert route.violations == []
    other.refresh_from_db()
    assert other.sequence == 1 and other.planned_arrival <= early.window_end


def test_moving_a_stop_to_another_route(org, day):
    plan = create_and_run(org, day)
    a, b = plan.routes.order_by("pk")[:2] if plan.routes.count() > 1 else (plan.routes.first(), None)
    if b is None:
        b = services.route_create(
            organization=org, driver=day["drivers"][1], depot=day["depot"], date=DAY, plan=plan
        )
    stop = a.stops.first()
    planning.stop_move(stop=stop, to_route=b, position=1, by=None)
    stop.refresh_from_db()
    assert stop.route == b and stop.sequence == 1
    assert list(a.stops.order_by("sequence").values_list("sequence", flat=True)) == list(
        range(1, a.stops.count() + 1)
    )


def test_a_change_from_a_stale_page_is_refused(org, day):
    plan = create_and_run(org, day)
    route = plan.routes.first()
    stop = route.stops.order_by("sequence").last()
    planning.stop_move(stop=stop, to_route=route, position=1, by=None, expected_version=route.version)
    with pytest.raises(services.StaleEdit):
        planning.stop_move(stop=stop, to_route=route, position=2, by=None, expected_version=route.version)


def test_removing_a_stop_returns_its_order_to_the_pool(org, day):
    plan = create_and_run(org, day)
    route = plan.routes.first()
    stop = route.stops.first()
    order = stop.order
    planning.stop_remove(stop=stop, by=None)
    order.refresh_from_db()
    assert order.status == Order.Status.NEW and not order.stops.exists()


def test_a_visited_stop_cannot_be_moved(org, day):
    plan = create_and_run(org, day)
    route = plan.routes.first()
    planning.plan_publish(plan=plan, by=None)
    services.route_transition(route=route, to=Route.Status.IN_PROGRESS, by=None)
    stop = route.stops.order_by("sequence").first()
    services.stop_transition(stop=stop, to=Stop.Status.ARRIVED, by=None)
    with pytest.raises(services.IllegalTransition):
        planning.stop_move(stop=stop, to_route=route, position=3, by=None)


def test_swapping_drivers_gives_each_driver_the_others_stops(org, day):
    plan = create_and_run(org, day)
    routes = list(plan.routes.order_by("pk"))
    if len(routes) < 2:
        spare = next(d for d in day["drivers"] if d != routes[0].driver)
        routes.append(
            services.route_create(organization=org, driver=spare, depot=day["depot"], date=DAY, plan=plan)
        )
    a, b = routes[:2]
    stops_a, stops_b = set(a.stops.values_list("pk", flat=True)), set(b.stops.values_list("pk", flat=True))
    drivers = (a.driver, b.driver)
    planning.route_swap_drivers(route=a, other=b, by=None)
    assert set(a.stops.values_list("pk", flat=True)) == stops_b
    assert set(b.stops.values_list("pk", flat=True)) == stops_a
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.driver, b.driver) == drivers  # each driver keeps one route and their vehicle
    assert planning.route_set_locked(route=a, locked=True, by=None).locked


def test_a_day_when_the_clocks_go_forward_is_planned_in_real_time(org, dispatcher):
    # 28 March 2027 in Berlin has 23 hours; windows after 03:00 must still hold to the minute.
    spring = dt.date(2027, 3, 28)
    depot = DepotFactory(organization=org, lat=52.5017, lng=13.4058)
    driver = DriverFactory(organization=org, default_vehicle=VehicleFactory(organization=org, capacity=30))
    berlin = ZoneInfo("Europe/Berlin")

    def local(hour):
        return dt.datetime.combine(spring, dt.time(hour), tzinfo=berlin)

    ShiftFactory(driver=driver, date=spring, starts_at=local(1), ends_at=local(12))
    orders = [
        OrderFactory(
            organization=org,
            service_date=spring,
            lat=lat,
            lng=lng,
            window_start=local(4 + n),
            window_end=local(5 + n),
        )
        for n, (lat, lng) in enumerate([(52.499, 13.418), (52.503, 13.411), (52.495, 13.423)])
    ]
    plan = planning.plan_create(
        organization=org, by=dispatcher, day=spring, depot=depot, time_budget_seconds=1
    )
    planning.plan_run(plan_id=plan.pk)
    plan.refresh_from_db()
    assert plan.status == Plan.Status.SUCCEEDED and plan.result["unassigned"] == []
    for order in orders:
        stop = Stop.objects.get(order=order)
        assert order.window_start <= stop.planned_arrival <= order.window_end


def test_a_failed_order_is_planned_again(org, day):
    failed = day["orders"][0]
    Order.objects.filter(pk=failed.pk).update(status=Order.Status.FAILED)
    plan = create_and_run(org, day)
    assert plan.status == Plan.Status.SUCCEEDED, plan.error
    failed.refresh_from_db()
    assert failed.status == Order.Status.PLANNED


def test_a_planner_crash_ends_the_run_as_failed(org, day, monkeypatch):
    import dispatch.planner.solver as solver

    def broken(problem, **kwargs):
        raise RuntimeError("solver exploded")

    monkeypatch.setattr(solver, "solve", broken)
    plan = create_and_run(org, day)
    assert plan.status == Plan.Status.FAILED and "solver exploded" in plan.error
    assert not Route.objects.exists()


def test_a_stop_moved_onto_a_started_route_is_out_for_delivery(org, day):
    plan = create_and_run(org, day)
    planning.plan_publish(plan=plan, by=None)
    first = plan.routes.order_by("pk").first()
    services.route_transition(route=first, to=Route.Status.IN_PROGRESS, by=None)
    late = OrderFactory(organization=org, lat=52.50, lng=13.41)
    draft = services.route_create(
        organization=org, driver=day["drivers"][1], depot=day["depot"], date=DAY, orders=[late]
    )
    services.order_follow_route(order=late, route=draft, by=None)
    stop = draft.stops.get()
    planning.stop_move(stop=stop, to_route=first, position=99, by=None)
    late.refresh_from_db()
    assert late.status == Order.Status.OUT_FOR_DELIVERY


def test_moving_up_works_after_a_stop_was_removed_from_a_published_route(org, day):
    plan = create_and_run(org, day)
    planning.plan_publish(plan=plan, by=None)
    route = max(plan.routes.all(), key=lambda r: r.stops.count())
    stops = list(route.stops.order_by("sequence"))
    planning.stop_remove(stop=stops[-1], by=None)  # published: kept as skipped, at the end
    second = Stop.objects.get(pk=stops[1].pk)
    planning.stop_move(stop=second, to_route=route, position=second.sequence - 1, by=None)
    second.refresh_from_db()
    assert second.sequence == 1


def test_a_driver_cannot_have_two_live_routes_on_one_day(org, day):
    from django.db import IntegrityError, transaction

    from tests.factories import RouteFactory

    driver = day["drivers"][0]
    RouteFactory(organization=org, driver=driver, depot=day["depot"], status=Route.Status.PUBLISHED)
    with pytest.raises(IntegrityError), transaction.atomic():
        RouteFactory(organization=org, driver=driver, depot=day["depot"], status=Route.Status.PUBLISHED)
    RouteFactory(organization=org, driver=driver, depot=day["depot"], status=Route.Status.DRAFT)
