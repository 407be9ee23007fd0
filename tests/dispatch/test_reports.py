"""Reports: every measure against figures worked out by hand on a small constructed day.

The world (see `world`): org "kk" in Europe/Berlin, 0.50 EUR/km and 25.00 EUR/driver-hour.
Anna's route on Tue 24 Nov (completed, 08:00–12:00, planned 40 km / 3 h, drove 50 km):
  s1 delivered 09:30–09:35 in a 09–12 window (on time), rated 5, complete proof
  s2 delivered 12:30–12:40 in a 09–12 window (30 min late), rated 3, incomplete proof
  s3 failed "Nobody home" 10:00–10:02, order without a window (re-attempted by Ben)
  s4 delivered 11:00–11:03, no window, no proof
  s5 skipped (not an attempt)
Ben's route on Wed 25 Nov at another depot (completed, 09:00–11:00, planned 09:00–10:30 and
20 km, drove 18 km):
  s6 delivered 10:00–10:04: the second attempt of s3's order
  s7 failed "Address not found" 08:45–08:46 in a 09–12 window (early)
  s8 delivered 10:30–10:36 in a 09–12 window (on time), rated 4, complete proof
Plus a draft route with a "completed" stop and another organisation's delivered stop: neither
may count anywhere.
"""

import csv
import datetime as dt
import io
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dispatch import reports
from dispatch.models import Order, Route, Stop
from tests.factories import (
    DepotFactory,
    DriverFactory,
    MembershipFactory,
    OrderFactory,
    RouteFactory,
    StopFactory,
)

BERLIN = ZoneInfo("Europe/Berlin")
D1, D2 = dt.date(2026, 11, 24), dt.date(2026, 11, 25)
URL = "/reports/"
PERIOD = {"start": "2026-11-24", "end": "2026-11-25"}


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=BERLIN)


def _stop(route, n, order, status, arrived=None, departed=None, reason="", **fields):
    return StopFactory(
        route=route, order=order, sequence=n, status=status, arrived_at=arrived, departed_at=departed,
        failure_reason=reason, **fields,
    )  # fmt: skip


def _order(org, day, *, window=True, status=Order.Status.DELIVERED, **fields):
    return OrderFactory(
        organization=org, service_date=day, status=status,
        window_start=at(day, 9) if window else None, window_end=at(day, 12) if window else None, **fields,
    )  # fmt: skip


