"""The customer's self-service on the tracking page (issue #6 item 3), and the dispatcher's side.

Writes, like tracking.services (kept in their own module: they are one feature). A customer may
leave instructions for the driver, ask for another window, message the dispatcher and, once the
order is delivered or picked up, rate it. Each is a CustomerRequest row plus an Alert of kind
customer_request keyed "customer_request:<request id>" (details name the request, its kind and
the order), so the dashboard shows it until a dispatcher acknowledges or decides it.

Rules every caller gets (the views are thin):
- only a working link (not revoked, not expired) takes requests: RequestRefused otherwise;
- at most RATE_LIMIT accepted requests per link per clock hour, counted in the cache (Redis
  when REDIS_URL is set): RateLimited beyond;
- texts are stripped, line ends normalised, control characters refused, lengths capped;
- a window is one the organisation offers (TrackingSettings.window_slots), on one of the next
  slot_days_ahead days in the organisation's zone, in the future, and not the current one; an
  order has one open window request, a new one replaces (declines) the old;
- a rating is 1–5, only after delivery or pickup, once per order (also a DB constraint).

Accepting a window request moves the order through dispatch.services.order_update. An order
still on a route (a pending stop) is first taken off it with dispatch.planning.stop_remove —
its order goes back to "new", ready to be planned for the new day — because a route's times
were computed for the old window; a stop the driver is already heading to (en route, arrived)
cannot be moved and the acceptance is refused with a message saying so.
"""

import unicodedata
from datetime import datetime, time, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from dispatch import planning
from dispatch import services as dispatch_services
from dispatch.models import Order, Organization, Route, Stop
from dispatch.timeutils import local_datetime, local_today
from tracking import alerts, webhooks
from tracking.customer_forms import (
    COMMENT_MAX,
    MESSAGE_MAX,
    InstructionsForm,
    MessageForm,
    RatingForm,
    WindowForm,
    slot_value,
)
from tracking.links import link_token, settings_for
from tracking.models import Alert, CustomerRequest, TrackingLink, TrackingSettings

INSTRUCTIONS_MAX = dispatch_services.CUSTOMER_INSTRUCTIONS_MAX
DECISION_NOTE_MAX = 300
RATE_LIMIT = 10  # accepted requests per link per clock hour
RATE_WINDOW_SECONDS = 3600
DONE_STATUSES = (Order.Status.DELIVERED, Order.Status.PICKED_UP)
ACTIVE_STOP_STATUSES = (Stop.Status.PENDING, Stop.Status.EN_ROUTE, Stop.Status.ARRIVED)
# Invisible characters that reorder text on screen (bidi overrides): refused like control codes.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

Kind, Status = CustomerRequest.Kind, CustomerRequest.Status


class RequestRefused(ValidationError):
    """The link or the order no longer takes this request (expired link, order closed…)."""


class RateLimited(RequestRefused):
    """Too many requests through one link in the last hour."""


# --- Small rules ------------------------------------------------------------------------------


def _clean_text(text: str | None, *, field: str, limit: int, required: bool) -> str:
    text = (text or "").replace("\r\n", "\n").replace("\r", "\n").strip()
    if required and not text:
        raise ValidationError({field: "Write something first."})
    if len(text) > limit:
        raise ValidationError({field: f"Keep it to {limit} characters (this has {len(text)})."})
    bad = next(
        (c for c in text if (unicodedata.category(c) == "Cc" and c not in "\n\t") or c in _BIDI_CONTROLS),
        None,
    )
    if bad is not None:
        raise ValidationError(
            {field: f"Remove the invisible control character (U+{ord(bad):04X}) from the text."}
        )
    return text


def link_usable(link: TrackingLink, now: datetime) -> bool:
    return link.revoked_at is None and (link.expires_at is None or link.expires_at > now)


def _check_link(link: TrackingLink, now: datetime) -> None:
    if not link_usable(link, now):
        raise RequestRefused("This tracking link no longer works, so it cannot take requests.")


def _check_open(order: Order, what: str) -> None:
    if not order.is_open:
        raise RequestRefused(
            f"Your {_noun(order)} is {order.get_status_display().lower()}: {what} can no longer be changed."
        )


