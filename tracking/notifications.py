"""Messages to customers through the outbox (tracking.models.Notification). Writes, like services.

Every outgoing message is a Notification row first, with a unique `key`
(order, event, channel[, occurrence]); rows are made with get_or_create, so a replayed event,
a retried job or two workers racing find the row already there. Then:

    made:     pending | held (quiet hours, until not_before) | skipped (opted out, no address)
    sweep:    held → pending when the quiet hours end
    sending:  pending → sending (conditional UPDATE: one worker wins) → sent
              | pending again (definite failure: attempts + 1, not_before = back-off)
              | failed (the next attempt would be over RETRY_PERIOD after the first, or an
                ambiguous outcome, which SMS/e-mail never repeat)

While a row is `sending`, `not_before` is the end of its lease (SENDING_LEASE): a row still
sending after it belongs to a worker that died mid-send, and is treated like an ambiguous
failure (JOB-6).

Where the rows come from:
- dispatch's StopEvents (out for delivery, delivered / picked up, failed): the receiver of
  dispatch.signals.stop_event_recorded calls notifications_for_event at once; the minute sweep
  claims every event it missed through StopEvent.notified_at (a conditional UPDATE in the same
  transaction as the rows, so an event is either claimed with its rows or not at all);
- the minute sweep (notifications_sweep): arriving soon and delayed, from the routes in progress.

Text is rendered when the message is sent (the link, the ETA and the wording are then current):
templates/tracking/notices/<event>_subject.txt, _body.txt, _body.html, or the organisation's
override TrackingSettings.templates["<event>.<channel>.<part>"] (part: subject, body, html).
Sending is queued with django_q.tasks.async_task("tracking.tasks.send_notification", id) after
commit.
"""

import logging
import random
import smtplib
import socket
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime, time, timedelta
from email.utils import make_msgid
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.db.models import F, Q, QuerySet, Value
from django.db.models.functions import Coalesce
from django.template import Context, Template, TemplateSyntaxError
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django_q.tasks import async_task

from dispatch.models import Order, Route, Stop, StopEvent
from pod.services import proof_requirements
from tracking import sms, staff_mail, webhooks
from tracking.alerts import alert_raise
from tracking.links import link_token, link_url, settings_for, tracking_link_ensure
from tracking.models import Alert, Notification, NotificationOptOut, TrackingSettings
from tracking.sms import SendError

logger = logging.getLogger(__name__)

E = Notification.Event
C = Notification.Channel
N = Notification.Status

# Which channels each event goes out on when an organisation has not chosen
# (TrackingSettings.channels {event: [channel, ...]}; an empty list switches an event off).
NOTIFICATION_DEFAULTS: dict[str, list[str]] = {
    E.OUT_FOR_DELIVERY: [C.EMAIL, C.SMS],
    E.ARRIVING_SOON: [C.SMS],
    E.DELIVERED: [C.EMAIL],
    E.FAILED: [C.EMAIL, C.SMS],
    E.DELAYED: [C.EMAIL],
}
# Wait before attempt 2, 3, …; the last wait repeats. Each gets up to +25 % jitter so a provider
# outage does not end in every retry arriving at the same second.
BACKOFF = (
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=10),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=6),
)
# SMS and e-mail are retried for this long from their first attempt (RELIABILITY.md JOB-5): an
# attempt that would come later is not made, the row ends failed with an alert. Counted from the
# first attempt, not from when the row was made, so a row held for quiet hours gets its full day.
RETRY_PERIOD = timedelta(hours=24)


def _most_attempts(period: timedelta) -> int:
    attempts, elapsed = 1, timedelta(0)
    while elapsed + BACKOFF[min(attempts, len(BACKOFF)) - 1] <= period:
        elapsed += BACKOFF[min(attempts, len(BACKOFF)) - 1]
        attempts += 1
    return attempts