@pytest.fixture
def world(org, other_org, time_machine):
    time_machine.move_to(at(D2, 20), tick=False)
    depot_a, depot_b = (
        DepotFactory(organization=org, name="North"),
        DepotFactory(organization=org, name="South"),
    )
    anna = DriverFactory(organization=org, user__first_name="Anna", user__last_name="Able")
    ben = DriverFactory(organization=org, user__first_name="Ben", user__last_name="Baker")
    C, F, K = Stop.Status.COMPLETED, Stop.Status.FAILED, Stop.Status.SKIPPED
    ra = RouteFactory(
        organization=org, depot=depot_a, driver=anna, date=D1, status=Route.Status.COMPLETED,
        started_at=at(D1, 8), completed_at=at(D1, 12), planned_distance_m=40_000, planned_duration_s=10_800,
        planned_start=at(D1, 8), planned_end=at(D1, 11), travelled_distance_m=50_000,
    )  # fmt: skip
    o3 = _order(org, D1, window=False)
    _stop(ra, 1, _order(org, D1, rating=5), C, at(D1, 9, 30), at(D1, 9, 35),
          proof_recorded_at=at(D1, 9, 34), proof_complete=True)  # fmt: skip
    _stop(ra, 2, _order(org, D1, rating=3), C, at(D1, 12, 30), at(D1, 12, 40),
          proof_recorded_at=at(D1, 12, 39), proof_complete=False)  # fmt: skip
    _stop(ra, 3, o3, F, at(D1, 10), at(D1, 10, 2), reason="Nobody home")
    _stop(ra, 4, _order(org, D1, window=False), C, at(D1, 11), at(D1, 11, 3))
    _stop(ra, 5, _order(org, D1, status=Order.Status.ASSIGNED), K)
    rb = RouteFactory(
        organization=org, depot=depot_b, driver=ben, date=D2, status=Route.Status.COMPLETED,
        started_at=at(D2, 9), completed_at=at(D2, 11), planned_distance_m=20_000, planned_duration_s=None,
        planned_start=at(D2, 9), planned_end=at(D2, 10, 30), travelled_distance_m=18_000,
    )  # fmt: skip
    _stop(rb, 1, o3, C, at(D2, 10), at(D2, 10, 4))
    _stop(rb, 2, _order(org, D2, status=Order.Status.FAILED), F, at(D2, 8, 45), at(D2, 8, 46),
          reason="Address not found")  # fmt: skip
    _stop(rb, 3, _order(org, D2, rating=4), C, at(D2, 10, 30), at(D2, 10, 36),
          proof_recorded_at=at(D2, 10, 35), proof_complete=True)  # fmt: skip
    # A draft is a proposal: its (impossible) completed stop counts nowhere.
    draft = RouteFactory(organization=org, depot=depot_a, driver=anna, date=D1, status=Route.Status.DRAFT)
    _stop(draft, 1, _order(org, D1, status=Order.Status.PLANNED), C, at(D1, 9), at(D1, 9, 1))
    _order(org, D1, status=Order.Status.CANCELLED)
    # Another tenant's busy day on the same dates.
    rival = RouteFactory(
        organization=other_org, date=D1, status=Route.Status.COMPLETED, started_at=at(D1, 8),
        completed_at=at(D1, 9), travelled_distance_m=9_000,
    )  # fmt: skip
    for n in range(3):
        _stop(rival, n + 1, _order(other_org, D1, rating=1), C, at(D1, 8, 10 + n), at(D1, 8, 20 + n),
              reason="", proof_complete=True)  # fmt: skip
    return {"org": org, "anna": anna, "ben": ben, "depot_a": depot_a, "depot_b": depot_b, "ra": ra, "rb": rb}


def filters(world, **changes) -> reports.ReportFilters:
    return reports.ReportFilters(organization=world["org"], start=D1, end=D2, **changes)


def get_csv(client, table, **params):
    response = client.get(URL, {**PERIOD, **params, "format": "csv", "table": table})
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.content.decode())))


# --- The measures, by hand ---------------------------------------------------------------------


def test_orders_by_outcome(world):
    assert reports.report_orders(filters(world)) == {
        "total": 9, "delivered": 5, "failed": 1, "open": 2, "cancelled": 1,
    }  # fmt: skip


def test_summary_measures_equal_the_hand_computed_figures(world):
    s = reports.report_summary(filters(world))
    assert (s["attempts"], s["delivered"], s["failed"]) == (7, 5, 2)
    assert (s["windowed"], s["on_time"], s["late"], s["early"], s["on_time_rate"]) == (4, 2, 1, 1, 50.0)
    assert s["late_delay_min"] == 30.0
    assert (s["first_attempts"], s["first_success"], s["first_attempt_rate"]) == (6, 4, 66.7)
    assert s["service_min"] == round(31 / 7, 1)
    assert (s["rating_avg"], s["rating_count"]) == (4.0, 3)
    assert (s["proof_complete"], s["proof_rate"]) == (2, 40.0)
    assert (s["routes"], s["completed_routes"], s["driver_hours"]) == (2, 2, 6.0)
    assert s["stops_per_hour"] == round(7 / 6, 2)
    assert (s["planned_km"], s["planned_hours"], s["travelled_km"]) == (60.0, 4.5, 68.0)
    # 60 km × 0.50 + 4.5 h × 25 = 142.50 over 8 planned stops; 68 × 0.50 + 6 × 25 = 184 over 5.
    assert (s["planned_cost"], s["planned_cost_per_stop"]) == (142.5, 17.81)
    assert (s["actual_cost"], s["actual_cost_per_delivery"]) == (184.0, 36.8)


