"""Webhooks: every event of an organisation, signed and delivered to its endpoints through the
outbox (tracking.models.Notification rows with channel "webhook"). docs/webhooks.md is the
integrators' side of this module; keep the two in step.

Rows are made where customer messages are made, from the same facts:
- dispatch's StopEvents (order created — portal, CSV import, API —, planned, assigned, out for
  delivery, delivered / picked up, failed, cancelled), claimed once by
  tracking.notifications.notifications_for_event, which calls webhooks_for_stop_event;
- the live sweep's "arriving soon" and "delayed" (tracking.notifications.notifications_create);
- routes started and completed (webhook_route_sweep, every minute: routes have no StopEvent);
- customer requests (tracking.customer calls webhooks_for_customer_request).

Each row's key is "webhook:<endpoint>:<occurrence>" (unique), so a replayed event, a retried
job or two sweeps racing make one row per endpoint and event, and the claim in
tracking.notifications.notification_send (pending → sending) lets one worker send it. The body
and the webhook-id are fixed when the row is made: every retry sends the same bytes with the
same id (receivers de-duplicate by it), signed again with a fresh timestamp.

Delivery policy (RELIABILITY.md WH-2, JOB-5): a 2xx answer is success; anything else, no answer
or a timeout is a failed attempt, retried with exponential back-off and jitter until
WEBHOOK_RETRY_HOURS after the row was made, then the row is failed. Unlike SMS, an ambiguous
outcome (timeout after sending, 5xx) is retried: the receiver de-duplicates. 410 Gone disables
the endpoint at once; an endpoint that failed every attempt for the whole retry period is
disabled too, and the organisation's dispatchers get an alert.
"""

import base64
import hashlib
import hmac
import json
import logging
import random
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.urls import reverse
from django.utils import timezone
from django_q.tasks import async_task

from dispatch.models import Order, Organization, Route, Stop, StopEvent
from tracking import staff_mail, webhook_http
from tracking.alerts import alert_raise
from tracking.links import settings_for
from tracking.models import Alert, CustomerRequest, InboundCallback, Notification, WebhookEndpoint

logger = logging.getLogger(__name__)

E = Notification.Event
N = Notification.Status
WEBHOOK = Notification.Channel.WEBHOOK

# Every event type an endpoint may subscribe to, and what it means (docs/webhooks.md).
EVENT_TYPES: dict[str, str] = {
    "order.created": "An order was created (portal, CSV import or API).",
    "order.planned": "The order is on a draft route of a plan.",
    "order.assigned": "The order's route was published to its driver.",
    "order.out_for_delivery": "The driver started the route with this order on it.",
    "order.arriving": "The driver is a few stops or minutes away.",
    "order.delayed": "The ETA moved by more than the organisation's delay threshold.",
    "order.delivered": "Delivered, with the proof of delivery.",
    "order.picked_up": "A pickup was collected, with the proof.",
    "order.failed": "The delivery attempt failed, with the reason.",
    "order.cancelled": "The order was cancelled.",
    "route.started": "A driver started a route.",
    "route.completed": "A route was completed.",
    "customer_request.created": "A customer asked for something on the tracking page.",
    "webhook.test": "Sent by the “Send test event” button (or the API's test action).",
}
# StopEvent.to_status → (Notification.Event, webhook type).
STOP_EVENT_TYPES = {
    Order.Status.PLANNED: (E.PLANNED, "order.planned"),
    Order.Status.ASSIGNED: (E.ASSIGNED, "order.assigned"),
    Order.Status.OUT_FOR_DELIVERY: (E.OUT_FOR_DELIVERY, "order.out_for_delivery"),
    Order.Status.DELIVERED: (E.DELIVERED, "order.delivered"),
    Order.Status.PICKED_UP: (E.DELIVERED, "order.picked_up"),
    Order.Status.FAILED: (E.FAILED, "order.failed"),
    Order.Status.CANCELLED: (E.CANCELLED, "order.cancelled"),
}
# From notifications_create (the live sweep): Notification.Event → webhook type.
LIVE_EVENT_TYPES = {E.ARRIVING_SOON: "order.arriving", E.DELAYED: "order.delayed"}

