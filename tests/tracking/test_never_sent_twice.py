"""JOB-6 "never sent twice", as a property over failure sequences (RELIABILITY.md JOB-6).

One outbox row per example — an SMS, an e-mail or a webhook delivery — goes through the real
tracking.notifications.notification_send, retried with the clock fast-forwarded (time-machine)
until it settles. Only the transport is fake: the SMS backend (settings.SMS_BACKEND), Django's
e-mail backend (settings.EMAIL_BACKEND) and the webhook HTTP call (tracking.webhook_http.post).
Hypothesis draws what the provider answers on each attempt, and what else happens:

- answers: success; definite failures (connection refused, 4xx, 429: nothing was delivered);
  ambiguous ones (timeout after sending, 5xx: it may have been delivered); the worker killed
  after the provider took the message (the row stays `sending` until the sweep settles it);
- while the provider is answering: a second worker runs the same job, or the provider is so slow
  that the lease runs out and the minute sweep (notifications_sweep, clock moved on) settles the
  row as abandoned;
- between attempts: a job that runs too early, the sweep, the same job run twice.

Invariants: every row ends sent, failed or skipped, never stuck; SMS and e-mail reach the
provider at most once, and never again after an ambiguous outcome; definite failures are
retried until the attempts are used up; a webhook is delivered more than once only after an
ambiguous outcome (RESEND_AFTER_AMBIGUOUS: the receiver de-duplicates by webhook-id, which is the
same on every attempt, with the same body). That class is counted and printed (`-s`).
"""

import datetime as dt
import os
import smtplib
from collections import Counter
from dataclasses import dataclass, field

import pytest
from django.core.mail.backends.base import BaseEmailBackend
from django.db import connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import OrderFactory
from tracking import notifications as notify
from tracking import webhook_http, webhooks
from tracking.links import tracking_link_ensure
from tracking.models import Notification, WebhookEndpoint
from tracking.sms import SendError

pytestmark = [pytest.mark.django_db]

N = Notification.Status
T0 = dt.datetime(2026, 11, 24, 9, 0, tzinfo=dt.UTC)
# Per channel. Each example runs the real send path (~50 queries), about 0.1 s of CPU: CI runs
# 120 a channel on SQLite (~40 s) and 40 on PostgreSQL, whose own part (the claim's conditional
# UPDATE under real concurrency) tests/integration/test_notifications_race.py covers;
# JOB6_EXAMPLES=350 is the 1,050-example run (docs/notifications.md).
EXAMPLES = int(os.environ.get("JOB6_EXAMPLES", 120 if connection.vendor == "sqlite" else 40))
DEFINITE = ("refused", "4xx", "429")
AMBIGUOUS = ("timeout", "5xx")
KILLED = "killed"  # the provider took the message, then the worker died before recording it
# The provider may hold the message after these (worst case: an ambiguous outcome delivered).
RECEIVED = {"ok", *AMBIGUOUS, KILLED}
POOLS = {
    "flaky": ("ok", *DEFINITE, *AMBIGUOUS, KILLED),
    "down": (*DEFINITE * 3, "ok", *AMBIGUOUS, KILLED),  # long runs of definite failures
}
DURING = ("none", "none", "none", "second_worker", "lease_expired")
BETWEEN = ("send", "send", "send", "early_job", "sweep", "job_twice")
MAX_STEPS = 60


class WorkerKilled(BaseException):
    """Escapes notification_send like SIGKILL would: nothing after the provider call runs."""


@dataclass
class Call:
    outcome: str
    during: str
    ref: str
    body: str
    at: dt.datetime

    @property
    def received(self) -> bool:
        return self.outcome in RECEIVED

    @property
    def ambiguous(self) -> bool:
        # A lease that ran out mid-call is settled as "may have gone out", like a timeout.
        return self.outcome != "ok" and self.received or self.during == "lease_expired"


@dataclass
class Provider:
    """One example's fake provider: answers drawn by hypothesis, every call recorded."""

    data: st.DataObject | None = None
    pool: tuple[str, ...] = ()
    row_id: int = 0
    clock: dt.datetime = T0
    travel: object = None
    calls: list[Call] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    nested: int = 0

    def reset(self, data: st.DataObject) -> None:
        self.data, self.calls, self.violations, self.nested, self.clock = data, [], [], 0, T0
        self.travel.move_to(T0, tick=False)

    def move(self, to: dt.datetime) -> None:
        self.clock = max(self.clock, to)
        self.travel.move_to(self.clock, tick=False)

    def answer(self, ref: str, body: str) -> str:
        """Draw this attempt's outcome, let something else happen meanwhile, return the outcome."""
        # Checks made in here are recorded, not raised: notification_send would catch them as
        # an "unexpected error" of the provider and the test would never see them.
        if self.nested:  # a nested job must never get here: the row is claimed
            self.violations.append("a second worker reached the provider while the first was sending")
        outcome = self.data.draw(st.sampled_from(self.pool), label="answer")
        during = self.data.draw(st.sampled_from(DURING), label="meanwhile")
        self.calls.append(Call(outcome, during, ref, body, self.clock))
        if during == "second_worker":
            self.nested += 1
            try:
                if notify.notification_send(notification_id=self.row_id) != "":
                    self.violations.append("a second worker sent a row another worker had claimed")
            finally:
                self.nested -= 1
        elif during == "lease_expired":
            self.move(self.clock + notify.SENDING_LEASE + dt.timedelta(seconds=1))
            notify.notifications_sweep()
        if outcome == KILLED:
            raise WorkerKilled
        return outcome