def test_failures_by_reason(world):
    assert reports.report_failures(filters(world)) == [
        {"reason": "Address not found", "n": 1},
        {"reason": "Nobody home", "n": 1},
    ]


def test_driver_rows_hold_each_drivers_own_figures(world):
    rows = {r["name"]: r for r in reports.report_drivers(filters(world))}
    anna, ben = rows["Anna Able"], rows["Ben Baker"]
    assert (anna["attempts"], anna["delivered"], anna["failed"], anna["routes"]) == (4, 3, 1, 1)
    assert (anna["on_time_rate"], anna["first_attempt_rate"], anna["late_delay_min"]) == (50.0, 75.0, 30.0)
    assert (anna["stops_per_hour"], anna["service_min"], anna["rating_avg"]) == (1.0, 5.0, 4.0)
    assert (anna["proof_rate"], anna["planned_km"], anna["travelled_km"]) == (33.3, 40.0, 50.0)
    assert anna["actual_cost_per_delivery"] == round((25 + 100) / 3, 2)
    assert (ben["attempts"], ben["on_time_rate"], ben["first_attempt_rate"], ben["late_delay_min"]) == (
        3, 50.0, 50.0, None,
    )  # fmt: skip
    assert (ben["stops_per_hour"], ben["service_min"], ben["actual_cost_per_delivery"]) == (1.5, 3.7, 29.5)


def test_driver_table_sorts_by_a_column_both_ways(world):
    names = lambda sort: [r["name"] for r in reports.report_drivers(filters(world), sort=sort)]  # noqa: E731
    assert names("stops_per_hour") == ["Anna Able", "Ben Baker"]
    assert names("-stops_per_hour") == ["Ben Baker", "Anna Able"]
    # A driver without the figure (Ben was never late) goes last either way.
    assert names("late_delay_min") == names("-late_delay_min") == ["Anna Able", "Ben Baker"]


def test_route_rows_compare_planned_and_actual(world):
    rows = {r["pk"]: r for r in reports.report_routes(filters(world))}
    assert set(rows) == {world["ra"].pk, world["rb"].pk}
    rb = rows[world["rb"].pk]
    # No planned_duration_s: the planned start-to-end (1 h 30) stands in.
    assert (rb["planned_s"], rb["actual_s"], rb["stop_count"], rb["delivered"], rb["failed"]) == (
        5400, 7200, 3, 2, 1,
    )  # fmt: skip
    assert (round(rb["planned_cost"], 2), round(rb["actual_cost"], 2)) == (10 + 37.5, 9 + 50)
    assert rb["status_label"] == "Completed"


def test_daily_series_fills_every_day_of_the_period(world):
    days = reports.report_daily(
        reports.ReportFilters(organization=world["org"], start=D1 - dt.timedelta(1), end=D2)
    )
    assert [d["day"] for d in days] == [D1 - dt.timedelta(1), D1, D2]
    assert [(d["attempts"], d["delivered"], d["failed"]) for d in days] == [(0, 0, 0), (4, 3, 1), (3, 2, 1)]
    assert [d["on_time_rate"] for d in days] == [None, 50.0, 50.0]
    assert [d["first_attempt_rate"] for d in days] == [None, 75.0, 50.0]


def test_hours_and_weekdays_count_successful_deliveries_in_local_time(world):
    hours = {h["hour"]: h["n"] for h in reports.report_hours(filters(world)) if h["n"]}
    assert hours == {9: 1, 10: 2, 11: 1, 12: 1}
    weekdays = {w["weekday"]: w["n"] for w in reports.report_weekdays(filters(world)) if w["n"]}
    assert weekdays == {"Tue": 3, "Wed": 2}