# Wait after the 1st, 2nd, … failed attempt; the last one repeats until WEBHOOK_RETRY_HOURS.
# Each gets up to +25 % jitter, so an endpoint coming back is not hit by every retry at once.
BACKOFF = (
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=10),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=6),
)
LOG_ATTEMPTS = 20  # attempts kept in Notification.attempt_log
EXCERPT_CHARS = 1000  # of each answer, for the delivery log
USER_AGENT = "Doorstep-Webhooks/1.0"


def retry_period() -> timedelta:
    return timedelta(hours=settings.WEBHOOK_RETRY_HOURS)


def backoff(attempts: int) -> timedelta:
    """How long to wait after the `attempts`-th failed attempt (1-based), with jitter."""
    base = BACKOFF[min(max(attempts, 1), len(BACKOFF)) - 1]
    return base + base * random.uniform(0, 0.25)


# --- Secrets and signatures (Standard Webhooks) ----------------------------------------------


def secret_new() -> str:
    """ "whsec_" + base64 of 32 random bytes (Standard Webhooks; WH-1 asks for >= 24)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def sign(secret: str, *, msg_id: str, timestamp: int, body: str) -> str:
    """ "v1,<base64 HMAC-SHA256 of '<id>.<timestamp>.<body>'>" with the secret's key bytes."""
    digest = hmac.new(_key(secret), f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signing_secrets(endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    """The current secret, plus the previous one while its grace period lasts."""
    keys = [endpoint.secret]
    if endpoint.previous_secret and endpoint.previous_secret_until and endpoint.previous_secret_until > now:
        keys.append(endpoint.previous_secret)
    return keys


def signed_headers(endpoint: WebhookEndpoint, *, msg_id: str, body: str, now: datetime) -> dict[str, str]:
    timestamp = int(now.timestamp())
    keys = signing_secrets(endpoint, now)
    signatures = " ".join(sign(key, msg_id=msg_id, timestamp=timestamp, body=body) for key in keys)
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signatures,
    }


# --- Payloads ----------------------------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else None


def _site(path: str) -> str:
    return settings.SITE_URL.rstrip("/") + path


def order_data(order: Order) -> dict[str, Any]:
    """What every order event says about the order. No contact details of the customer beyond
    the name (they are in the API for whoever may read them) and no tracking-link token."""
    return {
        "id": order.pk,
        "external_ref": order.external_ref or None,
        "kind": order.kind,
        "status": order.status,
        "service_date": order.service_date.isoformat() if order.service_date else None,
        "window_start": _iso(order.window_start),
        "window_end": _iso(order.window_end),
        "recipient_name": order.recipient_name,
        "address": order.address,
        "lat": order.lat,
        "lng": order.lng,
        "parcels": order.parcels,
        "url": _site(reverse("dispatch:order_detail", args=[order.pk])),
        "api_url": _site(reverse("order-detail", args=[order.pk])),
    }


def stop_data(stop: Stop | None) -> dict[str, Any] | None:
    if stop is None:
        return None
    return {
        "id": stop.pk,
        "route_id": stop.route_id,
        "sequence": stop.sequence,
        "status": stop.status,
        "planned_arrival": _iso(stop.planned_arrival),
        "eta": _iso(stop.eta),
        "arrived_at": _iso(stop.arrived_at),
        "departed_at": _iso(stop.departed_at),
        "failure_reason": stop.failure_reason or None,
    }


def proof_data(stop: Stop | None) -> dict[str, Any] | None:
    """The proof of delivery as links into the portal (log-in required: the photos show a
    customer's door and signature, so they are never public URLs in a payload)."""
    proof = getattr(stop, "proof", None) if stop is not None else None
    if proof is None:
        return None
    return {
        "recipient_name": proof.recipient_name,
        "captured_at": _iso(proof.captured_at),
        "lat": proof.lat,
        "lng": proof.lng,
        "url": _site(reverse("pod:order_proof", args=[stop.order_id])),
        "photos": [_site(reverse("pod:photo", args=[photo.public_id])) for photo in proof.photos.all()],
        "signature": _site(reverse("pod:signature", args=[proof.public_id])) if proof.signature else None,
    }


def route_data(route: Route) -> dict[str, Any]:
    stops = list(route.stops.all())
    return {
        "id": route.pk,
        "date": route.date.isoformat(),
        "status": route.status,
        "depot_id": route.depot_id,
        "driver": {"id": route.driver_id, "name": route.driver.name},
        "started_at": _iso(route.started_at),
        "completed_at": _iso(route.completed_at),
        "stops": len(stops),
        "completed_stops": sum(stop.status == Stop.Status.COMPLETED for stop in stops),
        "failed_stops": sum(stop.status == Stop.Status.FAILED for stop in stops),
        "url": _site(reverse("dispatch:route_detail", args=[route.pk])),
    }


# --- Making deliveries ---------------------------------------------------------------------------


def _body(*, msg_id: str, event_type: str, at: datetime, data: dict[str, Any]) -> str:
    return json.dumps(
        {"id": msg_id, "type": event_type, "timestamp": _iso(at), "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def deliveries_create(
    *,
    organization_id: int,
    event: str,
    event_type: str,
    occurrence: str,
    data: dict[str, Any],
    at: datetime,
    order: Order | None = None,
    stop: Stop | None = None,
    route: Route | None = None,
    endpoints: QuerySet[WebhookEndpoint] | None = None,
    now: datetime | None = None,
) -> list[Notification]:
    """One delivery per active endpoint of the organisation that subscribes to `event_type`.

    Idempotent on (endpoint, occurrence); returns the rows made now and queues them after commit."""
    now = now or timezone.now()
    if endpoints is None:
        endpoints = WebhookEndpoint.objects.filter(organization_id=organization_id, active=True)
    made = []
    for endpoint in endpoints.filter(organization_id=organization_id):  # never another tenant's
        if event_type != "webhook.test" and not endpoint.subscribes_to(event_type):
            continue  # a test event goes to the endpoint it was asked for, whatever it subscribes to
        msg_id = f"msg_{uuid.uuid4().hex}"
        row, created = Notification.objects.get_or_create(
            key=f"webhook:{endpoint.pk}:{occurrence}",
            defaults={
                "organization_id": organization_id,
                "order": order,
                "stop": stop,
                "route": route,
                "endpoint": endpoint,
                "event": event,
                "channel": WEBHOOK,
                "recipient": endpoint.url[:300],
                "subject": event_type,
                "body": _body(msg_id=msg_id, event_type=event_type, at=at, data=data),
                "webhook_id": msg_id,
                "payload": {"type": event_type},
                "status": N.PENDING,
                "created_at": now,
            },
        )
        if created:
            made.append(row)
    queue([row.pk for row in made])
    return made


def queue(ids: list[int]) -> None:
    """Send after commit (the minute sweep queues any row whose task was lost)."""
    for pk in ids:
        transaction.on_commit(lambda pk=pk: async_task("tracking.tasks.send_notification", pk))


def _has_endpoints(organization_id: int) -> bool:
    return WebhookEndpoint.objects.filter(organization_id=organization_id, active=True).exists()


def webhooks_for_stop_event(event: StopEvent, *, now: datetime | None = None) -> list[Notification]:
    """The deliveries of one claimed StopEvent (called by notifications_for_event in its claim's
    transaction, so the event and its deliveries commit together)."""
    if event.kind == StopEvent.Kind.CREATED:
        event_name, event_type = E.CREATED, "order.created"
    elif event.to_status in STOP_EVENT_TYPES and event.to_status != event.from_status:
        event_name, event_type = STOP_EVENT_TYPES[event.to_status]
    else:
        return []
    if not _has_endpoints(event.organization_id):
        return []
    order = event.order
    data: dict[str, Any] = {
        "order": order_data(order),
        "stop": stop_data(event.stop),
        "event": {
            "id": event.pk,
            "at": _iso(event.at),
            "from_status": event.from_status or None,
            "to_status": event.to_status or None,
            "reason": event.reason or None,
            "note": event.note or None,
            "lat": event.lat,
            "lng": event.lng,
        },
    }
    if event_type in ("order.delivered", "order.picked_up"):
        data["proof"] = proof_data(event.stop)
    return deliveries_create(
        organization_id=event.organization_id,
        event=event_name,
        event_type=event_type,
        occurrence=f"stopevent:{event.pk}",
        data=data,
        at=event.at,
        order=order,
        stop=event.stop,
        now=now,
    )


def webhooks_for_live_event(
    *, order: Order, event: str, occurrence: str, stop: Stop | None, payload: dict[str, Any], now: datetime
) -> list[Notification]:
    """ "order.arriving" / "order.delayed", made with the customer's message of the same
    occurrence (tracking.notifications.notifications_create)."""
    event_type = LIVE_EVENT_TYPES.get(event)
    if event_type is None or not _has_endpoints(order.organization_id):
        return []
    data = {
        "order": order_data(order),
        "stop": stop_data(stop),
        "eta": payload.get("eta"),
        "previous_eta": payload.get("previous_eta"),
        "stops_before": payload.get("stops_before"),
    }
    return deliveries_create(
        organization_id=order.organization_id,
        event=event,
        event_type=event_type,
        occurrence=f"order:{order.pk}:{event}:{occurrence}",
        data=data,
        at=now,
        order=order,
        stop=stop,
        now=now,
    )


def webhooks_for_customer_request(*, request: CustomerRequest, now: datetime) -> list[Notification]:
    if not _has_endpoints(request.organization_id):
        return []
    data = {
        "request": {
            "id": request.pk,
            "kind": request.kind,
            "text": request.text or None,
            "rating": request.rating,
            "window_start": _iso(request.window_start),
            "window_end": _iso(request.window_end),
            "created_at": _iso(request.created_at),
        },
        "order": order_data(request.order),
    }
    return deliveries_create(
        organization_id=request.organization_id,
        event=E.CUSTOMER_REQUEST,
        event_type="customer_request.created",
        occurrence=f"customer_request:{request.pk}",
        data=data,
        at=request.created_at,
        order=request.order,
        now=now,
    )


# Routes started or completed longer ago than this when the sweep first sees them are left out
# (as tracking.notifications.EVENT_MAX_AGE does for stop events).
ROUTE_EVENT_MAX_AGE = timedelta(hours=12)


def webhook_route_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """Every minute: "route.started" / "route.completed" for routes that did so recently. An
    endpoint hears only of what happened after it was added. Safe to run twice (the key)."""
    now = now or timezone.now()
    since = now - ROUTE_EVENT_MAX_AGE
    active = WebhookEndpoint.objects.filter(active=True)
    organization_ids = set(active.values_list("organization_id", flat=True))
    counts = {"route_events": 0}
    if not organization_ids:
        return counts
    routes = (
        Route.objects.filter(organization_id__in=organization_ids)
        .filter(Q(started_at__gte=since) | Q(completed_at__gte=since))
        .select_related("driver__user")
        .prefetch_related("stops")
    )
    for route in routes:
        for moment, event, event_type in (
            (route.started_at, E.ROUTE_STARTED, "route.started"),
            (route.completed_at, E.ROUTE_COMPLETED, "route.completed"),
        ):
            if moment is None or moment < since:
                continue
            endpoints = WebhookEndpoint.objects.filter(
                organization_id=route.organization_id, active=True, created_at__lte=moment
            )
            key_part = f"route:{route.pk}:{event}"
            if not endpoints.exclude(deliveries__key__endswith=":" + key_part).exists():
                continue  # every endpoint has it already: skip building the payload
            counts["route_events"] += len(
                deliveries_create(
                    organization_id=route.organization_id,
                    event=event,
                    event_type=event_type,
                    occurrence=key_part,
                    data={"route": route_data(route)},
                    at=moment,
                    route=route,
                    endpoints=endpoints,
                    now=now,
                )
            )
    return counts


# --- Sending -------------------------------------------------------------------------------------


def _log(row: Notification, entry: dict[str, Any]) -> list[dict[str, Any]]:
    return [*(row.attempt_log or []), entry][-LOG_ATTEMPTS:]


def _settle(row: Notification, updates: dict[str, Any]) -> bool:
    """Write the outcome, if the row is still this worker's (`sending`)."""
    done = Notification.objects.filter(pk=row.pk, status=N.SENDING).update(**updates) == 1
    if not done:
        logger.warning("Webhook delivery %s was settled by the sweep while this worker sent it.", row.pk)
    return done


def _deadline(row: Notification) -> datetime:
    start = row.payload.get("retry_from") if isinstance(row.payload, dict) else None
    return (datetime.fromisoformat(start) if start else row.created_at) + retry_period()


def webhook_delivery_send(row: Notification, *, now: datetime) -> str:
    """Attempt one delivery the caller claimed (status `sending`, attempts counted). Returns the
    status it ends in. Raises nothing: the outcome is on the row and in its attempt log."""
    endpoint = row.endpoint
    if endpoint is None or not endpoint.active:
        reason = endpoint.disabled_reason if endpoint else "The endpoint was deleted."
        error = f"Endpoint disabled: {reason}"[:2000]
        _settle(row, {"status": N.SKIPPED, "not_before": None, "last_error": error})
        return N.SKIPPED
    allow_private = settings_for(row.organization_id).webhooks_allow_private
    headers = signed_headers(endpoint, msg_id=row.webhook_id, body=row.body, now=now)
    status_code, excerpt, error, ms, gone = None, "", "", None, False
    try:
        answer = webhook_http.post(
            endpoint.url,
            body=row.body.encode(),
            headers=headers,
            timeout=settings.WEBHOOK_TIMEOUT,
            allow_private=allow_private,
        )
    except webhook_http.UnsafeUrl as exc:
        error = f"Refused: {exc}"
    except webhook_http.PostError as exc:
        error = str(exc) + (
            " It may have arrived; it is retried with the same webhook-id." if exc.sent else ""
        )
    else:
        status_code, ms = answer.status, answer.ms
        excerpt = answer.body.decode(errors="replace")[:EXCERPT_CHARS]
        if 300 <= answer.status < 400:
            error = f"Answered {answer.status}: redirects are not followed; use the final URL."
        elif answer.status == 410:
            error, gone = "Answered 410 Gone: the endpoint is disabled.", True
        elif not 200 <= answer.status < 300:
            error = f"Answered {answer.status}."
    entry = {"at": _iso(now), "status": status_code, "error": error, "ms": ms}
    common = {
        "response_status": status_code,
        "response_excerpt": excerpt,
        "last_attempt_at": now,
        "attempt_log": _log(row, entry),
    }
    if not error:
        _settle(row, {**common, "status": N.SENT, "sent_at": now, "last_error": "", "not_before": None})
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(consecutive_failures=0, failing_since=None)
        return N.SENT
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(consecutive_failures=F("consecutive_failures") + 1)
    WebhookEndpoint.objects.filter(pk=endpoint.pk, failing_since=None).update(failing_since=now)
    if gone:
        _settle(row, {**common, "status": N.FAILED, "last_error": error, "not_before": None})
        reason = f"It answered 410 Gone on {now:%Y-%m-%d %H:%M} UTC."
        webhook_endpoint_disable(endpoint=endpoint, reason=reason, now=now)
        return N.FAILED
    endpoint.refresh_from_db(fields=["failing_since"])
    failing_since = endpoint.failing_since
    wait = backoff(row.attempts)
    giving_up = now + wait > _deadline(row)
    # Disabled when every attempt failed for a whole retry schedule: this delivery's (nothing
    # succeeded since its first attempt), or simply for longer than the retry period.
    schedule_start = _deadline(row) - retry_period()
    if failing_since and (
        failing_since <= now - retry_period() or (giving_up and failing_since <= schedule_start)
    ):
        hours = (now - failing_since).total_seconds() / 3600
        reason = f"Every delivery attempt failed for {hours:.0f} hours (last: {error})"
        webhook_endpoint_disable(endpoint=endpoint, reason=reason, now=now)
    if giving_up:
        _settle(row, {**common, "status": N.FAILED, "not_before": None,
                      "last_error": f"{error} Gave up after {row.attempts} attempts."[:2000]})  # fmt: skip
        return N.FAILED
    _settle(row, {**common, "status": N.PENDING, "not_before": now + wait, "last_error": error[:2000]})
    return N.PENDING


def webhook_delivery_abandoned(row: Notification, *, now: datetime) -> bool:
    """A row left `sending` by a worker that died: the receiver de-duplicates by webhook-id, so
    it is simply tried again (or failed once its retry period is over)."""
    reason = "The worker stopped while sending; it may have arrived. Retried with the same webhook-id."
    entry = {"at": _iso(now), "status": None, "error": reason, "ms": None}
    updates: dict[str, Any] = {"last_error": reason, "attempt_log": _log(row, entry)}
    if now >= _deadline(row):
        return _settle(row, {**updates, "status": N.FAILED, "not_before": None})
    return _settle(row, {**updates, "status": N.PENDING, "not_before": now})


# --- Endpoints (the portal and the API call these) ---------------------------------------------


def _clean_events(events: Any) -> list[str]:
    if events in (None, ""):
        return []
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        raise ValidationError({"events": 'A list of event types, e.g. ["order.delivered"]; empty for all.'})
    unknown = sorted(set(events) - EVENT_TYPES.keys())
    if unknown:
        raise ValidationError(
            {"events": f"Unknown event type(s): {', '.join(unknown)}. Known: {', '.join(EVENT_TYPES)}."}
        )
    return list(dict.fromkeys(events))


def webhook_url_check(*, organization_id: int, url: str) -> None:
    """Raises ValidationError({"url": …}) unless `url` may be called now (WH-3)."""
    allow_private = settings_for(organization_id).webhooks_allow_private
    try:
        webhook_http.checked_addresses(url, allow_private=allow_private)
    except webhook_http.UnsafeUrl as exc:
        raise ValidationError({"url": str(exc)}) from exc


@transaction.atomic
def webhook_endpoint_create(
    *,
    organization: Organization,
    url: str,
    events: list[str] | None = None,
    description: str = "",
    active: bool = True,
    by=None,
) -> WebhookEndpoint:
    """A new endpoint with a new secret. Raises ValidationError (bad URL, refused address,
    unknown event type)."""
    endpoint = WebhookEndpoint(
        organization=organization,
        url=url.strip(),
        events=_clean_events(events),
        description=description.strip(),
        active=active,
        secret=secret_new(),
        created_by=by if by is not None and by.is_authenticated else None,
    )
    endpoint.full_clean()
    webhook_url_check(organization_id=organization.pk, url=endpoint.url)
    endpoint.save()
    return endpoint


EDITABLE = {"url", "events", "description", "active"}


@transaction.atomic
def webhook_endpoint_update(*, endpoint: WebhookEndpoint, **fields: Any) -> WebhookEndpoint:
    """Change url, events, description or active. Re-enabling clears the failure count."""
    unknown = set(fields) - EDITABLE
    if unknown:
        raise ValidationError(f"Unknown endpoint fields: {', '.join(sorted(unknown))}.")
    was_active = endpoint.active
    if "events" in fields:
        fields["events"] = _clean_events(fields["events"])
    if "url" in fields:
        fields["url"] = fields["url"].strip()
    for name, value in fields.items():
        setattr(endpoint, name, value)
    endpoint.full_clean()
    if "url" in fields:
        webhook_url_check(organization_id=endpoint.organization_id, url=endpoint.url)
    if endpoint.active and not was_active:
        endpoint.consecutive_failures, endpoint.failing_since = 0, None
        endpoint.disabled_reason, endpoint.disabled_at = "", None
    endpoint.save()
    return endpoint


def webhook_endpoint_rotate(*, endpoint: WebhookEndpoint, now: datetime | None = None) -> WebhookEndpoint:
    """A new secret; the old one keeps signing (a second signature) for the grace period."""
    now = now or timezone.now()
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_until = now + timedelta(hours=settings.WEBHOOK_ROTATION_GRACE_HOURS)
    endpoint.secret = secret_new()
    endpoint.save(update_fields=["secret", "previous_secret", "previous_secret_until", "updated_at"])
    return endpoint


def webhook_endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    """Delete the endpoint and its delivery log."""
    endpoint.delete()


def webhook_endpoint_disable(*, endpoint: WebhookEndpoint, reason: str, now: datetime | None = None) -> bool:
    """Stop delivering to the endpoint and tell the organisation's dispatchers (an alert).
    Returns False if it was disabled already."""
    now = now or timezone.now()
    if not WebhookEndpoint.objects.filter(pk=endpoint.pk, active=True).update(
        active=False, disabled_reason=reason[:300], disabled_at=now
    ):
        return False
    Notification.objects.filter(endpoint=endpoint, status__in=[N.PENDING, N.HELD]).update(
        status=N.SKIPPED, not_before=None, last_error=f"Endpoint disabled: {reason}"[:2000]
    )
    alert_raise(
        organization_id=endpoint.organization_id,
        kind=Alert.Kind.WEBHOOK,
        key=f"webhook:{endpoint.pk}:disabled",
        message=f"Webhook endpoint {endpoint.url} was disabled: {reason} Fix it, then re-enable it.",
        details={"endpoint": endpoint.pk},
        now=now,
    )
    staff_mail.webhook_disabled_notify(endpoint=endpoint, reason=reason, now=now)  # and its admins
    return True


def webhook_test_send(*, endpoint: WebhookEndpoint, now: datetime | None = None) -> Notification:
    """Queue a "webhook.test" delivery to this endpoint (whatever it subscribes to). Raises
    ValidationError if the endpoint is disabled."""
    now = now or timezone.now()
    if not endpoint.active:
        raise ValidationError("The endpoint is disabled: enable it first, then send a test event.")
    organization = endpoint.organization
    made = deliveries_create(
        organization_id=endpoint.organization_id,
        event=E.TEST,
        event_type="webhook.test",
        occurrence=f"test:{uuid.uuid4().hex}",
        data={"organization": {"id": organization.pk, "name": organization.name}, "endpoint_id": endpoint.pk},
        at=now,
        endpoints=WebhookEndpoint.objects.filter(pk=endpoint.pk),
        now=now,
    )
    return made[0]


def webhook_delivery_resend(*, delivery: Notification, now: datetime | None = None) -> Notification:
    """Send a delivery again now — the same body and webhook-id — with a new retry period.
    Raises ValidationError if it is being sent right now or its endpoint is disabled."""
    now = now or timezone.now()
    if delivery.endpoint is None or not delivery.endpoint.active:
        raise ValidationError("The endpoint is disabled: enable it first, then resend.")
    payload = {**(delivery.payload or {}), "retry_from": now.isoformat()}
    done = (
        Notification.objects.filter(pk=delivery.pk, channel=WEBHOOK)
        .exclude(status=N.SENDING)
        .update(status=N.PENDING, not_before=None, last_error="", payload=payload)
    )
    if not done:
        raise ValidationError("This delivery is being sent right now.")
    queue([delivery.pk])
    delivery.refresh_from_db()
    return delivery


# --- Reads ---------------------------------------------------------------------------------------


def endpoints_visible_to(*, organization: Organization | None) -> QuerySet[WebhookEndpoint]:
    if organization is None:
        return WebhookEndpoint.objects.none()
    return WebhookEndpoint.objects.filter(organization=organization)


def deliveries_visible_to(*, organization: Organization | None) -> QuerySet[Notification]:
    if organization is None:
        return Notification.objects.none()
    return Notification.objects.filter(organization=organization, channel=WEBHOOK, endpoint__isnull=False)


def endpoint_deliveries(*, endpoint: WebhookEndpoint, limit: int = 50) -> list[Notification]:
    """The endpoint's newest deliveries, for its log (one query)."""
    return list(Notification.objects.filter(endpoint=endpoint).order_by("-created_at", "-pk")[:limit])


# --- Inbound provider callbacks (WH-4) ---------------------------------------------------------

INBOUND_TOLERANCE = timedelta(minutes=5)


class InboundRefused(Exception):
    """An inbound callback that is not proven to be the provider's, or is too old."""


def _inbound_key(secret: str) -> bytes:
    # A "whsec_…" secret is Standard Webhooks' base64 key; any other string is used as it is.
    if secret.startswith("whsec_"):
        return _key(secret)
    return secret.encode()


def inbound_verify(*, secret: str, headers: dict[str, str], body: bytes, now: datetime) -> str:
    """Check a Standard Webhooks signed callback; returns its webhook-id. Raises InboundRefused
    (missing headers, older or newer than five minutes, no matching signature). Compared in
    constant time."""
    headers = {name.lower(): value for name, value in headers.items()}
    msg_id = headers.get("webhook-id", "").strip()
    stamp = headers.get("webhook-timestamp", "").strip()
    given = headers.get("webhook-signature", "")
    if not (msg_id and stamp and given):
        raise InboundRefused(
            "Sign the callback: webhook-id, webhook-timestamp and webhook-signature are needed."
        )
    try:
        sent = datetime.fromtimestamp(int(stamp), tz=UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise InboundRefused("webhook-timestamp must be Unix seconds.") from exc
    if abs(now - sent) > INBOUND_TOLERANCE:
        raise InboundRefused(
            "webhook-timestamp is more than five minutes from now: a replay, or a wrong clock."
        )
    signed = f"{msg_id}.{stamp}.".encode() + body
    expected = base64.b64encode(hmac.new(_inbound_key(secret), signed, hashlib.sha256).digest())
    for candidate in given.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            return msg_id
    raise InboundRefused("No valid signature.")


def inbound_callback_first(*, source: str, event_id: str, now: datetime) -> bool:
    """Record that this provider event was handled; False if it was already (a duplicate).
    Call it in the transaction that acts on the event, so a failure leaves it unrecorded."""
    _row, created = InboundCallback.objects.get_or_create(
        source=source, event_id=event_id[:200], defaults={"received_at": now}
    )
    return created