# The most attempts RETRY_PERIOD holds (every wait at its shortest): 9. Only a bound, which
# tests read: the clock decides when to stop, and with jitter a row may get one attempt fewer.
MAX_ATTEMPTS = _most_attempts(RETRY_PERIOD)
# A row still `sending` this long after its claim was left by a worker that died.
# config.settings refuses a lease not longer than SMS_HTTP_TIMEOUT.
SENDING_LEASE = timedelta(seconds=settings.NOTIFICATION_SENDING_LEASE_SECONDS)
# The receiver gets the first go at a new event; the sweep takes what is older than this.
SWEEP_GRACE = timedelta(seconds=30)
# Events older than this when first seen (a restored backup, a long outage) are claimed without
# a message: "out for delivery" a day late helps nobody.
EVENT_MAX_AGE = timedelta(hours=12)
# Channels that may be re-sent after an ambiguous outcome: only those whose receiver
# de-duplicates by a stable id. SMS and e-mail never are; webhooks (webhook-id) always are, by
# tracking.webhooks.webhook_delivery_send and webhook_delivery_abandoned.
RESEND_AFTER_AMBIGUOUS: set[str] = {C.WEBHOOK}
# Alert.kind of "a message could not be sent": acknowledging it resolves it.
ALERT_KIND = Alert.Kind.NOTIFICATION
# The first word of an inbound SMS that opts the sender out.
STOP_WORDS = {"STOP", "STOPALL", "STOPP", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "ARRET"}

OPEN_STOP_STATUSES = (Stop.Status.PENDING, Stop.Status.EN_ROUTE, Stop.Status.ARRIVED)
# Messages about the way to the customer: pointless once the order has moved on.
EN_ROUTE_EVENTS = (E.OUT_FOR_DELIVERY, E.ARRIVING_SOON, E.DELAYED)
# Rows that count as "told the customer" when looking for the last ETA a message carried.
TOLD = (N.PENDING, N.HELD, N.SENDING, N.SENT, N.SKIPPED)


# --- Choosing channels, recipients and quiet hours -------------------------------------------


def channels_for(options: TrackingSettings, event: str) -> list[str]:
    """The channels `event` goes out on for this organisation, each once, senders only."""
    chosen = (options.channels or {}).get(event)
    if not isinstance(chosen, list):
        chosen = NOTIFICATION_DEFAULTS.get(event, [])
    # Webhooks are not a customer channel: their rows are per endpoint (tracking.webhooks).
    return [channel for channel in dict.fromkeys(chosen) if channel in SENDERS]


def _recipient(order: Order, channel: str) -> str:
    if channel == C.EMAIL:
        return order.recipient_email.strip()
    if channel == C.SMS:
        return sms.normalise_phone(order.recipient_phone)
    return ""


MISSING_RECIPIENT = {
    C.EMAIL: "No e-mail address on the order.",
    C.SMS: "No phone number on the order.",
}
OPTED_OUT = "The customer opted out of messages for this order."


def quiet_hours_end(options: TrackingSettings, tz: ZoneInfo, now: datetime) -> datetime | None:
    """When the organisation's quiet hours around `now` end (local zone), or None outside them.

    quiet_from 21:00, quiet_until 08:00 spans midnight; equal times mean no quiet hours."""
    start, end = options.quiet_from, options.quiet_until
    if start is None or end is None or start == end:
        return None
    local = timezone.localtime(now, tz)
    moment = local.time().replace(tzinfo=None)
    if start < end:
        inside, day = start <= moment < end, local.date()
    else:
        inside = moment >= start or moment < end
        day = local.date() if moment < end else local.date() + timedelta(days=1)
    if not inside:
        return None
    # In a DST gap zoneinfo reads the wall time with the earlier offset: a valid instant anyway.
    return datetime.combine(day, _plain(end), tzinfo=tz).astimezone(ZoneInfo("UTC"))


def _plain(moment: time) -> time:
    return moment.replace(tzinfo=None)


# --- Making rows -------------------------------------------------------------------------------


def notification_key(*, order_id: int, event: str, channel: str, occurrence: str = "") -> str:
    return f"order:{order_id}:{event}:{channel}" + (f":{occurrence}" if occurrence else "")