def test_a_late_evening_delivery_falls_on_its_local_hour_and_weekday(world):
    # 23:30 in Berlin on Wednesday is 22:30 UTC: hour 23, still Wednesday.
    Stop.objects.filter(route=world["rb"], sequence=3).update(arrived_at=at(D2, 23, 30))
    hours = {h["hour"]: h["n"] for h in reports.report_hours(filters(world, driver=world["ben"])) if h["n"]}
    assert hours == {10: 1, 23: 1}
    assert reports.report_weekdays(filters(world, driver=world["ben"]))[2] == {"weekday": "Wed", "n": 2}


def test_failure_reasons_over_time(world):
    grid = reports.report_failure_days(filters(world))
    assert grid["reasons"] == ["Address not found", "Nobody home"]
    assert grid["days"] == [{"day": D1, "counts": [0, 1]}, {"day": D2, "counts": [1, 0]}]


def test_filters_by_driver_depot_and_date(world):
    ben = reports.report_summary(filters(world, driver=world["ben"]))
    assert (ben["attempts"], ben["delivered"]) == (3, 2)
    assert reports.report_orders(filters(world, driver=world["ben"]))["delivered"] == 2
    north = reports.report_summary(filters(world, depot=world["depot_a"]))
    assert (north["attempts"], north["routes"]) == (4, 1)
    # The second day alone: s6 is still a re-attempt (its first attempt was the day before).
    day2 = reports.report_summary(reports.ReportFilters(organization=world["org"], start=D2, end=D2))
    assert (day2["attempts"], day2["first_attempts"], day2["first_success"]) == (3, 2, 1)


def test_cost_of_a_set_of_routes(world):
    cost = reports.routes_cost(organization=world["org"], routes=Route.objects.filter(pk=world["rb"].pk))
    assert (cost["planned"], cost["planned_per_stop"], cost["actual"], cost["actual_per_delivery"]) == (
        47.5, round(47.5 / 3, 2), 59.0, 29.5,
    )  # fmt: skip


def test_cost_of_a_route_not_yet_completed_has_no_actual(world):
    Route.objects.filter(pk=world["rb"].pk).update(status=Route.Status.IN_PROGRESS, completed_at=None)
    cost = reports.routes_cost(organization=world["org"], routes=Route.objects.filter(pk=world["rb"].pk))
    assert (cost["planned"], cost["actual"], cost["actual_per_delivery"]) == (47.5, None, None)


# --- The page --------------------------------------------------------------------------------


def test_page_shows_the_figures(dispatcher_client, world):
    html = dispatcher_client.get(URL, PERIOD).content.decode()
    assert "on time (2 of 4 with a window)" in html
    assert "first-attempt success (4 of 6)" in html
    assert "36.80 EUR" in html and "17.81 EUR" in html
    assert "Anna Able" in html and "Nobody home" in html
    assert f'href="/routes/{world["ra"].pk}/"' in html
    assert html.count("<svg viewBox") == 5


def test_page_renders_with_no_data_at_all(dispatcher_client):
    response = dispatcher_client.get(URL)
    html = response.content.decode()
    assert response.status_code == 200
    assert "No routes in this period" in html and "orders delivered of 0" in html


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"start": "2026-02-30"}, "Enter a valid date"),
        ({"start": "2026-11-25", "end": "2026-11-24"}, "after its end"),
        ({"start": "2020-01-01", "end": "2026-11-24"}, "at most 366 days"),
        ({"driver": "abc"}, "not one of yours"),
        ({"sort": "password"}, "cannot be sorted"),
    ],
)
def test_bad_filters_get_a_message_not_a_500(dispatcher_client, world, params, message):
    response = dispatcher_client.get(URL, params)
    assert response.status_code == 400
    assert message in response.content.decode()
    csv_response = dispatcher_client.get(URL, {**params, "format": "csv", "table": "drivers"})
    assert csv_response.status_code == 400 and message in csv_response.content.decode()


def test_another_organisations_driver_cannot_be_chosen(client, world, other_org):
    rival = DriverFactory(organization=other_org)
    user = MembershipFactory(organization=world["org"], role="dispatcher").user
    client.force_login(user)
    response = client.get(URL, {**PERIOD, "driver": rival.pk})
    assert response.status_code == 400 and "not one of yours" in response.content.decode()


