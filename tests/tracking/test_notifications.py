"""Customer notifications through the outbox (issue #6 items 6 and 7): one row per message,
made once, sent once, held in quiet hours, retried with back-off, never repeated after an
ambiguous failure, stopped by the customer."""

import base64
import datetime as dt
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse

from dispatch import services
from dispatch.models import Route, Stop, StopEvent
from tests.factories import DepotFactory, OrderFactory, RouteFactory, StopFactory
from tracking import notifications as notify
from tracking.links import link_token, tracking_link_ensure
from tracking.models import Alert, Notification, NotificationOptOut, TrackingSettings
from tracking.sms import HttpBackend, SendError

pytestmark = [pytest.mark.django_db]

BERLIN = ZoneInfo("Europe/Berlin")
DAY = dt.date(2026, 11, 24)
N = Notification.Status
HTMX = {"HX-Request": "true"}


def at(hour: int, minute: int = 0, day: dt.date = DAY) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=BERLIN)


class FakeSms:
    """settings.SMS_BACKEND points here: records every call; `script` holds failures to raise."""

    calls: list[dict] = []
    script: list[SendError] = []
    lock = threading.Lock()

    def send(self, *, to: str, body: str, reference: str) -> str:
        with self.lock:
            FakeSms.calls.append({"to": to, "body": body, "reference": reference})
            if FakeSms.script:
                raise FakeSms.script.pop(0)
            return f"fake-{len(FakeSms.calls)}"


@pytest.fixture(autouse=True)
def _setup(settings, time_machine):
    time_machine.move_to(at(10), tick=False)
    settings.SMS_BACKEND = "tests.tracking.test_notifications.FakeSms"
    settings.SITE_URL = "https://track.example.com"
    FakeSms.calls, FakeSms.script = [], []


@pytest.fixture
def queued(monkeypatch):
    """The ids handed to django-q2 (async_task is what leaves the process)."""
    ids: list[int] = []
    monkeypatch.setattr(notify, "async_task", lambda func, pk: ids.append(pk))
    return ids


def make_route(org, n=3, **order):
    route = RouteFactory(organization=org, depot=DepotFactory(organization=org), date=DAY)
    for i in range(n):
        StopFactory(
            route=route,
            sequence=i + 1,
            planned_arrival=at(11, 10 * i),
            order=OrderFactory(organization=org, recipient_email=f"c{i}@example.com", **order),
        )
    return route


def start(route, capture, execute=True):
    with capture(execute=execute):
        services.route_transition(route=route, to=Route.Status.PUBLISHED, by=None, at=at(8))
        services.route_transition(route=route, to=Route.Status.IN_PROGRESS, by=None, at=at(9))
    return list(route.stops.order_by("sequence").select_related("order"))


def deliver(stop):
    services.stop_transition(stop=stop, to=Stop.Status.ARRIVED, by=None)
    services.stop_transition(stop=stop, to=Stop.Status.COMPLETED, by=None)


def rows(**filters):
    return sorted(Notification.objects.filter(**filters).values_list("event", "channel", "status"))


def send_all(**filters) -> list[str]:
    return [
        notify.notification_send(notification_id=pk)
        for pk in Notification.objects.filter(**filters).order_by("pk").values_list("pk", flat=True)
    ]


# --- Making rows -----------------------------------------------------------------------------


def test_out_for_delivery_makes_one_row_per_default_channel_and_queues_them(
    org, queued, django_capture_on_commit_callbacks
):
    stops = start(make_route(org), django_capture_on_commit_callbacks)

    assert rows(order=stops[0].order) == [
        ("out_for_delivery", "email", "pending"),
        ("out_for_delivery", "sms", "pending"),
    ]
    assert sorted(queued) == sorted(Notification.objects.values_list("pk", flat=True))
    assert StopEvent.objects.filter(notified_at=None).count() == 0