def notifications_create(
    *,
    order: Order,
    event: str,
    occurrence: str = "",
    stop: Stop | None = None,
    payload: dict[str, Any] | None = None,
    now: datetime | None = None,
    options: TrackingSettings | None = None,
) -> list[Notification]:
    """Make the outbox rows of one event of an order, one per channel the organisation uses.

    Idempotent on the key: a row that exists is left as it is. Returns the rows made now. Queues
    the sending of every new pending row after commit."""
    now = now or timezone.now()
    options = options or settings_for(order.organization_id)
    opted_out = NotificationOptOut.objects.filter(order_id=order.pk).exists()
    held_until = quiet_hours_end(options, order.organization.tzinfo, now)
    made = []
    for channel in channels_for(options, event):
        recipient = _recipient(order, channel)
        status, reason, not_before = N.PENDING, "", None
        if opted_out:
            status, reason = N.SKIPPED, OPTED_OUT
        elif not recipient:
            status, reason = N.SKIPPED, MISSING_RECIPIENT.get(channel, "No recipient.")
        elif held_until is not None:
            status, not_before = N.HELD, held_until
        row, created = Notification.objects.get_or_create(
            key=notification_key(order_id=order.pk, event=event, channel=channel, occurrence=occurrence),
            defaults={
                "organization_id": order.organization_id,
                "order": order,
                "stop": stop,
                "event": event,
                "channel": channel,
                "recipient": recipient,
                "payload": payload or {},
                "status": status,
                "last_error": reason,
                "not_before": not_before,
                "created_at": now,
            },
        )
        if created:
            made.append(row)
    notifications_queue([row.pk for row in made if row.status == N.PENDING])
    if event in webhooks.LIVE_EVENT_TYPES:  # "order.arriving" / "order.delayed" for integrators
        webhooks.webhooks_for_live_event(
            order=order, event=event, occurrence=occurrence, stop=stop, payload=payload or {}, now=now
        )
    return made


def notifications_queue(ids: Iterable[int]) -> None:
    """Queue the sending of these rows once the current transaction commits (at once outside one).

    A task that is lost (the broker row rolled back, a crash before commit) is covered by the
    sweep, which queues every due row; a duplicate task finds the row claimed and does nothing."""
    for pk in ids:
        transaction.on_commit(lambda pk=pk: async_task("tracking.tasks.send_notification", pk))


def _visit(event: StopEvent) -> str:
    # A re-attempt is a new Stop: it gets its own "out for delivery" and "failed" messages.
    return f"stop:{event.stop_id}" if event.stop_id else f"event:{event.pk}"


def _eta_of(stop: Stop | None) -> datetime | None:
    if stop is None:
        return None
    return stop.eta or stop.planned_arrival


def _rows_for_event(event: StopEvent, now: datetime) -> list[Notification]:
    # Integrators hear of every event, late or not; the customer's messages follow below.
    webhooks.webhooks_for_stop_event(event, now=now)
    order = event.order
    stop = event.stop
    to = event.to_status
    if to == Order.Status.OUT_FOR_DELIVERY:
        if order.status != Order.Status.OUT_FOR_DELIVERY:
            return []  # seen late (the sweep), and the order has moved on already
        eta = _eta_of(stop)
        return notifications_create(
            order=order,
            event=E.OUT_FOR_DELIVERY,
            occurrence=_visit(event),
            stop=stop,
            payload={"event_id": event.pk, "eta": eta.isoformat() if eta else None},
            now=now,
        )
    if to in (Order.Status.DELIVERED, Order.Status.PICKED_UP):
        return notifications_create(
            order=order, event=E.DELIVERED, stop=stop, payload={"event_id": event.pk}, now=now
        )
    if to == Order.Status.FAILED:
        return notifications_create(
            order=order,
            event=E.FAILED,
            occurrence=_visit(event),
            stop=stop,
            payload={"event_id": event.pk, "reason": event.reason},
            now=now,
        )
    return []


