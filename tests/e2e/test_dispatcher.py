import re

import pytest
from playwright.sync_api import Page, expect

from dispatch.models import Order
from tests.factories import DepotFactory, OrderFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def log_in(page: Page, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_dispatcher_creates_an_order_and_finds_it_in_the_filtered_list(
    live_server, page: Page, dispatcher, org, csp_violations
):
    DepotFactory(organization=org, name="Kreuzberg depot")
    OrderFactory(organization=org, recipient_name="Someone Else", external_ref="OTHER-1")
    log_in(page, live_server.url, "disp", "correct-horse-battery")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Today")

    page.get_by_role("link", name="Orders", exact=True).click()
    page.get_by_role("link", name="New order").click()
    page.get_by_label("Recipient name").fill("Grete Weiskopf")
    page.get_by_label("Recipient phone").fill("+49 30 555 0101")
    page.get_by_label("External reference").fill("E2E-42")
    page.get_by_label("Address").fill("Graefestraße 12, 10967 Berlin")
    # Place it by clicking the map (Leaflet fills the coordinates).
    page.locator("#location-map").click(position={"x": 140, "y": 120})
    expect(page.get_by_label("Latitude")).not_to_have_value("")
    page.get_by_label("Service date").fill("2026-11-24")
    page.get_by_label("Window from").fill("10:00")
    page.get_by_label("Window to").fill("13:00")
    page.get_by_label("Parcels").fill("3")
    page.get_by_role("button", name="Create order").click()

    expect(page.get_by_role("heading", level=1)).to_contain_text("E2E-42")
    order = Order.objects.get(external_ref="E2E-42")
    assert order.lat is not None and order.organization == org

    with page.expect_navigation():
        page.get_by_role("link", name="Orders", exact=True).click()
    page.wait_for_load_state()  # htmx must have wired up the filter form before we type
    page.get_by_label("Search").fill("Weiskopf")
    # HTMX swaps the table in place and pushes the filter into the address bar.
    expect(page).to_have_url(re.compile(r"q=Weiskopf"))
    table = page.locator("#order-table")
    expect(table).to_contain_text("Grete Weiskopf")
    expect(table).not_to_contain_text("Someone Else")
    expect(table).to_contain_text("10:00–13:00")
    assert csp_violations == []


def test_field_errors_are_shown_next_to_the_fields(live_server, page: Page, dispatcher, csp_violations):
    log_in(page, live_server.url, "disp", "correct-horse-battery")
    page.goto(f"{live_server.url}/orders/new/")
    page.get_by_label("Window from").fill("12:00")
    page.get_by_label("Window to").fill("09:00")
    page.get_by_role("button", name="Create order").click()
    expect(page.locator(".error-summary")).to_be_visible()
    expect(page.locator("#id_recipient_name_error")).to_contain_text("required")
    expect(page.locator("#id_window_to_error")).to_contain_text("end after it starts")
    assert not Order.objects.exists()
    assert csp_violations == []


def test_the_portal_is_usable_on_a_phone(live_server, browser, dispatcher):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    log_in(page, live_server.url, "disp", "correct-horse-battery")
    nav = page.locator(".mainnav")
    expect(nav).to_be_hidden()
    page.get_by_text("Menu").click()
    expect(nav).to_be_visible()
    nav.get_by_role("link", name="Contacts").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Address book")
    context.close()


def test_an_alert_that_arrives_by_poll_is_acknowledged_in_place(
    live_server, page: Page, dispatcher, org, csp_violations
):
    """The polled #live is a fragment shared by the organisation's dispatchers, so its forms carry
    no CSRF token of their own: the click must go out with the page's (htmx's hx-headers)."""
    from tracking.alerts import alert_raise
    from tracking.models import Alert

    log_in(page, live_server.url, "disp", "correct-horse-battery")
    expect(page.locator("#dash-alerts-none")).to_be_visible()
    alert = alert_raise(
        organization_id=org.pk, kind=Alert.Kind.IDLE, key="e2e-idle", message="Van 3 has not moved for 25 min"
    )
    item = page.locator(f"#alert-{alert.pk}")
    expect(item).to_contain_text("Van 3 has not moved", timeout=15_000)  # the next 5 s poll
    item.get_by_role("button", name="Acknowledge").click()
    expect(item).to_have_count(0)
    expect(page.locator("#live")).to_contain_text("1 acknowledged alert still going on")
    alert.refresh_from_db()
    assert alert.acknowledged_by_id == dispatcher.pk and alert.resolved_at is None
    assert csp_violations == []
