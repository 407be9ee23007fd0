import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from dispatch import planning
from dispatch.models import Plan, Route
from tests.dispatch.conftest import DAY, create_and_run


@pytest.fixture(autouse=True)
def _frozen_today(time_machine):
    time_machine.move_to("2026-11-24 07:00:00+00:00")


def html(response) -> str:
    return response.content.decode()


def test_new_plan_form_lists_the_drivers_on_shift_that_day(dispatcher_client, day):
    body = html(dispatcher_client.get("/plans/", {"date": "2026-11-24"}))
    assert "Driver0" in body and "Driver1" in body and "10 open orders" in body


def test_changing_the_date_reloads_only_the_drivers(dispatcher_client, day):
    response = dispatcher_client.get(
        "/plans/", {"date": "2026-11-25"}, headers={"HX-Request": "true", "HX-Target": "plan-drivers"}
    )
    body = html(response)
    assert 'id="plan-drivers"' in body and "<html" not in body
    assert "Nobody has a shift" in body


def test_starting_a_plan_redirects_to_its_progress(
    dispatcher_client, day, django_capture_on_commit_callbacks, monkeypatch
):
    monkeypatch.setattr(planning, "async_task", lambda *a, **k: None)
    data = {
        "date": "2026-11-24", "depot": day["depot"].pk, "objective": "time", "time_budget_seconds": "2",
        "drivers": [d.pk for d in day["drivers"]],
    }  # fmt: skip
    response = dispatcher_client.post("/plans/", data)
    plan = Plan.objects.get()
    assert response.status_code == 302 and response["Location"] == plan.get_absolute_url()
    page = html(dispatcher_client.get(plan.get_absolute_url()))
    assert "Waiting for a worker" in page and 'hx-trigger="every 1s"' in page
    partial = dispatcher_client.get(
        plan.get_absolute_url(), headers={"HX-Request": "true", "HX-Target": "plan-progress"}
    )
    assert "<html" not in html(partial) and "0.0 s of 2 s" in html(partial)


def test_a_plan_form_without_drivers_on_shift_says_so(dispatcher_client, org, depot):
    body = html(
        dispatcher_client.post(
            "/plans/",
            {"date": "2026-11-24", "depot": depot.pk, "objective": "time", "time_budget_seconds": "5"},
        )
    )
    assert "No driver has a shift" in body
    assert not Plan.objects.exists()


def test_progress_poll_refreshes_the_page_when_the_plan_is_done(dispatcher_client, org, day):
    plan = create_and_run(org, day)
    response = dispatcher_client.get(
        plan.get_absolute_url(), headers={"HX-Request": "true", "HX-Target": "plan-progress"}
    )
    assert response["HX-Refresh"] == "true"


def test_the_result_page_shows_routes_map_data_and_publish(dispatcher_client, org, day):
    plan = create_and_run(org, day)
    body = html(dispatcher_client.get(plan.get_absolute_url()))
    route = plan.routes.first()
    assert f'id="route-{route.pk}"' in body and 'data-map="{&quot;depot&quot;' in body
    assert str(route.stops.first().order) in body and "Publish routes" in body


def test_moving_a_stop_with_htmx_returns_the_recomputed_routes(dispatcher_client, org, day):
    plan = create_and_run(org, day)
    route = plan.routes.first()
    last = route.stops.order_by("sequence").last()
    response = dispatcher_client.post(
        f"/stops/{last.pk}/move/", {"route": route.pk, "position": 1}, headers={"HX-Request": "true"}
    )
    body = html(response)
    last.refresh_from_db()
    assert last.sequence == 1
    assert 'id="plan-routes"' in body and "<html" not in body


def test_a_stale_move_without_htmx_is_a_409_with_a_message(dispatcher_client, org, day):
    plan = create_and_run(org, day)
    route = plan.routes.first()
    stop = route.stops.order_by("sequence").last()
    response = dispatcher_client.post(
        f"/stops/{stop.pk}/move/", {"direction": "up", "version": route.version - 1 or 999}
    )
    assert response.status_code == 409


def test_publishing_from_the_page(dispatcher_client, org, day):
    plan = create_and_run(org, day)
    response = dispatcher_client.post(f"/plans/{plan.pk}/publish/", follow=True)
    assert "drivers see them now" in html(response)
    assert set(plan.routes.values_list("status", flat=True)) == {Route.Status.PUBLISHED}


def test_cancelling_a_queued_plan(dispatcher_client, org, day, monkeypatch):
    monkeypatch.setattr(planning, "async_task", lambda *a, **k: None)
    plan = planning.plan_create(organization=org, by=None, day=DAY, depot=day["depot"])
    dispatcher_client.post(f"/plans/{plan.pk}/cancel/")
    plan.refresh_from_db()
    assert plan.status == Plan.Status.CANCELLED


def test_api_starts_a_plan_with_202_and_reports_its_result(org, day, dispatcher, monkeypatch):
    monkeypatch.setattr(planning, "async_task", lambda *a, **k: None)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=dispatcher).key}")
    response = api.post(
        "/api/v1/plans/",
        {"date": "2026-11-24", "depot": day["depot"].pk, "time_budget_seconds": 1},
        format="json",
    )
    assert response.status_code == 202 and response.json()["status"] == "queued"
    plan_id = response.json()["id"]
    planning.plan_run(plan_id=plan_id)
    result = api.get(f"/api/v1/plans/{plan_id}/").json()
    assert result["status"] == "succeeded" and result["result"]["totals"]["orders"] == 10


def test_api_refuses_a_plan_with_a_foreign_depot(org, other_org, day, dispatcher):
    from tests.factories import DepotFactory

    api = APIClient()
    api.force_authenticate(dispatcher)
    response = api.post(
        "/api/v1/plans/",
        {"date": "2026-11-24", "depot": DepotFactory(organization=other_org).pk},
        format="json",
    )
    assert response.status_code == 400 and "depot" in response.json()


def test_an_unticked_order_stays_out_of_the_run(dispatcher_client, day, monkeypatch):
    monkeypatch.setattr(planning, "async_task", lambda *a, **k: None)
    keep = [o.pk for o in day["orders"][1:]]
    dispatcher_client.post(
        "/plans/",
        {
            "date": "2026-11-24", "depot": day["depot"].pk, "objective": "time", "time_budget_seconds": "2",
            "drivers": [d.pk for d in day["drivers"]], "orders-shown": "1", "orders": keep,
        },
    )  # fmt: skip
    assert sorted(Plan.objects.get().options["order_ids"]) == sorted(keep)
