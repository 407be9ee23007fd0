"""The customer's tracking page on a phone: the ETA while the driver is on the way, then — once
the simulator has delivered — the proof, arriving by the page's own polling (issue #6 item 8)."""

import datetime as dt
import random

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from dispatch.models import Stop
from tests.dispatch.conftest import day  # noqa: F401 - fixture
from tests.e2e.test_driver import PHONE, published  # noqa: F401 - fixture
from tracking.links import link_path, tracking_link_ensure
from tracking.simulation import Simulation, advance

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_the_customer_sees_the_eta_then_the_proof_after_the_simulator_delivers(
    browser,
    live_server,
    published,  # noqa: F811 - the fixture
):
    route = published
    first = route.stops.order_by("sequence").first()
    path = link_path(tracking_link_ensure(order=first.order))
    context = browser.new_context(**PHONE)
    page = context.new_page()
    violations = []
    page.on("console", lambda msg: "Content Security Policy" in msg.text and violations.append(msg.text))
    page.route("https://tile.openstreetmap.org/**", lambda r: r.abort())

    # A live ETA from three minutes ago: the server says when, the page counts the minutes.
    Stop.objects.filter(pk=first.pk).update(
        eta=timezone.now() + dt.timedelta(minutes=40), eta_updated_at=timezone.now() - dt.timedelta(minutes=3)
    )
    page.goto(f"{live_server.url}{path}")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Your delivery")
    expect(page.locator(".track-eta")).to_contain_text("Expected")
    expect(page.locator(".track-eta")).to_contain_text("updated 3 min ago")
    expect(page.locator("#track-live")).not_to_contain_text("Proof of delivery")

    # The simulator drives the route through the same services as the driver app, with a
    # generated photo and signature, until our stop is done.
    sim, now, rng = (
        Simulation.from_db(now=timezone.now(), failure_rate=0.0, start_now=True),
        timezone.now(),
        random.Random(3),
    )
    for _ in range(200):
        if Stop.objects.get(pk=first.pk).status == Stop.Status.COMPLETED:
            break
        advance(sim, now=now, dt_seconds=60, rng=rng)
        now += dt.timedelta(seconds=60)
    assert Stop.objects.get(pk=first.pk).status == Stop.Status.COMPLETED

    # No reload: the page polls every 15 s and shows the proof when it arrives.
    live = page.locator("#track-live")
    expect(live).to_contain_text("Proof of delivery", timeout=25_000)
    expect(live).to_contain_text("Delivered")
    photo = live.get_by_role("img", name="Photo of your delivery")
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=photo.element_handle())
    assert violations == []
    context.close()
