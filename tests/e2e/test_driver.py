"""The driver app on a phone: work a route, offline and back, and the dispatcher sees it."""

import pytest
from playwright.sync_api import expect

from dispatch import planning
from dispatch.models import Route, Stop, StopEvent
from tests.dispatch.conftest import create_and_run, day  # noqa: F401 - fixture

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
BERLIN_KREUZBERG = {"latitude": 52.4990, "longitude": 13.4180}


@pytest.fixture
def published(org, day, time_machine):  # noqa: F811 - the planning fixture
    time_machine.move_to("2026-11-24 07:00:00+00:00", tick=True)
    plan = create_and_run(org, day)
    planning.plan_publish(plan=plan, by=None)
    route = plan.routes.order_by("pk").first()
    return route


def phone(browser, live_server, route):
    context = browser.new_context(**PHONE, geolocation=BERLIN_KREUZBERG, permissions=["geolocation"])
    page = context.new_page()
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill(route.driver.user.username)
    page.get_by_label("Password").fill("correct-horse-battery")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("My route")
    return context, page


def test_driver_starts_the_route_and_delivers_a_stop_then_the_dispatcher_sees_it(
    browser, live_server, published, dispatcher
):
    route = published
    context, page = phone(browser, live_server, route)
    page.get_by_role("button", name="Start route").click()
    first = route.stops.order_by("sequence").first()
    card = page.locator(f"#stop-{first.pk}")
    card.get_by_role("button", name="Delivered").click()
    expect(page.locator("#sync-status")).to_contain_text("everything sent", timeout=10_000)
    first.refresh_from_db()
    assert first.status == Stop.Status.COMPLETED
    assert Route.objects.get(pk=route.pk).status == Route.Status.IN_PROGRESS

    dispatcher_page = browser.new_page()
    dispatcher_page.goto(f"{live_server.url}/accounts/login/")
    dispatcher_page.get_by_label("Username").fill("disp")
    dispatcher_page.get_by_label("Password").fill("correct-horse-battery")
    dispatcher_page.get_by_role("button", name="Log in").click()
    expect(dispatcher_page.locator("body")).to_contain_text(f"1 / {route.stops.count()}")
    context.close()


def test_actions_taken_offline_are_sent_once_when_the_network_returns(browser, live_server, published):
    route = published
    context, page = phone(browser, live_server, route)
    first = route.stops.order_by("sequence").first()
    context.set_offline(True)
    page.locator(f"#stop-{first.pk}").get_by_role("button", name="Arrived").click()
    page.locator(f"#stop-{first.pk}").get_by_role("button", name="Delivered").click()
    expect(page.locator("#sync-status")).to_contain_text("Offline")
    expect(page.locator("#sync-status")).to_contain_text("2 actions")
    first.refresh_from_db()
    assert first.status == Stop.Status.PENDING

    context.set_offline(False)
    page.evaluate("window.dispatchEvent(new Event('online'))")
    expect(page.locator("#sync-status")).to_contain_text("everything sent", timeout=15_000)
    first.refresh_from_db()
    assert first.status == Stop.Status.COMPLETED
    assert StopEvent.objects.filter(stop=first, kind="delivered").count() == 1
    context.close()
