"""Reports, beyond the figures: the first attempt, the window and the rating recorded on Stop when
a visit ends (so the page never searches order histories nor joins the orders), their backfills
for older rows, and the daily summary opt-in on /reports/ (#daily-summary)."""

import datetime as dt
import importlib

import pytest
from django.apps import apps
from django.core.exceptions import ValidationError
from django.urls import reverse

from dispatch import reports, services
from dispatch.models import Membership, Route, Stop
from tests.factories import MembershipFactory, OrderFactory, RouteFactory, StopFactory

pytestmark = [pytest.mark.django_db]
URL = reverse("dispatch:daily_summary")
AT = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


# --- Stop.first_attempt, recorded by stop_transition ----------------------------------------


def _started(org, dispatcher, order=None):
    route = RouteFactory(organization=org)
    stop = StopFactory(route=route, **({"order": order} if order else {}))
    services.route_transition(route=route, to=Route.Status.PUBLISHED, by=dispatcher, at=AT)
    services.route_transition(route=route, to=Route.Status.IN_PROGRESS, by=dispatcher, at=AT)
    return stop


def test_a_failed_visit_and_its_re_attempt_record_which_was_first(org, dispatcher):
    first = _started(org, dispatcher)
    assert first.first_attempt is None  # not an attempt yet
    services.stop_transition(stop=first, to=Stop.Status.ARRIVED, by=dispatcher, at=AT)
    first = services.stop_transition(stop=first, to=Stop.Status.FAILED, by=dispatcher, at=AT, reason="Out")
    again = _started(org, dispatcher, order=first.order)
    services.stop_transition(stop=again, to=Stop.Status.ARRIVED, by=dispatcher, at=AT)
    again = services.stop_transition(stop=again, to=Stop.Status.COMPLETED, by=dispatcher, at=AT)
    assert (first.first_attempt, again.first_attempt) == (True, False)


def test_a_skipped_stop_is_no_attempt_so_the_next_visit_is_the_first(org, dispatcher):
    skipped = _started(org, dispatcher)
    skipped = services.stop_transition(stop=skipped, to=Stop.Status.SKIPPED, by=dispatcher, at=AT)
    later = _started(org, dispatcher, order=skipped.order)
    services.stop_transition(stop=later, to=Stop.Status.ARRIVED, by=dispatcher, at=AT)
    later = services.stop_transition(stop=later, to=Stop.Status.COMPLETED, by=dispatcher, at=AT)
    assert (skipped.first_attempt, later.first_attempt) == (None, True)


def test_the_backfill_marks_the_lowest_attempt_of_each_order_first(org):
    order, other = OrderFactory(organization=org), OrderFactory(organization=org)
    skipped = StopFactory(order=order, route__organization=org, status=Stop.Status.SKIPPED)
    failed = StopFactory(order=order, route__organization=org, status=Stop.Status.FAILED)
    done = StopFactory(order=order, route__organization=org, status=Stop.Status.COMPLETED)
    alone = StopFactory(order=other, route__organization=org, status=Stop.Status.COMPLETED)
    Stop.objects.update(first_attempt=None)  # as the rows were before migration 0009
    migration = importlib.import_module("dispatch.migrations.0009_stop_first_attempt")
    migration.backfill_first_attempt(apps, None)
    got = dict(Stop.objects.values_list("pk", "first_attempt"))
    assert got == {skipped.pk: None, failed.pk: True, done.pk: False, alone.pk: True}


# --- Stop.window_start / window_end / rating, recorded when the visit ends ------------------


def _visit(org, dispatcher, to, *, order=None, reason=""):
    stop = _started(org, dispatcher, order=order)
    services.stop_transition(stop=stop, to=Stop.Status.ARRIVED, by=dispatcher, at=AT)
    return services.stop_transition(stop=stop, to=to, by=dispatcher, at=AT, reason=reason)


def test_completing_or_failing_a_stop_records_the_window_of_its_order(org, dispatcher):
    order = OrderFactory(organization=org, window_start=AT - HOUR, window_end=AT + HOUR)
    failed = _visit(org, dispatcher, Stop.Status.FAILED, order=order, reason="Out")
    done = _visit(org, dispatcher, Stop.Status.COMPLETED, order=order)
    skipped = services.stop_transition(stop=_started(org, dispatcher), to=Stop.Status.SKIPPED, by=dispatcher)
    window = (AT - HOUR, AT + HOUR)
    assert (failed.window_start, failed.window_end) == window
    assert (done.window_start, done.window_end) == window
    assert (skipped.window_start, skipped.window_end) == (None, None)  # not an attempt


def test_moving_the_window_later_does_not_make_a_late_visit_on_time(org, dispatcher):
    order = OrderFactory(organization=org, window_start=AT - 3 * HOUR, window_end=AT - HOUR)
    failed = _visit(org, dispatcher, Stop.Status.FAILED, order=order, reason="Out")
    services.order_update(order=order, by=dispatcher, window_start=AT - HOUR, window_end=AT + 2 * HOUR)
    failed.refresh_from_db()
    assert (failed.window_start, failed.window_end) == (AT - 3 * HOUR, AT - HOUR)
    day = failed.route.date
    grid = reports.report_stop_grid(reports.ReportFilters(organization=org, start=day, end=day))
    assert [(g["late"], g["on_time"], g["late_delay_sum"]) for g in grid] == [(1, 0, 3600.0)]


def test_the_rating_lands_on_the_delivering_stop_not_the_failed_attempt(org, dispatcher):
    failed = _visit(org, dispatcher, Stop.Status.FAILED, reason="Out")
    done = _visit(org, dispatcher, Stop.Status.COMPLETED, order=failed.order)
    assert done.rating is None  # nobody has rated it yet
    services.order_rating_record(order=done.order, rating=4, at=AT)
    got = dict(Stop.objects.values_list("pk", "rating"))
    assert got == {failed.pk: None, done.pk: 4}