def notifications_for_event(*, event_id: int, now: datetime | None = None) -> list[Notification]:
    """Claim one StopEvent and make its messages. Returns the rows made (none if another worker
    claimed the event first, or the event is not one customers are told about).

    The claim (StopEvent.notified_at) and the rows commit together: on an error neither stays."""
    now = now or timezone.now()
    with transaction.atomic():
        if StopEvent.objects.filter(pk=event_id, notified_at=None).update(notified_at=now) != 1:
            return []
        event = StopEvent.objects.select_related("order__organization", "stop").get(pk=event_id)
        return _rows_for_event(event, now)


# --- Arriving soon and delayed (the sweep) -------------------------------------------------------


def _live_stops(now: datetime) -> list[tuple[Stop, int, TrackingSettings]]:
    """(stop, open stops before it, organisation settings) for every open stop of every route in
    progress whose order is out for delivery. A fixed number of queries."""
    routes = (
        Route.objects.filter(status=Route.Status.IN_PROGRESS)
        .select_related("organization")
        .prefetch_related("stops__order__organization")
    )
    options: dict[int, TrackingSettings] = {}
    live = []
    for route in routes:
        if route.organization_id not in options:
            options[route.organization_id] = settings_for(route.organization_id)
        open_stops = sorted(
            (s for s in route.stops.all() if s.status in OPEN_STOP_STATUSES), key=lambda s: s.sequence
        )
        for before, stop in enumerate(open_stops):
            waiting = stop.status in (Stop.Status.PENDING, Stop.Status.EN_ROUTE)
            if waiting and stop.order.status == Order.Status.OUT_FOR_DELIVERY:
                live.append((stop, before, options[route.organization_id]))
    return live


def _told(rows: list[dict]) -> datetime | None:
    """The ETA of the newest message that carried one (a failed one told nobody)."""
    for row in sorted(rows, key=lambda r: r["created_at"], reverse=True):
        if row["status"] not in TOLD:
            continue
        eta = (row["payload"] or {}).get("eta")
        if eta:
            return datetime.fromisoformat(eta)
    return None


def notifications_live_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """Make the arriving-soon and delayed messages that are due now. Safe to run twice at once:
    a second run computes the same keys."""
    now = now or timezone.now()
    live = _live_stops(now)
    history: dict[int, list[dict]] = defaultdict(list)
    # The customer's messages only: webhook deliveries carry no ETA and count no occurrence.
    rows = Notification.objects.filter(stop_id__in=[stop.pk for stop, _, _ in live])
    rows = rows.exclude(channel=C.WEBHOOK)
    for row in rows.values("stop_id", "event", "status", "created_at", "payload"):
        history[row["stop_id"]].append(row)
    counts = {"arriving_soon": 0, "delayed": 0}
    for stop, before, options in live:
        past = history[stop.pk]
        events = {row["event"] for row in past}  # any status: one "arriving soon" per visit, ever
        soon = before <= options.arriving_soon_stops or (
            stop.eta is not None and stop.eta - now <= timedelta(minutes=options.arriving_soon_minutes)
        )
        if soon and E.ARRIVING_SOON not in events:
            eta = _eta_of(stop)
            counts["arriving_soon"] += bool(
                notifications_create(
                    order=stop.order,
                    event=E.ARRIVING_SOON,
                    occurrence=f"stop:{stop.pk}",
                    stop=stop,
                    payload={"stops_before": before, "eta": eta.isoformat() if eta else None},
                    now=now,
                    options=options,
                )
            )
            continue  # "arriving soon" carries the new ETA: no delay message on top of it
        if stop.eta is None:
            continue
        told = _told(past) or stop.planned_arrival
        if told is None or abs(stop.eta - told) <= timedelta(minutes=options.delay_minutes):
            continue
        delays = [row for row in past if row["event"] == E.DELAYED]
        interval = timedelta(minutes=options.delay_interval_minutes)
        if any(row["created_at"] > now - interval for row in delays):
            continue
        occurrence = len({(row["payload"] or {}).get("occurrence") for row in delays}) + 1
        counts["delayed"] += bool(
            notifications_create(
                order=stop.order,
                event=E.DELAYED,
                occurrence=f"stop:{stop.pk}:{occurrence}",
                stop=stop,
                payload={
                    "eta": stop.eta.isoformat(),
                    "previous_eta": told.isoformat(),
                    "occurrence": occurrence,
                },
                now=now,
                options=options,
            )
        )
    return counts


