"""The driver app on a phone: work a route, offline and back, and the dispatcher sees it."""

import json

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from dispatch import planning
from dispatch.models import Route, Stop, StopEvent
from tests.dispatch.conftest import create_and_run, day  # noqa: F401 - fixture
from tracking.models import DriverPosition

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
BERLIN_KREUZBERG = {"latitude": 52.4990, "longitude": 13.4180}
# 40 m on: a few seconds later at town speed, not a jump the ingest would flag as implausible.
DOWN_THE_STREET = {"latitude": 52.4993, "longitude": 13.4184}

# The browser stamps geolocation fixes with the real clock, while the server's clock stands on
# the test's planning day: shift the phone's GPS time onto the server's, as a phone whose
# clock is right would send it (else every fix is refused as "in the future").
SHIFT_GPS_CLOCK = """
(() => {
  const shift = %d;
  const geo = navigator.geolocation;
  const stamped = (ok) => (p) => ok({ coords: p.coords, timestamp: p.timestamp - shift });
  const watch = geo.watchPosition.bind(geo), current = geo.getCurrentPosition.bind(geo);
  geo.watchPosition = (ok, err, options) => watch(stamped(ok), err, options);
  geo.getCurrentPosition = (ok, err, options) => current(stamped(ok), err, options);
})();
"""


@pytest.fixture
def published(org, day, time_machine):  # noqa: F811 - the planning fixture
    time_machine.move_to("2026-11-24 07:00:00+00:00", tick=True)
    plan = create_and_run(org, day)
    planning.plan_publish(plan=plan, by=None)
    route = plan.routes.order_by("pk").first()
    return route


def phone(browser, live_server, route, at=BERLIN_KREUZBERG):
    context = browser.new_context(**PHONE, geolocation=at, permissions=["geolocation"])
    page = context.new_page()
    browser_ms = page.evaluate("Date.now()")
    context.add_init_script(SHIFT_GPS_CLOCK % (browser_ms - int(timezone.now().timestamp() * 1000)))
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

    # The van drives on: the phone reports its new position, sent with the next batch.
    page.wait_for_timeout(2_000)
    context.set_geolocation(DOWN_THE_STREET)
    expect(page.locator("#sync-status")).to_contain_text("position", timeout=10_000)
    page.evaluate("window.dispatchEvent(new Event('online'))")
    expect(page.locator("#sync-status")).to_contain_text("everything sent", timeout=10_000)
    position = DriverPosition.objects.get(driver=route.driver)
    assert (position.lat, position.lng) == (DOWN_THE_STREET["latitude"], DOWN_THE_STREET["longitude"])

    dispatcher_page = browser.new_page()
    dispatcher_page.goto(f"{live_server.url}/accounts/login/")
    dispatcher_page.get_by_label("Username").fill("disp")
    dispatcher_page.get_by_label("Password").fill("correct-horse-battery")
    dispatcher_page.get_by_role("button", name="Log in").click()
    expect(dispatcher_page.locator("body")).to_contain_text(f"1 / {route.stops.count()}")
    # The live map's data carries the driver's new position, and his row says it is fresh.
    live = json.loads(dispatcher_page.locator("#live-data").text_content())
    marker = next(d for d in live["drivers"] if d["id"] == route.driver_id)
    assert (marker["lat"], marker["lng"], marker["route"]) == (
        DOWN_THE_STREET["latitude"],
        DOWN_THE_STREET["longitude"],
        route.pk,
    )
    expect(dispatcher_page.locator(f"#dash-route-{route.pk}")).to_contain_text("position")
    expect(dispatcher_page.locator(f"#dash-route-{route.pk}")).not_to_contain_text("no position")
    # The geometry comes from /live/map.json: the route's line and one marker per stop, the
    # delivered one coloured from the partial's states.
    expect(dispatcher_page.locator("#dash-map path.leaflet-interactive")).to_have_count(
        route.stops.exclude(order__lat=None).count() + 1
    )
    expect(dispatcher_page.locator('#dash-map path.leaflet-interactive[fill="#067647"]')).to_have_count(1)
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


def test_the_app_offers_to_mark_arrived_at_a_stop_and_the_driver_accepts(
    browser, live_server, published, settings
):
    settings.ARRIVAL_DWELL_S = 0  # the test cannot stand a minute at the door
    route = published
    first = route.stops.select_related("order").order_by("sequence").first()
    context, page = phone(
        browser, live_server, route, at={"latitude": first.order.lat, "longitude": first.order.lng}
    )
    banner = page.locator("#arrival-banner")
    expect(page.locator("#sync-status")).to_contain_text("position", timeout=10_000)
    page.evaluate("window.dispatchEvent(new Event('online'))")  # send the fix now
    expect(page.locator("#sync-status")).to_contain_text("everything sent", timeout=10_000)
    # Ask at once, not in 30 s (the "online" above may already have asked after the fix went).
    page.evaluate("window.dispatchEvent(new Event('online'))")
    expect(banner).to_be_visible(timeout=10_000)
    expect(banner).to_contain_text(f"You seem to be at stop {first.sequence}, {first.order.address}")
    first.refresh_from_db()
    assert first.status == Stop.Status.PENDING  # offered, not applied

    banner.get_by_role("button", name="Mark arrived").click()
    expect(banner).to_be_hidden()
    expect(page.locator(f"#stop-{first.pk} .stop-status")).to_have_text("Arrived")
    expect(page.locator("#sync-status")).to_contain_text("everything sent", timeout=10_000)
    first.refresh_from_db()
    assert first.status == Stop.Status.ARRIVED
    assert StopEvent.objects.filter(stop=first, kind="arrived").count() == 1
    context.close()