def test_another_organisation_sees_only_its_own_numbers(client, world, other_dispatcher):
    client.force_login(other_dispatcher)
    (row,) = get_csv(client, "summary")
    assert (row["attempts"], row["delivered"], row["rating_avg"]) == ("3", "3", "1.0")
    assert "Anna" not in client.get(URL, PERIOD).content.decode()


def test_a_driver_gets_403_for_the_page_and_its_exports(client, world):
    client.force_login(world["anna"].user)
    assert client.get(URL).status_code == 403
    assert client.get(URL, {"format": "csv", "table": "drivers"}).status_code == 403


def test_anonymous_is_sent_to_log_in(client):
    assert client.get(URL, {"format": "csv", "table": "summary"}).status_code == 302


# --- CSV exports agree with the page -----------------------------------------------------------


def test_csv_exports_hold_the_same_numbers(dispatcher_client, world):
    (summary,) = get_csv(dispatcher_client, "summary")
    assert (summary["orders"], summary["on_time_pct"], summary["actual_cost_per_delivery"]) == (
        "9",
        "50.0",
        "36.8",
    )
    drivers = get_csv(dispatcher_client, "drivers", sort="-attempts")
    assert [(d["driver"], d["attempts"], d["first_attempt_pct"]) for d in drivers] == [
        ("Anna Able", "4", "75.0"), ("Ben Baker", "3", "50.0"),
    ]  # fmt: skip
    routes = get_csv(dispatcher_client, "routes")
    assert [(r["date"], r["driver"], r["planned_km"], r["driven_km"], r["actual_min"]) for r in routes] == [
        ("2026-11-25", "Ben Baker", "20.0", "18.0", "120.0"),
        ("2026-11-24", "Anna Able", "40.0", "50.0", "240.0"),
    ]  # fmt: skip
    daily = get_csv(dispatcher_client, "daily")
    assert [(d["day"], d["attempts"], d["on_time_pct"]) for d in daily] == [
        ("2026-11-24", "4", "50.0"), ("2026-11-25", "3", "50.0"),
    ]  # fmt: skip
    assert {r["hour"]: r["delivered"] for r in get_csv(dispatcher_client, "hours")}["10"] == "2"
    assert {r["weekday"]: r["delivered"] for r in get_csv(dispatcher_client, "weekdays")}["Tue"] == "3"
    assert get_csv(dispatcher_client, "failures")[0] == {"reason": "Address not found", "failed": "1"}
    assert get_csv(dispatcher_client, "failure_days")[1] == {
        "day": "2026-11-25", "Address not found": "1", "Nobody home": "0",
    }  # fmt: skip


def test_csv_export_of_an_unknown_table_says_which_exist(dispatcher_client):
    response = dispatcher_client.get(URL, {"format": "csv", "table": "secrets"})
    assert response.status_code == 400 and "summary, failures, drivers" in response.content.decode()


def test_csv_export_respects_the_filters(dispatcher_client, world):
    rows = get_csv(dispatcher_client, "drivers", depot=world["depot_b"].pk)
    assert [r["driver"] for r in rows] == ["Ben Baker"]


# --- Query count is constant in the data size ---------------------------------------------------