PROVIDER = Provider()


class ScriptedSms:
    """settings.SMS_BACKEND: answers as tracking.sms.HttpBackend classifies a provider's."""

    def send(self, *, to: str, body: str, reference: str) -> str:
        outcome = PROVIDER.answer(reference, body)
        if outcome == "ok":
            return f"sms-{len(PROVIDER.calls)}"
        if outcome in DEFINITE:
            raise SendError(f"provider said {outcome}", ambiguous=False)
        raise SendError(f"provider {outcome} after sending", ambiguous=True)


class ScriptedEmailBackend(BaseEmailBackend):
    """settings.EMAIL_BACKEND: raises what smtplib raises for each outcome."""

    def send_messages(self, email_messages):
        for message in email_messages:
            outcome = PROVIDER.answer(message.extra_headers["Message-ID"], message.body)
            if outcome == "refused":
                raise ConnectionRefusedError(111, "Connection refused")
            if outcome == "4xx":
                raise smtplib.SMTPRecipientsRefused({message.to[0]: (450, b"mailbox busy")})
            if outcome == "429":
                raise smtplib.SMTPSenderRefused(421, b"too many messages, slow down", message.from_email)
            if outcome == "timeout":
                raise TimeoutError("timed out waiting for the answer to DATA")
            if outcome == "5xx":  # SMTP's "no verdict": the connection dropped after DATA
                raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
        return len(email_messages)


def scripted_post(url, *, body, headers, timeout, allow_private):
    """tracking.webhook_http.post: the endpoint's answer, or no answer."""
    outcome = PROVIDER.answer(headers["webhook-id"], body.decode())
    if outcome == "refused":
        raise webhook_http.PostError("Could not connect: refused", sent=False)
    if outcome == "timeout":
        raise webhook_http.PostError("No answer after sending (timed out).", sent=True)
    status = {"ok": 200, "4xx": 400, "429": 429, "5xx": 503}[outcome]
    return webhook_http.Answer(status=status, body=b"", ms=5)


@pytest.fixture
def world(org, settings, monkeypatch, time_machine):
    settings.SMS_BACKEND = "tests.tracking.test_never_sent_twice.ScriptedSms"
    settings.EMAIL_BACKEND = "tests.tracking.test_never_sent_twice.ScriptedEmailBackend"
    settings.WEBHOOK_RETRY_HOURS = 3  # so that runs of failures reach the end of the schedule
    monkeypatch.setattr(webhook_http, "post", scripted_post)
    # Queued jobs are what this test drives by hand.
    monkeypatch.setattr(notify, "async_task", lambda *args, **kwargs: None)
    monkeypatch.setattr(webhooks, "async_task", lambda *args, **kwargs: None)
    time_machine.move_to(T0, tick=False)
    order = OrderFactory(organization=org, status="out_for_delivery", recipient_email="ada@example.com")
    tracking_link_ensure(order=order)
    endpoint = WebhookEndpoint.objects.create(
        organization=org, url="https://hooks.example.com/doorstep", secret=webhooks.secret_new()
    )
    PROVIDER.travel = time_machine
    return {"order": order, "endpoint": endpoint}


def make_row(channel: str, world: dict) -> Notification:
    order = world["order"]
    if channel == "webhook":
        [row] = webhooks.deliveries_create(
            organization_id=order.organization_id, event="test", event_type="webhook.test",
            occurrence="job-6", data={"n": 1}, at=T0,
            endpoints=WebhookEndpoint.objects.filter(pk=world["endpoint"].pk),
        )  # fmt: skip
        return row
    return Notification.objects.create(
        organization_id=order.organization_id, order=order, event="out_for_delivery",
        channel=channel, key=f"job-6:{channel}", created_at=T0,
        recipient="+4915100000001" if channel == "sms" else "ada@example.com",
    )  # fmt: skip


def send(row_id: int) -> str | None:
    """One run of the job; None if the worker was killed mid-send."""
    try:
        return notify.notification_send(notification_id=row_id)
    except WorkerKilled:
        return None