def test_the_backfill_copies_windows_onto_attempts_and_ratings_onto_successful_stops(org):
    rated = OrderFactory(organization=org, window_start=AT, window_end=AT + HOUR, rating=5)
    unwindowed = OrderFactory(organization=org, window_start=None, window_end=None, rating=2)
    pending = StopFactory(order=rated, route__organization=org)
    skipped = StopFactory(order=rated, route__organization=org, status=Stop.Status.SKIPPED)
    failed = StopFactory(order=rated, route__organization=org, status=Stop.Status.FAILED)
    done = StopFactory(order=rated, route__organization=org, status=Stop.Status.COMPLETED)
    bare = StopFactory(order=unwindowed, route__organization=org, status=Stop.Status.COMPLETED)
    Stop.objects.update(window_start=None, window_end=None, rating=None)  # as before migration 0010
    migration = importlib.import_module("dispatch.migrations.0010_stop_window_rating")
    migration.backfill_window_and_rating(apps, None)
    got = {pk: row for pk, *row in Stop.objects.values_list("pk", "window_start", "window_end", "rating")}
    assert got == {
        pending.pk: [None, None, None],
        skipped.pk: [None, None, None],
        failed.pk: [AT, AT + HOUR, None],
        done.pk: [AT, AT + HOUR, 5],
        bare.pk: [None, None, 2],
    }


# --- The daily summary opt-in ----------------------------------------------------------------


def test_the_service_turns_the_summary_on_and_off(org):
    membership = MembershipFactory(organization=org, role=Membership.Role.DISPATCHER)
    services.membership_daily_summary_set(membership=membership, enabled=True)
    assert Membership.objects.get(pk=membership.pk).daily_summary is True
    services.membership_daily_summary_set(membership=membership, enabled=False)
    assert Membership.objects.get(pk=membership.pk).daily_summary is False


def test_without_an_email_address_it_cannot_be_turned_on_but_can_be_turned_off(org):
    membership = MembershipFactory(
        organization=org, role=Membership.Role.ADMIN, user__email="", daily_summary=True
    )
    with pytest.raises(ValidationError, match="no e-mail address"):
        services.membership_daily_summary_set(membership=membership, enabled=True)
    services.membership_daily_summary_set(membership=membership, enabled=False)
    assert Membership.objects.get(pk=membership.pk).daily_summary is False


def test_a_driver_cannot_turn_it_on(org):
    membership = MembershipFactory(organization=org, role=Membership.Role.DRIVER)
    with pytest.raises(ValidationError, match="dispatchers and admins"):
        services.membership_daily_summary_set(membership=membership, enabled=True)
    assert Membership.objects.get(pk=membership.pk).daily_summary is False


def test_the_reports_page_shows_the_opt_in_and_saving_it_comes_back_with_a_message(
    dispatcher_client, dispatcher
):
    html = dispatcher_client.get("/reports/").content.decode()
    assert 'id="daily-summary"' in html and f'action="{URL}"' in html
    assert f"Off. It would go to {dispatcher.email}" in html
    response = dispatcher_client.post(URL, {"enabled": "on", "qs": "start=2026-11-01&end=2026-11-07"})
    assert response.status_code == 302
    assert response["Location"] == "/reports/?start=2026-11-01&end=2026-11-07#daily-summary"
    assert Membership.objects.get(user=dispatcher).daily_summary is True
    page = dispatcher_client.get(response["Location"]).content.decode()
    assert f"Daily summary on: yesterday&#x27;s figures go to {dispatcher.email}" in page
    assert "checked" in page[page.index('id="daily-summary"') :][:800]
    dispatcher_client.post(URL, {})  # the box unticked
    assert Membership.objects.get(user=dispatcher).daily_summary is False


def test_a_user_without_an_email_gets_a_clear_error_not_a_silent_change(client, org):
    user = MembershipFactory(organization=org, role=Membership.Role.DISPATCHER, user__email="").user
    client.force_login(user)
    assert "has no e-mail address, so it cannot be turned on" in client.get("/reports/").content.decode()
    page = client.post(URL, {"enabled": "on"}, follow=True).content.decode()
    assert "nowhere to send the summary" in page
    assert Membership.objects.get(user=user).daily_summary is False


def test_the_redirect_only_carries_a_query_string(dispatcher_client):
    response = dispatcher_client.post(URL, {"qs": "//evil.example/x?start=1"})
    assert response["Location"].startswith("/reports/?")


@pytest.mark.parametrize(("who", "status"), [("anonymous", 302), ("driver", 403), ("staff_no_org", 403)])
def test_only_portal_users_may_post_and_nothing_changes_otherwise(client, org, who, status):
    watcher = MembershipFactory(organization=org, role=Membership.Role.DISPATCHER)
    if who == "driver":
        client.force_login(MembershipFactory(organization=org, role=Membership.Role.DRIVER).user)
    elif who == "staff_no_org":
        from tests.factories import UserFactory

        client.force_login(UserFactory(is_staff=True, is_superuser=True))
    response = client.post(URL, {"enabled": "on"})
    assert response.status_code == status
    if who == "anonymous":
        assert "/accounts/login/" in response["Location"]
    assert not Membership.objects.filter(daily_summary=True).exists()
    assert Membership.objects.get(pk=watcher.pk).daily_summary is False


def test_get_is_not_allowed_and_csrf_is_required(client, dispatcher_client, dispatcher):
    assert dispatcher_client.get(URL).status_code == 405
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(dispatcher)
    assert strict.post(URL, {"enabled": "on"}).status_code == 403
    assert Membership.objects.get(user=dispatcher).daily_summary is False