def _many_routes(org, depot, driver, n: int, first: dt.date) -> None:
    routes = Route.objects.bulk_create(
        Route(organization=org, depot=depot, driver=driver, date=first + dt.timedelta(days=i),
              status=Route.Status.COMPLETED, started_at=at(first, 8) + dt.timedelta(days=i),
              completed_at=at(first, 12) + dt.timedelta(days=i), planned_distance_m=1000)
        for i in range(n)
    )  # fmt: skip
    orders = Order.objects.bulk_create(
        Order(organization=org, recipient_name="R", address="A", service_date=r.date, status="delivered",
              window_start=at(r.date, 9), window_end=at(r.date, 12), rating=4)
        for r in routes for _ in range(2)
    )  # fmt: skip
    Stop.objects.bulk_create(
        Stop(organization=org, route=routes[i // 2], order=o, sequence=i % 2 + 1, status="completed",
             arrived_at=at(routes[i // 2].date, 10), departed_at=at(routes[i // 2].date, 10, 5),
             failure_reason="", window_start=o.window_start, window_end=o.window_end, rating=o.rating)
        for i, o in enumerate(orders)
    )  # fmt: skip


def test_the_page_costs_the_same_queries_for_10_or_200_routes(dispatcher_client, org):
    depot, driver = DepotFactory(organization=org), DriverFactory(organization=org)
    params = {"start": (D2 - dt.timedelta(days=365)).isoformat(), "end": D2.isoformat()}
    counts = []
    dispatcher_client.get(URL, params)  # both measured requests find the signed-in user cached, or not
    for n, first in ((10, D2 - dt.timedelta(days=9)), (190, D2 - dt.timedelta(days=199))):
        _many_routes(org, depot, driver, n, first)
        with CaptureQueriesContext(connection) as queries:
            html = dispatcher_client.get(URL, params).content.decode()
        counts.append(len(queries))
    assert "400 of 400 with a window" in html
    assert counts[0] == counts[1]


def test_page_query_count_is_pinned(dispatcher_client, world, django_assert_num_queries):
    # the session joined to the user with his membership (with Redis: the user, the session is
    # cached), the filter form's depot and driver, then orders 1, stops by (day, driver) 1
    # (headline, drivers, daily), routes by driver 1 (headline, drivers), failures by (day,
    # reason) 1 (both failure views), deliveries by (hour, weekday) 1, the route table 1.
    with django_assert_num_queries(9):
        dispatcher_client.get(URL, PERIOD)


# --- The route and plan pages: planned vs actual and cost --------------------------------------


def test_route_page_shows_planned_vs_actual_times_path_and_cost(dispatcher_client, world):
    rb = world["rb"]
    Stop.objects.filter(route=rb, sequence=3).update(planned_arrival=at(D2, 10, 10))
    Route.objects.filter(pk=rb.pk).update(travelled_path=[[52.50, 13.40], [52.51, 13.41], [52.52, 13.40]])
    html = dispatcher_client.get(f"/routes/{rb.pk}/").content.decode()
    row = html[html.index('<td data-label="#" class="num">3</td>') :][:1200]
    assert "10:10" in row and "10:30" in row and "+20 min" in row
    assert "planned 09:00–10:30 (90 min) · actual 09:00–11:00 (120 min)" in html
    assert "3 points" in html and "[52.51, 13.41]" in html
    # 20 km × 0.50 + 1.5 h × 25 = 47.50 over 3 stops; 18 × 0.50 + 2 h × 25 = 59.00 over 2.
    assert "47.50 EUR · 15.83 EUR per stop (3)" in html and "59.00 EUR · 29.50 EUR per delivery (2)" in html


def test_a_completed_route_without_a_path_says_so(dispatcher_client, world):
    html = dispatcher_client.get(f"/routes/{world['ra'].pk}/").content.decode()
    assert "no driven path recorded" in html


def test_a_published_route_of_a_plan_has_its_own_page(dispatcher_client, world):
    from tests.factories import PlanFactory

    plan = PlanFactory(organization=world["org"], depot=world["depot_b"], status="succeeded")
    Route.objects.filter(pk=world["rb"].pk).update(plan=plan)
    response = dispatcher_client.get(f"/routes/{world['rb'].pk}/")
    assert response.status_code == 200 and f"Plan #{plan.pk}" in response.content.decode()
    plan_page = dispatcher_client.get(f"/plans/{plan.pk}/").content.decode()
    assert "47.50 EUR · 15.83 EUR per stop (3)" in plan_page


def test_another_organisations_route_page_is_a_404(client, world, other_dispatcher):
    client.force_login(other_dispatcher)
    assert client.get(f"/routes/{world['rb'].pk}/").status_code == 404