def drive(data: st.DataObject, row: Notification) -> Notification:
    """Run the job, the sweep and the clock until the row settles; return it settled."""
    for _step in range(MAX_STEPS):
        row.refresh_from_db()
        if row.status in (N.SENT, N.FAILED, N.SKIPPED):
            return row
        if row.status == N.SENDING:  # a killed worker's row: the sweep takes it after the lease
            PROVIDER.move(row.not_before + dt.timedelta(seconds=1))
            notify.notifications_sweep()
            continue
        assert row.status == N.PENDING, row.status
        action = data.draw(st.sampled_from(BETWEEN), label="between")
        due = row.not_before or PROVIDER.clock
        if action == "early_job" and due > PROVIDER.clock:
            calls = len(PROVIDER.calls)
            PROVIDER.move(due - dt.timedelta(seconds=1))
            assert send(row.pk) == "", "a job before the back-off ended sent"
            assert len(PROVIDER.calls) == calls
        PROVIDER.move(due)
        if action == "sweep":
            notify.notifications_sweep()
            continue
        send(row.pk)
        if action == "job_twice":
            calls = len(PROVIDER.calls)
            row.refresh_from_db()
            # Nothing is due again, unless the first run was killed or lost its lease mid-call
            # (then a webhook is due at once, to be sent again with the same webhook-id).
            due_again = row.status == N.PENDING and row.not_before <= PROVIDER.clock
            if row.status != N.SENDING and not due_again:
                assert send(row.pk) == ""
                assert len(PROVIDER.calls) == calls
    raise AssertionError(f"row still {row.status} after {MAX_STEPS} steps: {PROVIDER.calls}")


def check(channel: str, row: Notification, calls: list[Call], stats: Counter) -> None:
    """The JOB-6 invariants of one settled row."""
    assert not PROVIDER.violations, PROVIDER.violations
    assert calls or row.status == N.SKIPPED, "settled without a single attempt"
    received = [call for call in calls if call.received]
    if channel == "webhook":
        # Every attempt is the same message: one webhook-id, one body (receivers de-duplicate).
        assert len({call.ref for call in calls}) == 1 and {call.ref for call in calls} == {row.webhook_id}
        assert len({call.body for call in calls}) == 1
        # Sent again after a success only when that success was lost to a lease that ran out.
        for call in calls[:-1]:
            assert call.outcome != "ok" or call.during == "lease_expired", calls
        if len(received) > 1:
            assert any(call.ambiguous for call in calls[:-1]), calls
            stats["webhook delivered more than once (ambiguous class)"] += 1
            stats["webhook extra deliveries"] += len(received) - 1
    else:
        # At most one message reaches the provider; after an ambiguous outcome, no attempt more.
        assert len(received) <= 1, calls
        for call in calls[:-1]:
            assert call.outcome in DEFINITE and call.during != "lease_expired", calls
        assert len(calls) <= notify.MAX_ATTEMPTS
        if calls and calls[-1].ambiguous:
            stats[f"{channel} ambiguous, not resent"] += 1
    last = calls[-1] if calls else None
    if row.status == N.SENT:
        assert last.outcome == "ok" and last.during != "lease_expired", calls
    elif row.status == N.FAILED and channel != "webhook" and last.outcome in DEFINITE:
        # Used up its 24 h (the next wait, however jittered, would have ended past them),
        # unless the sweep settled it mid-call (a lost lease).
        wait = notify.BACKOFF[min(len(calls), len(notify.BACKOFF)) - 1] * 1.25
        assert last.at + wait > calls[0].at + notify.RETRY_PERIOD or last.during == "lease_expired", calls
    if channel != "webhook" and last and last.outcome == "ok" and last.during != "lease_expired":
        assert row.status == N.SENT
    stats[f"{channel} {row.status}"] += 1
    stats["examples"] += 1


@pytest.mark.parametrize("channel", ["sms", "email", "webhook"])
def test_no_failure_sequence_sends_twice_or_leaves_a_row_stuck(channel, world):
    stats: Counter = Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,  # no .hypothesis/ directory in the repository
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(data=st.data())
    def run(data):
        with transaction.atomic():  # each example starts from the same database
            PROVIDER.reset(data)
            PROVIDER.pool = POOLS[data.draw(st.sampled_from(sorted(POOLS)), label="provider")]
            row = make_row(channel, world)
            PROVIDER.row_id = row.pk
            check(channel, drive(data, row), PROVIDER.calls, stats)
            transaction.set_rollback(True)

    run()
    print(f"\nJOB-6 {channel}: {dict(sorted(stats.items()))}")
    assert stats["examples"] >= EXAMPLES * 0.9
    # The generator reaches every ending, or the property says little.
    assert stats[f"{channel} sent"] and stats[f"{channel} failed"], stats
