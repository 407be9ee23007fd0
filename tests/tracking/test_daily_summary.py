"""The daily summary e-mail (issue 7 item 6): yesterday's figures, once each morning, to the
dispatchers and admins who asked for it, through the outbox."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from django.core import mail

from dispatch.models import Membership, Order, Route, Stop
from tests.factories import MembershipFactory, OrderFactory, RouteFactory, StopFactory
from tracking.models import Notification
from tracking.notifications import notification_send
from tracking.staff_mail import daily_summaries_make

pytestmark = [pytest.mark.django_db]

BERLIN = ZoneInfo("Europe/Berlin")
YESTERDAY, TODAY = dt.date(2026, 11, 24), dt.date(2026, 11, 25)


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=BERLIN)


@pytest.fixture
def yesterday(org, other_org):
    route = RouteFactory(
        organization=org, date=YESTERDAY, status=Route.Status.COMPLETED, started_at=at(YESTERDAY, 8),
        completed_at=at(YESTERDAY, 12), travelled_distance_m=40_000, planned_distance_m=36_000,
    )  # fmt: skip
    outcomes = [(Stop.Status.COMPLETED, ""), (Stop.Status.COMPLETED, ""), (Stop.Status.FAILED, "Nobody home")]
    for n, (status, reason) in enumerate(outcomes, start=1):
        order = OrderFactory(
            organization=org, service_date=YESTERDAY,
            status=Order.Status.DELIVERED if status == Stop.Status.COMPLETED else Order.Status.FAILED,
            window_start=at(YESTERDAY, 9), window_end=at(YESTERDAY, 12),
        )  # fmt: skip
        StopFactory(
            route=route, order=order, sequence=n, status=status, failure_reason=reason,
            arrived_at=at(YESTERDAY, 9 + n), departed_at=at(YESTERDAY, 9 + n, 5),
        )  # fmt: skip
    wants = MembershipFactory(organization=org, role=Membership.Role.DISPATCHER, daily_summary=True)
    MembershipFactory(organization=org, role=Membership.Role.DISPATCHER)  # did not ask
    MembershipFactory(organization=org, role=Membership.Role.DRIVER, daily_summary=True)  # not for drivers
    MembershipFactory(organization=org, role=Membership.Role.ADMIN, daily_summary=True, user__email="")
    return wants


def test_it_waits_for_the_morning_then_makes_one_row_per_person_once(yesterday, time_machine):
    time_machine.move_to(at(TODAY, 6, 50), tick=False)
    assert daily_summaries_make() == 0  # before 07:00 in the organisation's zone
    time_machine.move_to(at(TODAY, 7, 5), tick=False)
    assert daily_summaries_make() == 1
    assert daily_summaries_make() == 0  # the next quarter-hour, or a second worker: nothing new
    row = Notification.objects.get(event=Notification.Event.DAILY_SUMMARY)
    assert row.recipient == yesterday.user.email and row.order_id is None
    assert row.payload["day"] == YESTERDAY.isoformat()


def test_the_email_carries_yesterdays_figures_and_a_way_to_stop(yesterday, time_machine, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    time_machine.move_to(at(TODAY, 7, 30), tick=False)
    daily_summaries_make()
    row = Notification.objects.get(event=Notification.Event.DAILY_SUMMARY)
    assert notification_send(notification_id=row.pk) == Notification.Status.SENT
    (email,) = mail.outbox
    assert email.to == [yesterday.user.email]
    assert "2 delivered, 1 failed" in email.subject
    text = email.body
    assert "Orders: 3" in text and "Nobody home: 1" in text
    assert "On time: 100.0 %" in text  # arrivals at 10:00, 11:00 and 12:00 in a 09–12 window
    assert "40.0 km driven, 36.0 km planned" in text
    assert "/reports/?start=2026-11-24&end=2026-11-24" in text
    assert "Turn it off" in text and "Nobody home" in email.alternatives[0][0]
    assert notification_send(notification_id=row.pk) == ""  # sent is sent: never twice


def test_turning_it_off_before_it_goes_skips_it(yesterday, time_machine, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    time_machine.move_to(at(TODAY, 7, 30), tick=False)
    daily_summaries_make()
    Membership.objects.filter(pk=yesterday.pk).update(daily_summary=False)
    row = Notification.objects.get(event=Notification.Event.DAILY_SUMMARY)
    assert notification_send(notification_id=row.pk) == Notification.Status.SKIPPED
    assert mail.outbox == []