def _claim_rate(link: TrackingLink, now: datetime) -> None:
    """Count one request against the link's hourly allowance; RateLimited once it is used up."""
    window = int(now.timestamp() // RATE_WINDOW_SECONDS)
    key = f"customer-requests:{link.pk}:{window}"
    cache.add(key, 0, timeout=RATE_WINDOW_SECONDS + 60)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr: this one is the first
        cache.set(key, 1, timeout=RATE_WINDOW_SECONDS + 60)
        count = 1
    if count > RATE_LIMIT:
        raise RateLimited(
            f"You have sent {RATE_LIMIT} requests in the last hour. "
            "Please wait a little, or contact us directly."
        )


def _noun(order: Order) -> str:
    return "pickup" if order.kind == Order.Kind.PICKUP else "delivery"


def _ref(order: Order) -> str:
    return f"Order {order.external_ref or f'#{order.pk}'} ({order.recipient_name})"


def _alert_key(request_id: int) -> str:
    return f"customer_request:{request_id}"


def slot_label(start: datetime, end: datetime, organization: Organization) -> str:
    """ "Thursday 26 November 10:00–12:00" in the organisation's zone."""
    tz = organization.tzinfo
    start, end = start.astimezone(tz), end.astimezone(tz)
    return f"{start:%A} {start.day} {start:%B} {start:%H:%M}–{end:%H:%M}"


def _create(
    *, link: TrackingLink, order: Order, kind: str, now: datetime, message: str, **fields
) -> CustomerRequest:
    request = CustomerRequest.objects.create(
        organization_id=order.organization_id, order=order, link=link, kind=kind, created_at=now, **fields
    )
    alerts.alert_raise(
        organization_id=order.organization_id,
        kind=Alert.Kind.CUSTOMER_REQUEST,
        key=_alert_key(request.pk),
        message=message,
        details={"request": request.pk, "order": order.pk, "request_kind": kind},
        now=now,
    )
    webhooks.webhooks_for_customer_request(request=request, now=now)  # "customer_request.created"
    return request


def _order(link: TrackingLink, *, lock: bool = False) -> Order:
    orders = Order.objects.select_related("organization")
    if lock:  # one request at a time per order (no-op on SQLite, which serialises writers)
        orders = orders.select_for_update(of=("self",))
    return orders.get(pk=link.order_id)


# --- The slots a customer may choose ----------------------------------------------------------


def _parse_slots(raw: Any) -> list[tuple[time, time]]:
    """["08:00-12:00", …] → sorted (start, end) times; malformed or empty entries are skipped."""
    slots = set()
    for entry in raw if isinstance(raw, list) else []:
        start, sep, end = str(entry).partition("-")
        try:
            start_t, end_t = time.fromisoformat(start.strip()), time.fromisoformat(end.strip())
        except ValueError:
            continue
        if sep and end_t > start_t:
            slots.add((start_t, end_t))
    return sorted(slots)


def offered_slots(
    *, order: Order, now: datetime, options: TrackingSettings | None = None
) -> list[tuple[datetime, datetime]]:
    """Windows the customer may ask for: each configured slot on today and the next
    slot_days_ahead days (organisation's zone), starting after `now`, except the order's current
    window. Aware datetimes in the organisation's zone, in time order."""
    tz = order.organization.tzinfo
    tracking_settings = options or settings_for(order.organization_id)
    parsed = _parse_slots(tracking_settings.window_slots)
    today = local_today(tz, now)
    offered = []
    for offset in range(tracking_settings.slot_days_ahead + 1):
        day = today + timedelta(days=offset)
        for start_t, end_t in parsed:
            try:
                start, end = local_datetime(day, start_t, tz), local_datetime(day, end_t, tz)
            except ValidationError:  # a wall-clock time skipped by a DST change
                continue
            if start <= now or (start == order.window_start and end == order.window_end):
                continue
            offered.append((start.astimezone(tz), end.astimezone(tz)))
    return offered


# --- The customer's requests ------------------------------------------------------------------


@transaction.atomic
def customer_instructions_set(
    *, link: TrackingLink, text: str, now: datetime | None = None
) -> CustomerRequest:
    """Store the customer's instructions on the order (the driver sees them) and tell the
    dispatcher. "" removes them. Raises ValidationError {"text": …}, RequestRefused, RateLimited."""
    now = now or timezone.now()
    _check_link(link, now)
    text = _clean_text(text, field="text", limit=INSTRUCTIONS_MAX, required=False)
    order = _order(link, lock=True)
    _check_open(order, "its instructions")
    if text == order.customer_instructions:
        raise ValidationError(
            {"text": "These are already your instructions." if text else "There are none to remove."}
        )
    _claim_rate(link, now)
    try:
        dispatch_services.order_customer_instructions_set(order=order, text=text, by=None, at=now)
    except ValidationError as exc:
        raise RequestRefused(exc.messages) from exc
    # Only the latest instructions matter: earlier ones leave the dashboard.
    earlier = CustomerRequest.objects.filter(order=order, kind=Kind.INSTRUCTIONS).values_list("pk", flat=True)
    alerts.alerts_resolve(
        organization_id=order.organization_id, keys={_alert_key(pk) for pk in earlier}, now=now
    )
    message = (
        f"{_ref(order)}: new instructions from the customer: “{text}”"
        if text
        else f"{_ref(order)}: the customer removed their instructions."
    )
    return _create(
        link=link,
        order=order,
        kind=Kind.INSTRUCTIONS,
        now=now,
        message=message,
        text=text,
        status=Status.NOTED,
    )


@transaction.atomic
def customer_window_request(
    *, link: TrackingLink, slot_start: datetime, slot_end: datetime, now: datetime | None = None
) -> CustomerRequest:
    """Ask for another window; it replaces the order's open window request, if any.

    Raises ValidationError {"slot": …} for a window that is not offered, RequestRefused,
    RateLimited."""
    now = now or timezone.now()
    _check_link(link, now)
    order = _order(link, lock=True)
    _check_open(order, "its time")
    if (slot_start, slot_end) not in offered_slots(order=order, now=now):
        raise ValidationError({"slot": "Choose one of the times offered; that one is not available."})
    _claim_rate(link, now)
    replaced = list(
        CustomerRequest.objects.filter(order=order, kind=Kind.WINDOW, status=Status.OPEN).values_list(
            "pk", flat=True
        )
    )
    CustomerRequest.objects.filter(pk__in=replaced, status=Status.OPEN).update(
        status=Status.DECLINED, decided_at=now, decision_note="Replaced by your newer request."
    )
    alerts.alerts_resolve(
        organization_id=order.organization_id, keys={_alert_key(pk) for pk in replaced}, now=now
    )
    current = (
        slot_label(order.window_start, order.window_end, order.organization)
        if order.window_start and order.window_end
        else f"{order.service_date:%A %d %B}, any time"
    )
    message = (
        f"{_ref(order)}: the customer asks for {slot_label(slot_start, slot_end, order.organization)} "
        f"instead of {current}."
    )
    return _create(
        link=link, order=order, kind=Kind.WINDOW, now=now, message=message,
        window_start=slot_start, window_end=slot_end,
    )  # fmt: skip


@transaction.atomic
def customer_message(*, link: TrackingLink, text: str, now: datetime | None = None) -> CustomerRequest:
    """A message for the dispatcher (also after delivery, while the link works).

    Raises ValidationError {"text": …}, RequestRefused, RateLimited."""
    now = now or timezone.now()
    _check_link(link, now)
    text = _clean_text(text, field="text", limit=MESSAGE_MAX, required=True)
    order = _order(link)
    _claim_rate(link, now)
    message = f"{_ref(order)}: message from the customer: “{text}”"
    return _create(link=link, order=order, kind=Kind.MESSAGE, now=now, message=message, text=text)


@transaction.atomic
def customer_rating(
    *, link: TrackingLink, rating: int, comment: str = "", now: datetime | None = None
) -> CustomerRequest:
    """Rate a delivered (or picked-up) order, once. Raises ValidationError {"rating"/"comment": …},
    RequestRefused, RateLimited."""
    now = now or timezone.now()
    _check_link(link, now)
    if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5:
        raise ValidationError({"rating": "Choose from 1 to 5 stars."})
    comment = _clean_text(comment, field="comment", limit=COMMENT_MAX, required=False)
    order = _order(link, lock=True)
    if order.status not in DONE_STATUSES:
        raise RequestRefused(f"You can rate your {_noun(order)} once it is done.")
    already = ValidationError({"rating": f"You have already rated this {_noun(order)}. Thank you!"})
    if CustomerRequest.objects.filter(order=order, kind=Kind.RATING).exists():
        raise already
    _claim_rate(link, now)
    stars = f"{rating}/5"
    message = f"{_ref(order)}: the customer rated the {_noun(order)} {stars}" + (
        f": “{comment}”" if comment else "."
    )
    try:
        with transaction.atomic():
            request = _create(
                link=link,
                order=order,
                kind=Kind.RATING,
                now=now,
                message=message,
                text=comment,
                rating=rating,
            )
            # On the order too, in the same transaction: reports read only dispatch's tables.
            dispatch_services.order_rating_record(order=order, rating=rating, comment=comment, at=now)
            return request
    except IntegrityError:  # a second tab submitted at the same moment
        raise already from None


# --- The dispatcher's side --------------------------------------------------------------------


def _move_order(request: CustomerRequest, by: AbstractBaseUser | None, now: datetime) -> None:
    order = Order.objects.select_related("organization").get(pk=request.order_id)
    if not order.is_open:
        raise ValidationError(
            f"{_ref(order)} is {order.get_status_display().lower()}; it can no longer be moved. "
            "Decline the request."
        )
    if request.window_start <= now:
        raise ValidationError("The window the customer asked for has already begun. Decline the request.")
    stop = (
        Stop.objects.filter(order=order, status__in=ACTIVE_STOP_STATUSES)
        .exclude(route__status=Route.Status.COMPLETED)
        .select_related("route__driver__user")
        .order_by("-pk")
        .first()
    )
    if stop is not None:
        if stop.status != Stop.Status.PENDING:
            raise ValidationError(
                f"{stop.route.driver} is already on the way to this stop "
                f"({stop.get_status_display().lower()}), "
                "so it cannot be moved now. Call the driver, or decline the request."
            )
        try:
            planning.stop_remove(stop=stop, by=by)
        except (dispatch_services.IllegalTransition, dispatch_services.StaleEdit) as exc:
            raise ValidationError(str(exc)) from exc
    tz = order.organization.tzinfo
    try:
        dispatch_services.order_update(
            order=order,
            by=by,
            service_date=request.window_start.astimezone(tz).date(),
            window_start=request.window_start,
            window_end=request.window_end,
        )
    except dispatch_services.StaleEdit as exc:
        raise ValidationError(str(exc)) from exc


def window_request_decide(
    *,
    request: CustomerRequest,
    accept: bool,
    by: AbstractBaseUser | None,
    note: str = "",
    now: datetime | None = None,
) -> CustomerRequest:
    """Accept (move the order to the asked window, off its route if it is on one) or decline an
    open window request; either way its alert is resolved and the customer sees the outcome.

    Raises ValidationError (not a window request, already decided, order closed or being
    visited, window begun, a note over DECISION_NOTE_MAX characters). Nothing changes then.
    """
    now = now or timezone.now()
    note = _clean_text(note, field="note", limit=DECISION_NOTE_MAX, required=False)
    by = by if by is not None and by.is_authenticated else None
    with transaction.atomic():
        current = CustomerRequest.objects.get(pk=request.pk)
        if current.kind != Kind.WINDOW:
            raise ValidationError("Only a request for another window can be accepted or declined.")
        new_status = Status.ACCEPTED if accept else Status.DECLINED
        claimed = CustomerRequest.objects.filter(pk=current.pk, status=Status.OPEN).update(
            status=new_status, decided_at=now, decided_by=by, decision_note=note
        )
        if claimed != 1:
            current.refresh_from_db()
            raise ValidationError(f"This request was already {current.get_status_display().lower()}.")
        if accept:
            _move_order(current, by, now)  # raising rolls the claim back
        alerts.alerts_resolve(organization_id=current.organization_id, keys={_alert_key(current.pk)}, now=now)
    current.refresh_from_db()
    return current


def customer_request_note(
    *, request: CustomerRequest, by: AbstractBaseUser | None, now: datetime | None = None
) -> CustomerRequest:
    """A dispatcher has read a message or rating: it becomes "noted" and its alert is
    acknowledged. Raises ValidationError for a window request (accept or decline it instead)."""
    now = now or timezone.now()
    if request.kind == Kind.WINDOW:
        raise ValidationError("Accept or decline a request for another window.")
    CustomerRequest.objects.filter(pk=request.pk, status=Status.OPEN).update(status=Status.NOTED)
    alert = Alert.objects.filter(
        organization_id=request.organization_id, key=_alert_key(request.pk), acknowledged_at=None
    ).first()
    if alert is not None:
        alerts.alert_acknowledge(
            alert=alert, by=by if by is not None and by.is_authenticated else None, now=now
        )
    request.refresh_from_db()
    return request


def customer_request_alert_acknowledged(*, alert: Alert) -> None:
    """The dashboard acknowledged a customer's message or rating: mark the request read too."""
    request_id = (alert.details or {}).get("request")
    if alert.kind != Alert.Kind.CUSTOMER_REQUEST or not request_id:
        return
    CustomerRequest.objects.filter(
        pk=request_id,
        organization_id=alert.organization_id,
        kind__in=[Kind.MESSAGE, Kind.RATING],
        status=Status.OPEN,
    ).update(status=Status.NOTED)


# --- Reads for the pages ----------------------------------------------------------------------


def customer_requests_visible_to(*, organization: Organization) -> QuerySet[CustomerRequest]:
    return CustomerRequest.objects.filter(organization=organization)


def _describe(request: CustomerRequest, order: Order) -> str:
    """What the customer reads about one of their requests."""
    noun = _noun(order)
    if request.kind == Kind.WINDOW:
        slot = slot_label(request.window_start, request.window_end, order.organization)
        if request.status == Status.ACCEPTED:
            return f"Accepted: your {noun} is now on {slot}."
        if request.status == Status.DECLINED:
            return f"Declined: your {noun} stays as planned (you asked for {slot})."
        return f"Waiting for an answer: you asked for {slot}."
    if request.kind == Kind.INSTRUCTIONS:
        return "Saved: your driver will see them." if request.text else "Removed."
    if request.kind == Kind.RATING:
        return f"You rated it {request.rating} out of 5. Thank you!"
    return "Read by the team." if request.status == Status.NOTED else "Sent to the team."


def order_customer_requests(*, order: Order) -> list[CustomerRequest]:
    """The order's requests, newest first, each with `slot_label`, `when_label` (the
    organisation's zone) and `outcome`, the customer's wording (one query)."""
    requests = list(
        CustomerRequest.objects.filter(order=order)
        .select_related("decided_by")
        .order_by("-created_at", "-pk")
    )
    for request in requests:
        request.slot_label = (
            slot_label(request.window_start, request.window_end, order.organization)
            if request.window_start and request.window_end
            else ""
        )
        request.outcome = _describe(request, order)
        created = request.created_at.astimezone(order.organization.tzinfo)
        request.when_label = f"{created.day} {created:%b}, {created:%H:%M}"
    return requests


def page_context(
    *,
    link: TrackingLink,
    now: datetime,
    forms: dict[str, Any] | None = None,
    notice: str = "",
    error: str = "",
    options: TrackingSettings | None = None,
) -> dict[str, Any]:
    """What templates/tracking/_track_requests.html needs, under "self_service", plus
    "fingerprint_extra" for the tracking page's ETag and "requests_template" for its include.
    `forms` replaces blank forms by bound ones (with their errors); `notice`/`error` is a line
    shown at the top of the section."""
    order = _order(link)  # fresh: the customer may just have changed it
    usable = link_usable(link, now)
    is_open = usable and order.is_open
    slots = offered_slots(order=order, now=now, options=options) if is_open else []
    days: list[dict[str, Any]] = []
    for start, end in slots:
        if not days or days[-1]["date"] != start.date():
            days.append({"date": start.date(), "label": f"{start:%A} {start.day} {start:%B}", "slots": []})
        days[-1]["slots"].append({"value": slot_value(start, end), "start": start, "end": end,
                                  "label": f"{start:%H:%M}–{end:%H:%M}"})  # fmt: skip
    requests = order_customer_requests(order=order)[:20]
    rating = next((r for r in requests if r.kind == Kind.RATING), None)
    if rating is None and order.status in DONE_STATUSES:  # older than the 20 shown
        rating = CustomerRequest.objects.filter(order=order, kind=Kind.RATING).first()
    all_forms = {
        "instructions": InstructionsForm(initial={"text": order.customer_instructions}),
        "window": WindowForm(),
        "message": MessageForm(),
        "rating": RatingForm(),
    } | (forms or {})
    return {
        "self_service": {
            "token": link_token(link),
            "order": order,
            "noun": _noun(order),
            "usable": usable,
            "is_open": is_open,
            "slots": slots,
            "slot_days": days,
            "pending_window": next(
                (r for r in requests if r.kind == Kind.WINDOW and r.status == Status.OPEN), None
            ),
            "requests": requests,
            "rating": rating,
            "can_rate": usable and order.status in DONE_STATUSES and rating is None,
            "forms": all_forms,
            "notice": notice,
            "error": error,
        },
        "fingerprint_extra": [order.customer_instructions, [(r.pk, r.status) for r in requests]],
        # tracking/track.html includes this when it is set.
        "requests_template": "tracking/_track_requests.html",
    }


def errors_into(form, exc: ValidationError) -> None:
    """Put a service's ValidationError on the form: keyed messages on their field (when the form
    has it), the rest above the form."""
    if hasattr(exc, "error_dict"):
        for field, messages in exc.message_dict.items():
            target = field if field in form.fields else None
            for message in messages:
                form.add_error(target, message)
    else:
        for message in exc.messages:
            form.add_error(None, message)
