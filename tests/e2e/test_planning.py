import io
import re

import pytest
from django.core.management import call_command
from playwright.sync_api import Page, expect

from dispatch.models import Plan, Route

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_dispatcher_plans_the_demo_day_moves_a_stop_and_publishes(
    live_server, page: Page, worker, csp_violations
):
    call_command("seed_demo", "--password", "demo-pass-1", stdout=io.StringIO())
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill("dispatcher")
    page.get_by_label("Password").fill("demo-pass-1")
    page.get_by_role("button", name="Log in").click()

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Plans").click()
    expect(page.locator("#plan-drivers")).to_contain_text("150 open orders")
    page.get_by_label("Time budget (seconds)").fill("3")
    page.get_by_role("button", name="Start planning").click()

    # The real worker picks the job up; the page polls its progress, then shows the result.
    expect(page.get_by_role("heading", name=re.compile("Optimising|Waiting"))).to_be_visible()
    expect(page.get_by_role("button", name="Publish routes")).to_be_visible(timeout=90_000)
    plan = Plan.objects.get()
    assert plan.status == Plan.Status.SUCCEEDED

    # Move the first stop of the first route to the second route, with the keyboard-friendly form.
    first, second = list(plan.routes.order_by("pk")[:2])
    stop = first.stops.order_by("sequence").first()
    card = page.locator(f"#route-{first.pk}")
    row = card.locator(f'li[data-stop="{stop.pk}"]')
    row.get_by_label(re.compile("Move .* to")).select_option(str(second.pk))
    row.get_by_role("button", name="Move", exact=True).click()
    expect(page.locator(f'#route-{second.pk} li[data-stop="{stop.pk}"]')).to_be_visible()
    stop.refresh_from_db()
    assert stop.route_id == second.pk

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Publish routes").click()
    expect(page.locator(".messages")).to_contain_text("drivers see them now")
    assert set(Route.objects.filter(plan=plan).values_list("status", flat=True)) == {"published"}
    assert csp_violations == []