def test_channels_follow_the_organisations_settings(org, queued, django_capture_on_commit_callbacks):
    TrackingSettings.objects.create(organization=org, channels={"out_for_delivery": ["sms"], "delivered": []})
    stops = start(make_route(org, n=1), django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        deliver(stops[0])

    assert rows() == [("out_for_delivery", "sms", "pending")]


def test_delivered_and_failed_make_their_messages_with_reason_and_link(
    org, queued, mailoutbox, django_capture_on_commit_callbacks
):
    stops = start(make_route(org, n=2), django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        deliver(stops[0])
        services.stop_transition(stop=stops[1], to=Stop.Status.FAILED, by=None, reason="Nobody home")

    assert rows(order=stops[0].order, event="delivered") == [("delivered", "email", "pending")]
    assert rows(order=stops[1].order, event="failed") == [
        ("failed", "email", "pending"),
        ("failed", "sms", "pending"),
    ]
    send_all(event__in=["delivered", "failed"])
    token = link_token(tracking_link_ensure(order=stops[1].order))
    failed_sms = FakeSms.calls[-1]["body"]
    assert "Nobody home" in failed_sms and f"https://track.example.com/t/{token}/" in failed_sms
    subjects = sorted(m.subject for m in mailoutbox)
    assert subjects[0].startswith("We could not deliver") and "was delivered" in subjects[1]


def test_missing_address_skips_the_row_with_the_reason(org, queued, django_capture_on_commit_callbacks):
    stops = start(make_route(org, n=1, recipient_phone=""), django_capture_on_commit_callbacks)

    sms = Notification.objects.get(order=stops[0].order, channel="sms")
    assert (sms.status, sms.last_error) == (N.SKIPPED, "No phone number on the order.")
    assert sms.pk not in queued


def test_a_replayed_event_or_a_retried_job_makes_and_sends_nothing_twice(
    org, queued, mailoutbox, django_capture_on_commit_callbacks
):
    stops = start(make_route(org, n=1), django_capture_on_commit_callbacks)
    event = StopEvent.objects.get(order=stops[0].order, to_status="out_for_delivery")
    before = Notification.objects.count()

    assert notify.notifications_for_event(event_id=event.pk) == []  # already claimed
    StopEvent.objects.filter(pk=event.pk).update(notified_at=None)  # as if the claim were lost
    assert notify.notifications_for_event(event_id=event.pk) == []  # the keys exist already
    assert Notification.objects.count() == before

    assert send_all() == [N.SENT, N.SENT]
    assert send_all() == ["", ""]  # the job ran again: nothing is due
    assert (len(mailoutbox), len(FakeSms.calls)) == (1, 1)


def test_the_sweep_claims_events_the_signal_missed(org, queued, django_capture_on_commit_callbacks):
    stops = start(make_route(org, n=2), django_capture_on_commit_callbacks, execute=False)
    assert Notification.objects.count() == 0

    first = notify.notifications_sweep(now=at(10, 1))
    second = notify.notifications_sweep(now=at(10, 2))

    assert first["made"] == 4 and second["made"] == 0
    assert rows(order=stops[1].order, event="out_for_delivery") == [
        ("out_for_delivery", "email", "pending"),
        ("out_for_delivery", "sms", "pending"),
    ]
    assert StopEvent.objects.filter(notified_at=None).count() == 0


def test_an_event_seen_only_after_the_order_moved_on_sends_nothing(
    org, queued, django_capture_on_commit_callbacks
):
    stops = start(make_route(org, n=1), django_capture_on_commit_callbacks, execute=False)
    deliver(stops[0])

    notify.notifications_sweep(now=at(10, 5))

    assert rows() == [("delivered", "email", "pending")]


# --- Wording -----------------------------------------------------------------------------------


def test_email_has_link_pin_and_unsubscribe_and_escapes_customer_data(
    org, queued, mailoutbox, django_capture_on_commit_callbacks
):
    stops = start(
        make_route(org, n=1, recipient_name="<b>Ann & Bob</b>", require_pin=True),
        django_capture_on_commit_callbacks,
    )
    order = stops[0].order
    send_all(channel="email")

    [mail] = mailoutbox
    html = mail.alternatives[0][0]
    token = link_token(tracking_link_ensure(order=order))
    assert f"https://track.example.com/t/{token}/" in mail.body and order.handover_pin in mail.body
    assert f"https://track.example.com/t/{token}/unsubscribe/" in mail.body
    assert f"/t/{token}/unsubscribe/" in html and mail.extra_headers["List-Unsubscribe"].endswith(
        "/unsubscribe/>"
    )
    assert "&lt;b&gt;Ann &amp; Bob&lt;/b&gt;" in html and "<b>Ann" not in html
    assert order.handover_pin in html
    row = Notification.objects.get(channel="email")
    assert (row.status, row.provider_id) == (N.SENT, mail.extra_headers["Message-ID"])


def test_no_pin_in_the_message_when_the_delivery_needs_none(org, queued, django_capture_on_commit_callbacks):
    stops = start(make_route(org, n=1), django_capture_on_commit_callbacks)
    send_all(channel="sms")

    assert stops[0].order.handover_pin not in FakeSms.calls[0]["body"]
    assert FakeSms.calls[0]["body"].endswith("Reply STOP to stop.")


def test_organisation_wording_overrides_escape_html_but_not_text(
    org, queued, mailoutbox, django_capture_on_commit_callbacks
):
    TrackingSettings.objects.create(
        organization=org,
        templates={
            "out_for_delivery.sms.body": "Hi {{ recipient_name }}, {{ reference }} comes. {{ link }}",
            "out_for_delivery.email.html": "<p>Dear {{ recipient_name }}</p>",
            "out_for_delivery.email.subject": "{{ organization }} brings {{ reference }}",
        },
    )
    start(
        make_route(org, n=1, recipient_name="Tom & <Jerry>", external_ref="R-1"),
        django_capture_on_commit_callbacks,
    )
    send_all()

    sms_body = FakeSms.calls[0]["body"]
    assert sms_body.startswith("Hi Tom & <Jerry>, R-1 comes. https://track.example.com/t/")
    assert sms_body.endswith("Reply STOP to stop.")
    [mail] = mailoutbox
    assert mail.subject == "Kreuzberg Kurier brings R-1"
    assert mail.alternatives[0][0].startswith("<p>Dear Tom &amp; &lt;Jerry&gt;</p>")
    assert "unsubscribe" in mail.alternatives[0][0]  # the footer stays whatever the wording


# --- Quiet hours -------------------------------------------------------------------------------


def test_quiet_hours_hold_messages_until_they_end(
    org, queued, time_machine, django_capture_on_commit_callbacks
):
    TrackingSettings.objects.create(
        organization=org, quiet_from=dt.time(21), quiet_until=dt.time(8), channels={"arriving_soon": []}
    )
    time_machine.move_to(at(22), tick=False)
    stops = start(make_route(org, n=1), django_capture_on_commit_callbacks)
    held = Notification.objects.filter(order=stops[0].order)

    assert {(r.status, r.not_before) for r in held} == {(N.HELD, at(8, day=DAY + dt.timedelta(days=1)))}
    assert queued == [] and send_all() == ["", ""]

    notify.notifications_sweep(now=at(7, 59, day=DAY + dt.timedelta(days=1)))
    assert set(held.values_list("status", flat=True)) == {N.HELD}
    morning = at(8, 1, day=DAY + dt.timedelta(days=1))
    with django_capture_on_commit_callbacks(execute=True):
        result = notify.notifications_sweep(now=morning)
    assert result["released"] == 2 and sorted(queued) == sorted(r.pk for r in held)
    time_machine.move_to(morning, tick=False)
    assert send_all() == [N.SENT, N.SENT]


def test_quiet_hours_within_one_day():
    options = TrackingSettings(quiet_from=dt.time(12), quiet_until=dt.time(14))
    assert notify.quiet_hours_end(options, BERLIN, at(13)) == at(14)
    assert notify.quiet_hours_end(options, BERLIN, at(14)) is None
    assert notify.quiet_hours_end(TrackingSettings(), BERLIN, at(13)) is None


# --- Opting out --------------------------------------------------------------------------------


def test_unsubscribe_link_asks_then_opts_out_and_later_messages_are_skipped(
    client, org, queued, django_capture_on_commit_callbacks
):
    stops = start(make_route(org, n=1), django_capture_on_commit_callbacks)
    order = stops[0].order
    url = reverse("tracking:unsubscribe", args=[link_token(tracking_link_ensure(order=order))])

    page = client.get(url)
    assert page.status_code == 200 and b"Stop messages" in page.content
    assert not NotificationOptOut.objects.filter(order=order).exists()  # a link scanner opts nobody out

    done = client.post(url)
    assert b"no more messages" in done.content
    assert NotificationOptOut.objects.get(order=order).via == "link"
    assert set(Notification.objects.filter(order=order).values_list("status", flat=True)) == {N.SKIPPED}
    with django_capture_on_commit_callbacks(execute=True):
        deliver(stops[0])
    assert Notification.objects.get(order=order, event="delivered").status == N.SKIPPED
    assert FakeSms.calls == []


def test_unsubscribe_with_an_unknown_token_is_404(client, db):
    assert client.get(reverse("tracking:unsubscribe", args=["x" * 43])).status_code == 404


def test_stop_reply_opts_the_number_out(client, org, settings, queued, django_capture_on_commit_callbacks):
    settings.SMS_INBOUND_SECRET = "s3cret-shared-with-the-provider"
    settings.SMS_INBOUND_AUTH = "token"  # the signed default is in tests/tracking/test_webhooks.py
    stops = start(make_route(org, n=2), django_capture_on_commit_callbacks)
    send_all(channel="sms")
    phone = Notification.objects.get(order=stops[0].order, channel="sms").recipient
    url = reverse("tracking:sms_inbound")

    refused = client.post(url, {"from": phone, "body": "STOP"}, headers={"Authorization": "Bearer wrong"})
    assert refused.status_code == 403 and not NotificationOptOut.objects.exists()
    ok = client.post(
        url,
        json.dumps({"from": phone, "body": " stop "}),
        content_type="application/json",
        headers={"Authorization": "Bearer s3cret-shared-with-the-provider"},
    )
    assert ok.json() == {"opted_out": 1}
    assert list(NotificationOptOut.objects.values_list("order_id", "via")) == [(stops[0].order_id, "sms")]
    basic = base64.b64encode(b"provider:s3cret-shared-with-the-provider").decode()
    other = client.post(url, {"from": phone, "body": "Thanks!"}, headers={"Authorization": f"Basic {basic}"})
    assert other.json() == {"opted_out": 0}


def test_inbound_sms_is_off_without_a_secret(client, db, settings):
    settings.SMS_INBOUND_SECRET = ""
    response = client.post(reverse("tracking:sms_inbound"), {"from": "+491", "body": "STOP"})
    assert response.status_code == 404


# --- Failures, back-off, ambiguity --------------------------------------------------------------


def _one_sms_row(org, capture, channel="sms"):
    TrackingSettings.objects.create(organization=org, channels={"out_for_delivery": [channel]})
    start(make_route(org, n=1), capture)
    return Notification.objects.get()


def _unused_port() -> int:
    with socket.socket() as probe:  # bound, never listening: connecting is refused
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _send_until_settled(row, time_machine) -> list[dt.datetime]:
    """Run the row's job at each moment it is due (the clock fast-forwarded) until it stops
    being pending; the moments of its attempts. A job one second early must do nothing."""
    attempts = [dt.datetime.now(tz=dt.UTC)]
    while notify.notification_send(notification_id=row.pk) == N.PENDING:
        row.refresh_from_db()
        time_machine.move_to(row.not_before - dt.timedelta(seconds=1), tick=False)
        assert notify.notification_send(notification_id=row.pk) == ""
        time_machine.move_to(row.not_before, tick=False)
        attempts.append(row.not_before)
    row.refresh_from_db()
    return attempts


def _offsets(attempts: list[dt.datetime]) -> list[str]:
    return [str(moment - attempts[0]) for moment in attempts]


@pytest.fixture
def sms_provider_refuses(settings):
    """The HTTP SMS backend pointed at a port of 127.0.0.1 where nobody listens."""
    settings.SMS_BACKEND, settings.SMS_HTTP_URL = "http", f"http://127.0.0.1:{_unused_port()}/v1/messages"


# JOB-5: the moments of the attempts after the first, for a provider that always refuses, with
# the jitter at its smallest and at its largest (+25 %): 30 s, 2 min, 10 min, 30 min, 2 h, then
# every 6 h. 24 h after the first attempt decide how many there are, not a count: the 9th is at
# 20:42:30 at the shortest waits, and would be at 25:53:07.5 at the longest, so is not made.
SHORTEST_WAITS = ["0:00:00", "0:00:30", "0:02:30", "0:12:30", "0:42:30", "2:42:30", "8:42:30", "14:42:30",
                  "20:42:30"]  # fmt: skip
LONGEST_WAITS = ["0:00:00", "0:00:37.500000", "0:03:07.500000", "0:15:37.500000", "0:53:07.500000",
                 "3:23:07.500000", "10:53:07.500000", "18:23:07.500000"]  # fmt: skip


@pytest.mark.parametrize(("jitter", "expected"), [("low", SHORTEST_WAITS), ("high", LONGEST_WAITS)])
def test_definite_failures_are_retried_until_24_h_after_the_first_attempt_then_fail_with_one_alert(
    org, queued, sms_provider_refuses, monkeypatch, time_machine, django_capture_on_commit_callbacks,
    jitter, expected,
):  # fmt: skip
    monkeypatch.setattr(
        notify, "random", SimpleNamespace(uniform=lambda low, high: low if jitter == "low" else high)
    )
    row = _one_sms_row(org, django_capture_on_commit_callbacks)

    attempts = _send_until_settled(row, time_machine)

    assert _offsets(attempts) == expected
    assert attempts[-1] <= attempts[0] + dt.timedelta(hours=24)
    assert (row.status, row.attempts) == (N.FAILED, len(expected))
    assert f"gave up after {len(expected)} attempts in 24 h" in row.last_error
    assert "Could not connect to the SMS provider" in row.last_error
    # Dead for good: the sweep queues it no more, a late job sends nothing, one alert stays.
    time_machine.move_to(attempts[0] + dt.timedelta(hours=30), tick=False)
    queued.clear()
    notify.notifications_sweep()
    assert row.pk not in queued and notify.notification_send(notification_id=row.pk) == ""
    [alert] = Alert.objects.filter(kind=Alert.Kind.NOTIFICATION)
    assert alert.key == f"notification:{row.pk}" and "could not be sent" in alert.message
    assert alert.raised_at == attempts[-1]


@pytest.mark.parametrize("failure", ["refused", "429"])
def test_the_real_jitter_keeps_each_wait_within_25_percent_and_every_attempt_within_24_h(
    org, settings, provider, queued, time_machine, django_capture_on_commit_callbacks, failure
):
    settings.SMS_BACKEND, settings.SMS_HTTP_URL = "http", provider
    if failure == "refused":
        settings.SMS_HTTP_URL = f"http://127.0.0.1:{_unused_port()}/v1/messages"
    _Provider.answers = [(429, b'{"error": "slow down"}', 0)] * 20
    row = _one_sms_row(org, django_capture_on_commit_callbacks)

    attempts = _send_until_settled(row, time_machine)

    waits = [later - earlier for earlier, later in zip(attempts, attempts[1:], strict=False)]
    bases = [notify.BACKOFF[min(n, len(notify.BACKOFF) - 1)] for n in range(len(waits))]
    assert all(base <= wait <= base * 1.25 for base, wait in zip(bases, waits, strict=True)), waits
    assert len(attempts) in (8, 9) and attempts[-1] <= attempts[0] + dt.timedelta(hours=24)
    # The attempt not made would have come after the 24 h (its wait is 6 h at least).
    assert attempts[-1] + dt.timedelta(hours=6 * 1.25) > attempts[0] + dt.timedelta(hours=24)
    assert row.status == N.FAILED and Alert.objects.filter(key=f"notification:{row.pk}").count() == 1
    assert len(_Provider.seen) == (len(attempts) if failure == "429" else 0)


@pytest.mark.parametrize("failure", ["500", "timeout"])
def test_an_sms_provider_that_always_answers_ambiguously_is_tried_once_then_failed_with_an_alert(
    org, settings, provider, queued, time_machine, django_capture_on_commit_callbacks, failure
):
    # It may have the message (5xx, no answer after sending): SMS and e-mail are never re-sent.
    settings.SMS_BACKEND, settings.SMS_HTTP_URL, settings.SMS_HTTP_TIMEOUT = "http", provider, 0.2
    _Provider.answers = [(500, b"{}", 0) if failure == "500" else (200, b"{}", 1.0)] * 20
    row = _one_sms_row(org, django_capture_on_commit_callbacks)

    attempts = _send_until_settled(row, time_machine)

    assert len(attempts) == 1 and len(_Provider.seen) == 1
    assert (row.status, row.attempts) == (N.FAILED, 1) and "Not sent again" in row.last_error
    assert Alert.objects.filter(key=f"notification:{row.pk}").count() == 1


def test_an_email_to_a_refusing_mail_server_follows_the_same_schedule(
    org, settings, queued, monkeypatch, time_machine, django_capture_on_commit_callbacks
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", _unused_port(), 2
    monkeypatch.setattr(notify, "random", SimpleNamespace(uniform=lambda low, high: low))
    row = _one_sms_row(org, django_capture_on_commit_callbacks, channel="email")

    attempts = _send_until_settled(row, time_machine)

    assert _offsets(attempts) == SHORTEST_WAITS
    assert row.status == N.FAILED and "refused" in row.last_error
    assert Alert.objects.filter(key=f"notification:{row.pk}").count() == 1


def test_a_retry_that_would_fall_in_quiet_hours_waits_for_their_end(
    org, queued, sms_provider_refuses, monkeypatch, time_machine, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(notify, "random", SimpleNamespace(uniform=lambda low, high: low))
    time_machine.move_to(at(10), tick=False)
    row = _one_sms_row(org, django_capture_on_commit_callbacks)
    TrackingSettings.objects.filter(organization=org).update(quiet_from=dt.time(21), quiet_until=dt.time(8))

    attempts = _send_until_settled(row, time_machine)

    # The 6 h retry due at 00:42 waits until 08:00; the next (14:00) would be past the 24 h.
    assert _offsets(attempts) == [*SHORTEST_WAITS[:7], "22:00:00"]
    assert all(dt.time(8) <= moment.astimezone(BERLIN).time() < dt.time(21) for moment in attempts)
    assert row.status == N.FAILED


def test_the_24_h_run_from_the_first_attempt_not_from_when_the_row_was_made(
    org, queued, sms_provider_refuses, monkeypatch, time_machine, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(notify, "random", SimpleNamespace(uniform=lambda low, high: low))
    row = _one_sms_row(org, django_capture_on_commit_callbacks)
    made = at(10) - dt.timedelta(hours=10)  # e.g. held through the night's quiet hours
    Notification.objects.filter(pk=row.pk).update(created_at=made)

    attempts = _send_until_settled(row, time_machine)

    assert _offsets(attempts) == SHORTEST_WAITS
    assert attempts[-1] > made + dt.timedelta(hours=24)


def test_a_definite_failure_then_success_sends_once_more(org, queued, django_capture_on_commit_callbacks):
    row = _one_sms_row(org, django_capture_on_commit_callbacks)
    FakeSms.script = [SendError("429 too many requests", ambiguous=False)]
    notify.notification_send(notification_id=row.pk, now=at(10))
    row.refresh_from_db()

    assert notify.notification_send(notification_id=row.pk, now=row.not_before) == N.SENT
    row.refresh_from_db()
    assert (row.status, row.attempts, row.provider_id) == (N.SENT, 2, "fake-2")


def test_an_ambiguous_failure_is_not_sent_again(org, queued, django_capture_on_commit_callbacks):
    row = _one_sms_row(org, django_capture_on_commit_callbacks)
    FakeSms.script = [SendError("timed out after sending", ambiguous=True)]

    assert notify.notification_send(notification_id=row.pk) == N.FAILED
    notify.notifications_sweep(now=at(12))
    assert notify.notification_send(notification_id=row.pk, now=at(12)) == ""

    row.refresh_from_db()
    assert row.status == N.FAILED and "Not sent again" in row.last_error
    assert len(FakeSms.calls) == 1
    assert Alert.objects.filter(key=f"notification:{row.pk}").exists()


def test_a_row_abandoned_mid_send_is_failed_not_resent(org, queued, django_capture_on_commit_callbacks):
    row = _one_sms_row(org, django_capture_on_commit_callbacks)
    # A worker claimed it and was killed before it could record the outcome.
    Notification.objects.filter(pk=row.pk).update(
        status=N.SENDING, attempts=1, not_before=at(10) + notify.SENDING_LEASE
    )

    assert notify.notifications_sweep(now=at(10, 4))["abandoned"] == 0
    assert notify.notifications_sweep(now=at(10, 6))["abandoned"] == 1

    row.refresh_from_db()
    assert row.status == N.FAILED and "may have gone out" in row.last_error
    assert FakeSms.calls == []


@pytest.mark.parametrize(
    ("sms", "email", "lease", "refusal"),
    [
        ("10", "5", "10", "than SMS_HTTP_TIMEOUT (10 s)"),
        ("10", "5", "11", None),
        ("10", "300", "300", "than EMAIL_TIMEOUT (300 s)"),
        ("10", "299", "300", None),
    ],
)
def test_the_settings_refuse_a_sending_lease_not_longer_than_a_provider_timeout(
    settings, sms, email, lease, refusal
):
    env = {**os.environ, "SMS_HTTP_TIMEOUT": sms, "EMAIL_TIMEOUT": email}
    env["NOTIFICATION_SENDING_LEASE_SECONDS"] = lease
    result = subprocess.run(
        [sys.executable, "-c", "import config.settings"],
        cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert (result.returncode == 0) is (refusal is None), result.stderr
    if refusal:
        assert f"NOTIFICATION_SENDING_LEASE_SECONDS ({lease} s) must be longer {refusal}" in result.stderr


def test_smtp_waits_for_the_mail_server_a_bounded_time(settings):
    from django.core.mail import get_connection

    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    assert get_connection().timeout == settings.EMAIL_TIMEOUT == 30


# --- A retry must not tell stale news ----------------------------------------------------------------


def test_an_arriving_soon_retried_after_the_stop_was_completed_is_skipped_not_sent(
    org, queued, django_capture_on_commit_callbacks
):
    TrackingSettings.objects.create(
        organization=org, channels={"out_for_delivery": [], "arriving_soon": ["sms"]}, arriving_soon_stops=0
    )
    stops = start(make_route(org, n=1), django_capture_on_commit_callbacks)
    notify.notifications_sweep(now=at(10))
    row = Notification.objects.get(event="arriving_soon")
    FakeSms.script = [SendError("connection refused", ambiguous=False)]
    assert notify.notification_send(notification_id=row.pk, now=at(10)) == N.PENDING
    deliver(stops[0])

    assert notify.notification_send(notification_id=row.pk, now=at(20)) == N.SKIPPED
    row.refresh_from_db()
    assert "out of date" in row.last_error and len(FakeSms.calls) == 1


def test_an_out_for_delivery_retried_after_its_visit_failed_and_a_reattempt_started_is_skipped(
    org, queued, django_capture_on_commit_callbacks
):
    # The order is out for delivery again, on another route: only the new visit's message goes.
    TrackingSettings.objects.create(organization=org, channels={"out_for_delivery": ["sms"], "failed": []})
    [first] = start(make_route(org, n=1), django_capture_on_commit_callbacks)
    old = Notification.objects.get()
    FakeSms.script = [SendError("connection refused", ambiguous=False)]
    assert notify.notification_send(notification_id=old.pk, now=at(10)) == N.PENDING
    services.stop_transition(stop=first, to=Stop.Status.FAILED, by=None, reason="Nobody home")
    again = RouteFactory(organization=org, depot=first.route.depot, date=DAY)
    StopFactory(route=again, sequence=1, order=first.order, planned_arrival=at(16))
    with django_capture_on_commit_callbacks(execute=True):
        services.route_transition(route=again, to=Route.Status.PUBLISHED, by=None, at=at(13))
        services.route_transition(route=again, to=Route.Status.IN_PROGRESS, by=None, at=at(14))
    new = Notification.objects.exclude(pk=old.pk).get()

    assert notify.notification_send(notification_id=old.pk, now=at(14, 5)) == N.SKIPPED
    assert notify.notification_send(notification_id=new.pk, now=at(14, 5)) == N.SENT
    old.refresh_from_db()
    assert old.last_error == "The visit is over; this message is out of date."
    assert [call["reference"] for call in FakeSms.calls] == [old.key, new.key]  # the failed try, the new one


def test_a_failed_visit_message_retried_after_a_reattempt_delivered_is_skipped(
    org, queued, django_capture_on_commit_callbacks
):
    # Sent while the re-attempt is under way it still informs; once delivered it would mislead.
    TrackingSettings.objects.create(organization=org, channels={"out_for_delivery": [], "failed": ["sms"]})
    [first] = start(make_route(org, n=1), django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        services.stop_transition(stop=first, to=Stop.Status.FAILED, by=None, reason="Nobody home")
    failed = Notification.objects.get(event="failed")
    FakeSms.script = [SendError("connection refused", ambiguous=False)]
    assert notify.notification_send(notification_id=failed.pk, now=at(11)) == N.PENDING
    again = RouteFactory(organization=org, depot=first.route.depot, date=DAY)
    second = StopFactory(route=again, sequence=1, order=first.order, planned_arrival=at(16))
    with django_capture_on_commit_callbacks(execute=True):
        services.route_transition(route=again, to=Route.Status.PUBLISHED, by=None, at=at(13))
        services.route_transition(route=again, to=Route.Status.IN_PROGRESS, by=None, at=at(14))
    deliver(second)

    assert notify.notification_send(notification_id=failed.pk, now=at(16, 30)) == N.SKIPPED
    failed.refresh_from_db()
    assert failed.last_error == "The order is delivered now; this message is out of date."
    assert [call["reference"] for call in FakeSms.calls] == [failed.key]  # only the failed try


# --- Arriving soon and delayed ---------------------------------------------------------------------


def test_arriving_soon_when_few_stops_or_minutes_away_once_per_stop(
    org, queued, django_capture_on_commit_callbacks
):
    TrackingSettings.objects.create(organization=org, arriving_soon_stops=1, arriving_soon_minutes=15)
    stops = start(make_route(org, n=4), django_capture_on_commit_callbacks)
    Stop.objects.filter(pk=stops[3].pk).update(eta=at(10, 10))  # the ETA engine says: 10 min

    notify.notifications_sweep(now=at(10))
    notify.notifications_sweep(now=at(10, 1))

    soon = Notification.objects.filter(event="arriving_soon")
    assert sorted(soon.values_list("stop__sequence", "channel")) == [(1, "sms"), (2, "sms"), (4, "sms")]
    assert soon.get(stop=stops[1]).payload["stops_before"] == 1


def test_delayed_only_past_the_threshold_and_at_most_once_per_interval(
    org, queued, django_capture_on_commit_callbacks
):
    TrackingSettings.objects.create(
        organization=org,
        arriving_soon_stops=0,
        arriving_soon_minutes=5,
        delay_minutes=15,
        delay_interval_minutes=30,
    )
    stops = start(make_route(org, n=2), django_capture_on_commit_callbacks)
    last = stops[1]  # planned 11:10, told 11:10 in "out for delivery"
    assert Notification.objects.get(stop=last, channel="email", event="out_for_delivery").payload["eta"]

    def sweep(eta, now):
        Stop.objects.filter(pk=last.pk).update(eta=eta)
        notify.notifications_sweep(now=now)
        return list(
            Notification.objects.filter(stop=last, event="delayed")
            .order_by("pk")
            .values_list("key", flat=True)
        )

    assert sweep(at(11, 20), at(10)) == []  # 10 min: under the threshold
    assert sweep(at(11, 30), at(10, 1)) == [f"order:{last.order_id}:delayed:email:stop:{last.pk}:1"]
    assert len(sweep(at(11, 50), at(10, 20))) == 1  # moved again, but within the interval
    assert len(sweep(at(11, 50), at(10, 40))) == 2  # 20 min from the last told (11:30)
    assert len(sweep(at(11, 55), at(11, 30))) == 2  # within 15 min of 11:50


# --- Channels: the HTTP SMS backend against a local server -------------------------------------------


class _Provider(http.server.BaseHTTPRequestHandler):
    answers: list[tuple[int, bytes, float]] = []
    seen: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        length = int(self.headers["Content-Length"])
        _Provider.seen.append({"headers": dict(self.headers), "body": json.loads(self.rfile.read(length))})
        status, body, delay = _Provider.answers.pop(0)
        time.sleep(delay)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def provider():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Provider)
    _Provider.answers, _Provider.seen = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/messages"
    server.shutdown()
    server.server_close()


def _backend(url, timeout=2.0):
    return HttpBackend(url=url, token="tok-123", sender="Doorstep", timeout=timeout)


def test_http_sms_backend_posts_json_with_the_token(provider):
    _Provider.answers = [(201, b'{"id": "msg-42"}', 0)]

    provider_id = _backend(provider).send(to="+4917000001", body="Hello & bye", reference="order:1:x:sms")

    assert provider_id == "msg-42"
    [request] = _Provider.seen
    assert request["body"] == {
        "from": "Doorstep",
        "to": "+4917000001",
        "body": "Hello & bye",
        "reference": "order:1:x:sms",
    }
    assert request["headers"]["Authorization"] == "Bearer tok-123"
    assert request["headers"]["Idempotency-Key"] == "order:1:x:sms"


@pytest.mark.parametrize(
    ("status", "ambiguous"), [(500, True), (503, True), (400, False), (401, False), (429, False)]
)
def test_http_sms_backend_classifies_provider_errors(provider, status, ambiguous):
    _Provider.answers = [(status, b'{"error": "nope"}', 0)]
    with pytest.raises(SendError) as error:
        _backend(provider).send(to="+491", body="x", reference="r")
    assert error.value.ambiguous is ambiguous and str(status) in str(error.value)


def test_http_sms_backend_timeout_after_sending_is_ambiguous(provider):
    _Provider.answers = [(200, b"{}", 1.0)]
    with pytest.raises(SendError) as error:
        _backend(provider, timeout=0.2).send(to="+491", body="x", reference="r")
    assert error.value.ambiguous is True and len(_Provider.seen) == 1


def test_http_sms_backend_connection_refused_is_definite(provider):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SendError) as error:
        _backend(f"http://127.0.0.1:{port}/").send(to="+491", body="x", reference="r")
    assert error.value.ambiguous is False


def test_an_sms_through_the_http_backend_ends_sent_with_the_providers_id(
    org, settings, provider, queued, django_capture_on_commit_callbacks
):
    settings.SMS_BACKEND, settings.SMS_HTTP_URL, settings.SMS_HTTP_TOKEN = "http", provider, "tok-123"
    row = _one_sms_row(org, django_capture_on_commit_callbacks)
    _Provider.answers = [(500, b"{}", 0)]

    assert notify.notification_send(notification_id=row.pk) == N.FAILED  # 5xx: ambiguous
    row.refresh_from_db()
    assert "500" in row.last_error and len(_Provider.seen) == 1


# --- The order page's message log ------------------------------------------------------------


def test_order_page_loads_the_message_log(
    client, org, dispatcher, queued, django_capture_on_commit_callbacks
):
    stops = start(make_route(org, n=1, recipient_phone="+49 170 5550123"), django_capture_on_commit_callbacks)
    order = stops[0].order
    FakeSms.script = [SendError("gateway said no", ambiguous=False)]
    send_all(channel="sms")
    client.force_login(dispatcher)

    page = client.get(order.get_absolute_url()).content.decode()
    url = reverse("tracking:order_messages", args=[order.pk])
    assert f'hx-get="{url}"' in page
    log = client.get(url, headers=HTMX).content.decode()
    assert "<html" not in log and "+491705550123" in log and "gateway said no" in log
    assert "c0@example.com" in log and "Pending" in log


def test_message_log_is_for_the_orders_organisation_only(client, org, other_dispatcher, driver):
    order = OrderFactory(organization=org)
    url = reverse("tracking:order_messages", args=[order.pk])
    client.force_login(other_dispatcher)
    assert client.get(url).status_code == 404
    client.force_login(driver.user)
    assert client.get(url).status_code == 403


def test_sweep_task_is_thin_and_safe_to_run_twice(org, queued):
    from tracking.tasks import send_notification, sweep_notifications

    assert sweep_notifications()["made"] == 0
    assert send_notification(123456) == ""