# --- The minute sweep ----------------------------------------------------------------------------


def notifications_sweep(*, now: datetime | None = None, limit: int = 500) -> dict[str, int]:
    """Every minute: claim the StopEvents the signal missed, make arriving-soon and delayed
    messages, release held rows whose quiet hours ended, settle rows abandoned mid-send, and
    queue every due row. Safe to run twice or in parallel. Returns counts."""
    now = now or timezone.now()
    counts = {"events": 0, "made": 0}
    counts["stale_events"] = StopEvent.objects.filter(
        notified_at=None, recorded_at__lt=now - EVENT_MAX_AGE
    ).update(notified_at=now)
    missed = StopEvent.objects.filter(notified_at=None, recorded_at__lte=now - SWEEP_GRACE).order_by("pk")
    for event_id in list(missed.values_list("pk", flat=True)[:limit]):
        try:
            made = notifications_for_event(event_id=event_id, now=now)
        except Exception:  # one bad event must not stop the others; it stays unclaimed
            logger.exception("Could not make the messages of stop event %s.", event_id)
            continue
        counts["events"] += 1
        counts["made"] += len(made)
    counts |= notifications_live_sweep(now=now)
    counts |= webhooks.webhook_route_sweep(now=now)
    counts["released"] = Notification.objects.filter(status=N.HELD, not_before__lte=now).update(
        status=N.PENDING
    )
    counts["abandoned"] = _settle_abandoned(now)
    due = (
        Notification.objects.filter(status=N.PENDING)
        .filter(Q(not_before__lte=now) | Q(not_before=None, created_at__lte=now - SWEEP_GRACE))
        .order_by("not_before", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    due = list(due)
    notifications_queue(due)
    counts["queued"] = len(due)
    return counts


def _settle_abandoned(now: datetime) -> int:
    """Rows left `sending` past their lease: the worker died between claiming and finishing, so
    the message may or may not have gone out (JOB-6)."""
    settled = 0
    for row in Notification.objects.filter(status=N.SENDING, not_before__lte=now).select_related("order"):
        reason = "The worker stopped while sending; the message may have gone out"
        if row.channel == C.WEBHOOK:
            settled += webhooks.webhook_delivery_abandoned(row, now=now)
        elif row.channel in RESEND_AFTER_AMBIGUOUS and (retry_at := _next_attempt(row, now)):
            settled += _retry(row, reason, retry_at)
        else:
            settled += _give_up(row, reason + ", so it is not sent again.", now)
    return settled


# --- Sending -------------------------------------------------------------------------------------


def backoff(attempts: int) -> timedelta:
    """How long to wait after the `attempts`-th failed attempt (1-based), with jitter."""
    base = BACKOFF[min(attempts, len(BACKOFF)) - 1]
    return base + base * random.uniform(0, 0.25)


def _retry_deadline(row: Notification) -> datetime:
    # Rows first tried before first_attempt_at was recorded count from when they were made.
    return (row.first_attempt_at or row.created_at) + RETRY_PERIOD


def _next_attempt(row: Notification, now: datetime) -> datetime | None:
    """When to try again after the row's latest failed attempt, or None: that would be more
    than RETRY_PERIOD after its first attempt. A retry to a customer that would fall in the
    organisation's quiet hours waits for their end, as a first message does (a 6 h retry must
    not wake anyone at 3 a.m.)."""
    at = now + backoff(row.attempts)
    if row.order is not None and row.event not in staff_mail.STAFF_EVENTS:
        at = quiet_hours_end(settings_for(row.organization_id), row.order.organization.tzinfo, at) or at
    return at if at <= _retry_deadline(row) else None


def notification_send(*, notification_id: int, now: datetime | None = None) -> str:
    """Send one due row through its channel. Returns the status it ends in ("" if it was not
    due: claimed by another worker, held, already sent…).

    Claims the row pending → sending with a conditional UPDATE, so two workers never both send.
    Raises nothing for a failed send: the row records it (last_error), is retried with back-off,
    or ends failed with an alert for dispatchers."""
    now = now or timezone.now()
    claimed = (
        Notification.objects.filter(pk=notification_id, status=N.PENDING)
        .filter(Q(not_before=None) | Q(not_before__lte=now))
        .update(
            status=N.SENDING,
            attempts=F("attempts") + 1,
            not_before=now + SENDING_LEASE,
            first_attempt_at=Coalesce("first_attempt_at", Value(now)),
        )
    )
    if claimed != 1:
        return ""
    row = Notification.objects.select_related("order__organization", "stop", "endpoint").get(
        pk=notification_id
    )
    if row.channel == C.WEBHOOK:  # fixed body, its own retry policy (WH-2); see tracking.webhooks
        return webhooks.webhook_delivery_send(row, now=now)
    staff = row.event in staff_mail.STAFF_EVENTS  # to the organisation's own people, about no order
    reason = staff_mail.staff_no_longer_due(row) if staff else _no_longer_due(row)
    if reason:
        _finish(row, {"status": N.SKIPPED, "last_error": reason, "not_before": None})
        return N.SKIPPED
    try:
        message = staff_mail.staff_render(row) if staff else notification_render(row, now=now)
    except Exception as exc:  # a broken template fails every time: do not retry it
        logger.exception("Could not render notification %s.", row.pk)
        _give_up(row, f"Could not write the message: {exc}", now)
        return N.FAILED
    row.subject, row.body = message["subject"][:300], message["text"]
    row.payload = {**row.payload, "eta": message["eta"]} if message["eta"] else row.payload
    try:
        provider_id = SENDERS[row.channel](row, message)
    except SendError as exc:
        if exc.ambiguous and row.channel not in RESEND_AFTER_AMBIGUOUS:
            _give_up(row, f"{exc} Not sent again, so the customer never gets it twice.", now)
            return N.FAILED
        retry_at = _next_attempt(row, now)
        if retry_at is None:
            hours = RETRY_PERIOD.total_seconds() / 3600
            _give_up(row, f"{exc} (gave up after {row.attempts} attempts in {hours:g} h)", now)
            return N.FAILED
        _retry(row, str(exc), retry_at)
        return N.PENDING
    except Exception as exc:  # a bug or an unknown library error: the outcome is unknown
        logger.exception("Sending notification %s failed unexpectedly.", row.pk)
        _give_up(row, f"Unexpected error while sending ({exc!r}); not sent again.", now)
        return N.FAILED
    _finish(
        row,
        {
            "status": N.SENT,
            "sent_at": now,
            "provider_id": provider_id[:200],
            "last_error": "",
            "not_before": None,
        },
    )
    return N.SENT


def _finish(row: Notification, updates: dict[str, Any]) -> bool:
    """Write the outcome, if the row is still this worker's (`sending`)."""
    updates = {"subject": row.subject, "body": row.body, "payload": row.payload, **updates}
    done = Notification.objects.filter(pk=row.pk, status=N.SENDING).update(**updates) == 1
    if not done:
        logger.warning("Notification %s was settled by the sweep while this worker sent it.", row.pk)
    return done


def _retry(row: Notification, reason: str, at: datetime) -> bool:
    return _finish(row, {"status": N.PENDING, "last_error": reason[:2000], "not_before": at})


def _give_up(row: Notification, reason: str, now: datetime) -> bool:
    if not _finish(row, {"status": N.FAILED, "last_error": reason[:2000], "not_before": None}):
        return False
    order = row.order
    about = f" (order {order.external_ref or order.pk})" if order is not None else ""
    alert_raise(
        organization_id=row.organization_id,
        kind=ALERT_KIND,
        key=f"notification:{row.pk}",
        message=(
            f"The {row.get_event_display().lower()} {row.get_channel_display()} to "
            f"{row.recipient or 'the customer'}{about} could not be sent: {reason}"
        ),
        stop_id=row.stop_id,
        route_id=row.stop.route_id if row.stop_id and row.stop else None,
        details={"notification": row.pk, "order": row.order_id},
        now=now,
    )
    return True


def _no_longer_due(row: Notification) -> str:
    """Why a row made earlier must not go out now (opted out since, or the news is stale)."""
    if NotificationOptOut.objects.filter(order_id=row.order_id).exists():
        return OPTED_OUT
    if row.event in EN_ROUTE_EVENTS and row.order.status != Order.Status.OUT_FOR_DELIVERY:
        return f"The order is {row.order.get_status_display().lower()} now; this message is out of date."
    # Also for "out for delivery": after a failed or skipped visit the order can be out for
    # delivery again (a re-attempt), and a retry of the old visit's message would be stale.
    if row.event in EN_ROUTE_EVENTS and row.stop and row.stop.status not in OPEN_STOP_STATUSES:
        return "The visit is over; this message is out of date."
    # A failed visit's message still informs while a re-attempt is under way, not once the
    # parcel has been handed over: "we could not deliver" after the delivery would mislead.
    if row.event == E.FAILED and row.order.status in (Order.Status.DELIVERED, Order.Status.PICKED_UP):
        return f"The order is {row.order.get_status_display().lower()} now; this message is out of date."
    return ""


# --- Wording -------------------------------------------------------------------------------------

PARTS = {"subject": "subject.txt", "body": "body.txt", "html": "body.html"}


def _local(moment: datetime | None, tz: ZoneInfo, fmt: str = "%H:%M") -> str:
    return timezone.localtime(moment, tz).strftime(fmt) if moment else ""


def notice_context(row: Notification, *, now: datetime) -> dict[str, Any]:
    """What a notice may say, as plain strings: an override template reaches nothing else."""
    order = row.order
    organization = order.organization
    tz = organization.tzinfo
    options = settings_for(organization.pk)
    link = tracking_link_ensure(order=order, now=now)
    stop = row.stop
    eta = _eta_of(stop) if stop is not None and stop.status in OPEN_STOP_STATUSES else None
    window = ""
    if order.window_start and order.window_end:
        window = f"{_local(order.window_start, tz)}–{_local(order.window_end, tz)}"
    pin = ""
    if row.event in (E.OUT_FOR_DELIVERY, E.ARRIVING_SOON) and "pin" in proof_requirements(order=order):
        pin = order.handover_pin
    return {
        "event": row.event,
        "channel": row.channel,
        "kind": order.kind,
        "organization": organization.name,
        "contact": options.contact_text,
        "recipient_name": order.recipient_name,
        "reference": order.external_ref or str(order.pk),
        "address": order.address,
        "date": order.service_date.strftime("%d.%m.%Y"),
        "window": window,
        "eta": _local(eta, tz),
        "previous_eta": _local(_parse(row.payload.get("previous_eta")), tz),
        "stops_before": row.payload.get("stops_before", ""),
        "reason": row.payload.get("reason", ""),
        "pin": pin,
        "link": link_url(link),
        "unsubscribe_link": settings.SITE_URL.rstrip("/")
        + reverse("tracking:unsubscribe", args=[link_token(link)]),
        "_eta": eta,
    }


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _render_part(row: Notification, part: str, context: dict[str, Any], overrides: dict) -> str:
    html = part == "html"
    override = overrides.get(f"{row.event}.{row.channel}.{part}")
    if isinstance(override, str) and override.strip():
        try:
            # Plain text is not HTML-escaped (an SMS would show "&amp;"); HTML always is.
            return Template(override).render(Context(context, autoescape=html))
        except TemplateSyntaxError:
            logger.warning("Organisation %s: the %s.%s.%s override does not parse; using the default.",
                           row.organization_id, row.event, row.channel, part)  # fmt: skip
    return render_to_string(f"tracking/notices/{row.event}_{PARTS[part]}", context)


def notification_render(row: Notification, *, now: datetime) -> dict[str, Any]:
    """{"subject", "text", "html", "eta"} of a row as it goes out now. Every e-mail ends with an
    unsubscribe link, every SMS with "Reply STOP to stop." — whatever the wording."""
    context = notice_context(row, now=now)
    eta = context.pop("_eta")
    overrides = settings_for(row.organization_id).templates or {}
    text = _render_part(row, "body", context, overrides).strip()
    message = {"subject": "", "text": text, "html": "", "eta": eta.isoformat() if eta else None}
    if row.channel == C.SMS:
        message["text"] = f"{text}\nReply STOP to stop."
        return message
    message["subject"] = " ".join(_render_part(row, "subject", context, overrides).split())
    footer_context = {**context, "channel": row.channel}
    message["text"] = (
        f"{text}\n\n-- \n{render_to_string('tracking/notices/_footer.txt', footer_context).strip()}"
    )
    html = _render_part(row, "html", context, overrides)
    message["html"] = html + render_to_string("tracking/notices/_footer.html", footer_context)
    message["unsubscribe_link"] = context["unsubscribe_link"]
    return message


# --- Channels ------------------------------------------------------------------------------------


def _send_email(row: Notification, message: dict[str, Any]) -> str:
    message_id = make_msgid(domain="doorstep")
    email = EmailMultiAlternatives(
        subject=message["subject"],
        body=message["text"],
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[row.recipient],
        headers={"Message-ID": message_id, "List-Unsubscribe": f"<{message['unsubscribe_link']}>"},
    )
    email.attach_alternative(message["html"], "text/html")
    try:
        email.send(fail_silently=False)
    except (
        smtplib.SMTPResponseException,  # the server answered no (incl. SMTPConnectError)
        smtplib.SMTPRecipientsRefused,
        smtplib.SMTPSenderRefused,
        ConnectionRefusedError,
        socket.gaierror,
    ) as exc:
        raise SendError(f"The mail server refused the message: {exc}", ambiguous=False) from exc
    except OSError as exc:  # timeouts, dropped connections: it may have been accepted
        raise SendError(
            f"The mail server stopped answering ({exc}); it may have gone out.", ambiguous=True
        ) from exc
    return message_id


def _send_sms(row: Notification, message: dict[str, Any]) -> str:
    return sms.get_backend().send(to=row.recipient, body=message["text"], reference=row.key)


# Sending dispatches on the channel. Webhook rows are claimed by notification_send like every
# row, then sent by tracking.webhooks.webhook_delivery_send (signed fixed body, own retry policy).
SENDERS: dict[str, Callable[[Notification, dict[str, Any]], str]] = {
    C.EMAIL: _send_email,
    C.SMS: _send_sms,
}


# --- Opting out ----------------------------------------------------------------------------------


def notification_opt_out(*, order: Order, via: str, now: datetime | None = None) -> NotificationOptOut:
    """No further message about this order: the opt-out is recorded once, and every row not yet
    sent is skipped (a row being sent right now finishes)."""
    now = now or timezone.now()
    opt_out, _ = NotificationOptOut.objects.get_or_create(
        order=order, defaults={"organization_id": order.organization_id, "created_at": now, "via": via}
    )
    Notification.objects.filter(order=order, status__in=[N.PENDING, N.HELD]).update(
        status=N.SKIPPED, last_error=OPTED_OUT, not_before=None
    )
    return opt_out


def sms_inbound_receive(*, phone: str, text: str, now: datetime | None = None) -> int:
    """A customer's reply to an SMS. STOP (and its usual synonyms) opts out every order this
    number was texted about in the last 30 days. Returns how many orders were opted out."""
    now = now or timezone.now()
    words = (text or "").strip().upper().split()
    number = sms.normalise_phone(phone or "")
    if not words or words[0].strip(".!") not in STOP_WORDS or not number:
        return 0
    order_ids = (
        Notification.objects.filter(channel=C.SMS, recipient=number, created_at__gte=now - timedelta(days=30))
        .values_list("order_id", flat=True)
        .distinct()
    )
    orders = Order.objects.filter(pk__in=list(order_ids)).exclude(notification_opt_out__isnull=False)
    count = 0
    for order in orders:
        notification_opt_out(order=order, via="sms", now=now)
        count += 1
    return count


# --- Reads for the order page's message log --------------------------------------------------------


def order_notifications(*, order: Order) -> QuerySet[Notification]:
    """Every message of an order, newest first (one query)."""
    return Notification.objects.filter(order=order).order_by("-created_at", "-pk")
