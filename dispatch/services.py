"""Every write in the core domain. Views, API actions, commands, tasks and tests call these.

Status changes use a conditional UPDATE (… WHERE status = <expected>), so two callers racing on
the same row cannot both succeed, and each appends a StopEvent in the same transaction.
"""

import secrets
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Model, Q
from django.utils import timezone

from dispatch import signals
from dispatch.models import (
    ApiKey,
    Contact,
    Depot,
    Driver,
    IdempotencyRecord,
    Membership,
    Order,
    Organization,
    Route,
    Shift,
    Stop,
    StopEvent,
    UserSession,
    Vehicle,
)
from dispatch.selectors import API_KEY_PREFIX, api_key_hash


class IllegalTransition(Exception):
    """A status change that the life cycle does not allow (e.g. delivering a cancelled order)."""


class StaleEdit(Exception):
    """The row changed since the caller read it; their copy would overwrite someone's work."""


S = Order.Status
ORDER_TRANSITIONS: dict[str, set[str]] = {
    S.NEW: {S.PLANNED, S.ASSIGNED, S.CANCELLED},
    S.PLANNED: {S.NEW, S.ASSIGNED, S.CANCELLED},
    S.ASSIGNED: {S.NEW, S.PLANNED, S.OUT_FOR_DELIVERY, S.CANCELLED},
    S.OUT_FOR_DELIVERY: {S.DELIVERED, S.PICKED_UP, S.FAILED, S.ASSIGNED, S.CANCELLED},
    S.FAILED: {S.PLANNED, S.ASSIGNED, S.NEW, S.CANCELLED},
    S.DELIVERED: set(),
    S.PICKED_UP: set(),
    S.CANCELLED: set(),
}
R = Route.Status
ROUTE_TRANSITIONS: dict[str, set[str]] = {
    R.DRAFT: {R.PUBLISHED},
    R.PUBLISHED: {R.IN_PROGRESS},
    R.IN_PROGRESS: {R.COMPLETED},
    R.COMPLETED: set(),
}
T = Stop.Status
STOP_TRANSITIONS: dict[str, set[str]] = {
    T.PENDING: {T.EN_ROUTE, T.ARRIVED, T.FAILED, T.SKIPPED},
    T.EN_ROUTE: {T.ARRIVED, T.FAILED, T.SKIPPED},
    T.ARRIVED: {T.COMPLETED, T.FAILED},
    T.COMPLETED: set(),
    T.FAILED: set(),
    T.SKIPPED: set(),
}
# The event recorded for a stop change that does not close the visit.
_STOP_KIND = {
    T.EN_ROUTE: "en_route",
    T.ARRIVED: "arrived",
    T.FAILED: "failed",
    T.SKIPPED: "skipped",
}


def _check_transition(table: Mapping[str, set[str]], what: str, current: str, to: str) -> None:
    if to not in table:
        raise IllegalTransition(f"“{to}” is not a status a {what} can have.")
    if to not in table[current]:
        allowed = ", ".join(sorted(table[current])) or "none: it is final"
        article = "An" if what[0] in "aeiou" else "A"
        raise IllegalTransition(
            f"{article} {what} that is {current.replace('_', ' ')} cannot become {to.replace('_', ' ')} "
            f"(allowed next: {allowed})."
        )


def _validated(instance: Model, exclude: Iterable[str] = ()) -> Model:
    """Run model validation (fields, uniqueness, constraints) so errors name their fields."""
    instance.full_clean(exclude=list(exclude))
    return instance


def _event(
    *,
    order: Order,
    kind: str,
    by: AbstractBaseUser | None,
    at: datetime | None = None,
    stop: Stop | None = None,
    from_status: str = "",
    to_status: str = "",
    reason: str = "",
    note: str = "",
    lat: float | None = None,
    lng: float | None = None,
) -> StopEvent:
    event = StopEvent.objects.create(
        organization_id=order.organization_id,
        order=order,
        stop=stop,
        kind=kind,
        from_status=from_status,
        to_status=to_status,
        reason=reason,
        note=note,
        lat=lat,
        lng=lng,
        at=at or timezone.now(),
        actor=by if by is not None and by.is_authenticated else None,
    )
    announce = {
        "event_id": event.pk,
        "order_id": order.pk,
        "organization_id": order.organization_id,
        "kind": kind,
        "to_status": to_status,
    }
    transaction.on_commit(lambda: signals.stop_event_recorded.send(sender=StopEvent, **announce))
    return event


# --- Organisations and people ---------------------------------------------------------------


@transaction.atomic
def organization_create(*, name: str, slug: str, timezone_name: str = "UTC") -> Organization:
    return _save(Organization(name=name, slug=slug, timezone=timezone_name))


@transaction.atomic
def membership_create(
    *,
    organization: Organization,
    username: str,
    role: str,
    password: str | None = None,
    first_name: str = "",
    last_name: str = "",
    email: str = "",
    is_staff: bool = False,
    is_superuser: bool = False,
) -> Membership:
    """A user and their place in the organisation. Raises ValidationError on a taken username."""
    User = get_user_model()
    if User.objects.filter(username__iexact=username).exists():
        raise ValidationError({"username": f"The username “{username}” is taken."})
    user = User(
        username=username,
        first_name=first_name,
        last_name=last_name,
        email=email,
        is_staff=is_staff,
        is_superuser=is_superuser,
    )
    if password:
        user.set_password(password)
    else:
        user.set_unusable_password()
    user.save()
    return _save(Membership(user=user, organization=organization, role=role))


def membership_daily_summary_set(*, membership: Membership, enabled: bool) -> Membership:
    """Turn the member's daily summary e-mail (tracking.summaries) on or off.

    Raises ValidationError when turning it on for a driver (the summary is for the portal's
    admins and dispatchers) or for a user without an e-mail address (nowhere to send it).
    Turning it off always works. Enqueues nothing: the morning schedule reads the flag.
    """
    if enabled and not membership.uses_portal:
        raise ValidationError("The daily summary is for dispatchers and admins.")
    if enabled and not membership.user.email.strip():
        raise ValidationError(
            "Your account has no e-mail address, so there is nowhere to send the summary: "
            "ask an admin to add one, then turn it on."
        )
    membership.daily_summary = enabled
    # save(), not update(): its post_save also drops the signed-in user cache's copy.
    membership.save(update_fields=["daily_summary"])
    return membership


@transaction.atomic
def driver_create(
    *,
    organization: Organization,
    username: str,
    first_name: str,
    last_name: str = "",
    email: str = "",
    password: str | None = None,
    **fields: Any,
) -> Driver:
    """A driver with their login. Raises ValidationError; nothing is kept if any part fails."""
    membership = membership_create(
        organization=organization,
        username=username,
        role=Membership.Role.DRIVER,
        password=password,
        first_name=first_name,
        last_name=last_name,
        email=email,
    )
    _check_same_organization(organization, fields)
    return _save(Driver(organization=organization, user=membership.user, **fields))


@transaction.atomic
def driver_update(
    *,
    driver: Driver,
    first_name: str | None = None,
    last_name: str | None = None,
    email: str | None = None,
    password: str | None = None,
    **fields: Any,
) -> Driver:
    """Change a driver and their login details; a blank password keeps the current one."""
    user = driver.user
    for name, value in (("first_name", first_name), ("last_name", last_name), ("email", email)):
        if value is not None:
            setattr(user, name, value)
    if password:
        user.set_password(password)
    user.save()
    _check_same_organization(driver.organization, fields)
    return _update(driver, fields)


def _save(instance: Model, exclude: Iterable[str] = ()) -> Model:
    _validated(instance, exclude)
    try:
        with transaction.atomic():
            instance.save()
    except IntegrityError as exc:  # a race past full_clean(): report it, don't 500
        raise ValidationError(f"Could not save: {exc}") from exc
    return instance


def _update(instance: Model, fields: Mapping[str, Any]) -> Model:
    for name, value in fields.items():
        setattr(instance, name, value)
    return _save(instance)


def _check_same_organization(organization: Organization, fields: Mapping[str, Any]) -> None:
    """Refuse a reference to another tenant's row (a forged form or API payload)."""
    for name, value in fields.items():
        other = getattr(value, "organization_id", None)
        if other is not None and other != organization.pk:
            raise ValidationError({name: "Choose one of your own organisation's records."})


# --- Fleet and address book -----------------------------------------------------------------


@transaction.atomic
def depot_create(*, organization: Organization, **fields: Any) -> Depot:
    return _save(Depot(organization=organization, **fields))


@transaction.atomic
def depot_update(*, depot: Depot, **fields: Any) -> Depot:
    return _update(depot, fields)


@transaction.atomic
def vehicle_create(*, organization: Organization, **fields: Any) -> Vehicle:
    _check_same_organization(organization, fields)
    return _save(Vehicle(organization=organization, **fields))


@transaction.atomic
def vehicle_update(*, vehicle: Vehicle, **fields: Any) -> Vehicle:
    _check_same_organization(vehicle.organization, fields)
    return _update(vehicle, fields)


@transaction.atomic
def shift_create(*, driver: Driver, **fields: Any) -> Shift:
    _check_same_organization(driver.organization, fields)
    return _save(Shift(organization_id=driver.organization_id, driver=driver, **fields))


@transaction.atomic
def shift_update(*, shift: Shift, **fields: Any) -> Shift:
    _check_same_organization(shift.organization, fields)
    return _update(shift, fields)


@transaction.atomic
def shift_delete(*, shift: Shift) -> None:
    shift.delete()


@transaction.atomic
def contact_create(*, organization: Organization, **fields: Any) -> Contact:
    return _save(Contact(organization=organization, **fields))


@transaction.atomic
def contact_update(*, contact: Contact, **fields: Any) -> Contact:
    return _update(contact, fields)


# --- Orders ---------------------------------------------------------------------------------

ORDER_EDITABLE_FIELDS = frozenset(
    {
        "kind", "external_ref", "contact", "depot", "recipient_name", "recipient_phone",
        "recipient_email", "address", "lat", "lng", "service_date", "window_start", "window_end",
        "service_minutes", "parcels", "priority", "required_driver", "instructions",
        "high_value", "parcel_codes", "require_pin",
    }
)  # fmt: skip


def _order_build(organization: Organization, fields: Mapping[str, Any]) -> Order:
    unknown = set(fields) - ORDER_EDITABLE_FIELDS
    if unknown:
        raise ValidationError(f"Unknown order fields: {', '.join(sorted(unknown))}.")
    _check_same_organization(organization, fields)
    return Order(organization=organization, **fields)


@transaction.atomic
def order_create(
    *,
    organization: Organization,
    by: AbstractBaseUser | None,
    at: datetime | None = None,
    **fields: Any,
) -> Order:
    """Create one order and its "created" event. Raises ValidationError with field messages."""
    order = _save(_order_build(organization, fields))
    _event(order=order, kind=StopEvent.Kind.CREATED, by=by, at=at, to_status=order.status)
    return order


@transaction.atomic
def orders_create_many(
    *,
    organization: Organization,
    by: AbstractBaseUser | None,
    rows: list[Mapping[str, Any]],
    prechecked: bool = False,
) -> list[Order]:
    """All rows or none. Raises ValidationError whose messages name the (1-based) row.

    `prechecked=True`: the caller ran orders_check_many on these rows in this transaction and
    found nothing (the REST API's bulk create does), so model validation is not run twice.
    """
    built, errors = [], []
    refs_seen: dict[str, int] = {}
    for number, fields in enumerate(rows, start=1):
        try:
            order = _order_build(organization, fields)
            if not prechecked:
                _validated(order)
        except ValidationError as exc:
            errors.extend(f"Row {number}: {message}" for message in _flat_messages(exc))
            continue
        if order.external_ref:
            if order.external_ref in refs_seen:
                errors.append(
                    f"Row {number}: external reference “{order.external_ref}” repeats row "
                    f"{refs_seen[order.external_ref]}."
                )
                continue
            refs_seen[order.external_ref] = number
        built.append(order)
    if errors:
        raise ValidationError(errors)
    now = timezone.now()
    created = []
    for order in built:
        order.save()
        created.append(order)
    StopEvent.objects.bulk_create(
        StopEvent(
            organization=organization,
            order=order,
            kind=StopEvent.Kind.CREATED,
            to_status=order.status,
            at=now,
            actor=by if by is not None and by.is_authenticated else None,
        )
        for order in created
    )
    return created


def _flat_messages(exc: ValidationError) -> list[str]:
    if hasattr(exc, "error_dict"):
        return [
            f"{field.replace('_', ' ')}: {message}" if field != "__all__" else message
            for field, messages in exc.message_dict.items()
            for message in messages
        ]
    return list(exc.messages)


@transaction.atomic
def order_update(
    *,
    order: Order,
    by: AbstractBaseUser | None,
    expected_version: int | None = None,
    at: datetime | None = None,
    **fields: Any,
) -> Order:
    """Change an open order's details.

    Raises ValidationError (bad values or a closed order), StaleEdit when `expected_version`
    is given and someone saved the order since.
    """
    unknown = set(fields) - ORDER_EDITABLE_FIELDS
    if unknown:
        raise ValidationError(f"Unknown order fields: {', '.join(sorted(unknown))}.")
    current = Order.objects.get(pk=order.pk)
    if expected_version is not None and current.version != expected_version:
        raise StaleEdit(
            f"Order {current} was changed by someone else since you opened it. "
            "Reload it to see their changes, then make yours again."
        )
    if not current.is_open:
        raise ValidationError(
            f"Order {current} is {current.get_status_display().lower()}; it can no longer be edited."
        )
    _check_same_organization(current.organization, fields)
    changed = sorted(name for name, value in fields.items() if getattr(current, name) != value)
    for name, value in fields.items():
        setattr(current, name, value)
    _validated(current)
    if not changed:
        return current
    updated = Order.objects.filter(pk=current.pk, version=current.version).update(
        **{name: getattr(current, name) for name in changed},
        version=F("version") + 1,
        updated_at=timezone.now(),
    )
    if updated != 1:
        raise StaleEdit(f"Order {current} was changed by someone else at the same time. Try again.")
    if ({"lat", "lng"} & set(changed)) and current.lat is not None:
        kind = StopEvent.Kind.LOCATED
    else:
        kind = StopEvent.Kind.UPDATED
    _event(order=current, kind=kind, by=by, at=at, note="Changed: " + ", ".join(changed))
    current.refresh_from_db()
    return current


def order_set_location(*, order: Order, lat: float, lng: float, by: AbstractBaseUser | None) -> Order:
    """Place an order on the map (e.g. one imported without coordinates)."""
    return order_update(order=order, by=by, lat=lat, lng=lng)


@transaction.atomic
def order_transition(
    *,
    order: Order,
    to: str,
    by: AbstractBaseUser | None,
    at: datetime | None = None,
    reason: str = "",
    stop: Stop | None = None,
    kind: str = StopEvent.Kind.STATUS,
    note: str = "",
    lat: float | None = None,
    lng: float | None = None,
) -> Order:
    """Move an order along its life cycle. Raises IllegalTransition; appends a StopEvent."""
    current = Order.objects.get(pk=order.pk)
    _check_transition(ORDER_TRANSITIONS, "order", current.status, to)
    if to == S.DELIVERED and current.kind == Order.Kind.PICKUP:
        raise IllegalTransition("A pickup ends as picked up, not delivered.")
    if to == S.PICKED_UP and current.kind == Order.Kind.DELIVERY:
        raise IllegalTransition("A delivery ends as delivered, not picked up.")
    updates: dict[str, Any] = {
        "status": to,
        "version": F("version") + 1,
        "updated_at": timezone.now(),
    }
    if to == S.CANCELLED:
        updates["cancel_reason"] = reason
    claimed = Order.objects.filter(pk=current.pk, status=current.status).update(**updates)
    if claimed != 1:
        raise IllegalTransition(f"Order {current} changed status at the same moment; reload and retry.")
    _event(
        order=current, kind=kind, by=by, at=at, stop=stop,
        from_status=current.status, to_status=to, reason=reason, note=note, lat=lat, lng=lng,
    )  # fmt: skip
    current.refresh_from_db()
    return current


ROUTE_STAGE = {R.DRAFT: S.PLANNED, R.PUBLISHED: S.ASSIGNED, R.IN_PROGRESS: S.OUT_FOR_DELIVERY}


def order_follow_route(
    *, order: Order, route: Route, by: AbstractBaseUser | None, stop: Stop | None = None
) -> Order:
    """Give an open order the stage of the route it is now on (draft → planned, published →
    assigned, started → out for delivery), stepping through legal transitions only."""
    target = ROUTE_STAGE.get(route.status)
    current = Order.objects.get(pk=order.pk)
    if target is None or current.status == target or not current.is_open:
        return current
    path, frontier, seen = {current.status: []}, [current.status], {current.status}
    while frontier and target not in path:
        status = frontier.pop(0)
        for following in sorted(ORDER_TRANSITIONS[status]):
            if following not in seen and following in {*ROUTE_STAGE.values(), S.NEW}:
                seen.add(following)
                path[following] = path[status] + [following]
                frontier.append(following)
    for status in path.get(target, []):
        current = order_transition(order=current, to=status, by=by, stop=stop)
    return current


def order_cancel(
    *, order: Order, by: AbstractBaseUser | None, reason: str = "", at: datetime | None = None
) -> Order:
    """Cancel an open order. Raises IllegalTransition if it is already delivered or cancelled."""
    return order_transition(
        order=order,
        to=S.CANCELLED,
        by=by,
        at=at,
        reason=reason.strip(),
        kind=StopEvent.Kind.CANCELLED,
    )


# --- Routes and stops -----------------------------------------------------------------------


@transaction.atomic
def route_create(
    *,
    organization: Organization,
    driver: Driver,
    depot: Depot,
    date: date,
    vehicle: Vehicle | None = None,
    orders: Iterable[Order] = (),
    plan=None,
) -> Route:
    """A draft route visiting `orders` in the given sequence (1, 2, …)."""
    _check_same_organization(organization, {"driver": driver, "depot": depot, "vehicle": vehicle})
    route = _save(
        Route(
            organization=organization,
            driver=driver,
            depot=depot,
            date=date,
            vehicle=vehicle,
            plan=plan,
        ),
        exclude=["plan"],
    )
    for sequence, order in enumerate(orders, start=1):
        _check_same_organization(organization, {"order": order})
        Stop.objects.create(organization=organization, route=route, order=order, sequence=sequence)
    return route


@transaction.atomic
def route_transition(
    *, route: Route, to: str, by: AbstractBaseUser | None, at: datetime | None = None
) -> Route:
    """Move a route along draft → published → in progress → completed. Raises IllegalTransition."""
    current = Route.objects.get(pk=route.pk)
    _check_transition(ROUTE_TRANSITIONS, "route", current.status, to)
    at = at or timezone.now()
    updates: dict[str, Any] = {"status": to, "version": F("version") + 1}
    if to == R.IN_PROGRESS:
        updates["started_at"] = at
    if to == R.COMPLETED:
        updates["completed_at"] = at
    if Route.objects.filter(pk=current.pk, status=current.status).update(**updates) != 1:
        raise IllegalTransition("The route changed status at the same moment; reload and retry.")
    # The orders on the route follow it: published → assigned, started → out for delivery.
    follow = {R.PUBLISHED: S.ASSIGNED, R.IN_PROGRESS: S.OUT_FOR_DELIVERY}.get(to)
    if follow:
        for stop in current.stops.filter(status=T.PENDING).select_related("order"):
            if stop.order.status != follow and follow in ORDER_TRANSITIONS[stop.order.status]:
                order_transition(order=stop.order, to=follow, by=by, at=at, stop=stop)
    current.refresh_from_db()
    return current


def route_travelled_set(*, route_id: int, metres: float, expected: int | None = None) -> bool:
    """Set how far the route's driver has driven so far (tracking's GPS ingest keeps it).

    With `expected`, a compare-and-set: the row changes only if it still holds `expected`, so
    two ingest requests extending the same distance at once never both add to one old value;
    the loser gets False and recomputes. Leaves Route.version alone: it guards dispatchers'
    edits, which a moving van must not make stale. Raises nothing; returns whether it changed.
    """
    routes = Route.objects.filter(pk=route_id)
    if expected is not None:
        routes = routes.filter(travelled_distance_m=expected)
    return routes.update(travelled_distance_m=max(0, round(metres))) == 1


@transaction.atomic
def stop_transition(
    *,
    stop: Stop,
    to: str,
    by: AbstractBaseUser | None,
    at: datetime | None = None,
    reason: str = "",
    note: str = "",
    lat: float | None = None,
    lng: float | None = None,
) -> Stop:
    """Record progress at a stop; completing or failing it closes the visit of its order.

    Raises IllegalTransition (e.g. completing a stop twice, or failing without a reason).
    """
    current = Stop.objects.select_related("order").get(pk=stop.pk)
    _check_transition(STOP_TRANSITIONS, "stop", current.status, to)
    if to == T.FAILED and not reason.strip():
        raise IllegalTransition("Say why the stop failed (e.g. nobody home, address not found).")
    at = at or timezone.now()
    updates: dict[str, Any] = {"status": to}
    if to == T.ARRIVED:
        updates["arrived_at"] = at
    if to in (T.COMPLETED, T.FAILED, T.SKIPPED):
        updates["departed_at"] = at
    if to == T.FAILED:
        updates["failure_reason"] = reason.strip()
    if to in (T.COMPLETED, T.FAILED):  # read by dispatch.reports (first-attempt success)
        earlier = Stop.objects.filter(order_id=current.order_id, status__in=(T.COMPLETED, T.FAILED))
        updates["first_attempt"] = not earlier.exclude(pk=current.pk).exists()
        # The window promised for this visit (on time / early / late), kept as it was now.
        updates["window_start"] = current.order.window_start
        updates["window_end"] = current.order.window_end
    if to == T.COMPLETED:  # normally None yet: tracking takes a rating only after delivery
        updates["rating"] = current.order.rating
    if Stop.objects.filter(pk=current.pk, status=current.status).update(**updates) != 1:
        raise IllegalTransition("The stop changed status at the same moment; reload and retry.")
    # The route changed too: a dispatcher's page or a re-plan proposal made before this is stale.
    Route.objects.filter(pk=current.route_id).update(version=F("version") + 1)
    order = current.order
    if to == T.COMPLETED:
        done = S.PICKED_UP if order.kind == Order.Kind.PICKUP else S.DELIVERED
        order_transition(
            order=order, to=done, by=by, at=at, stop=current, kind=done, note=note, lat=lat, lng=lng
        )
    elif to == T.FAILED:
        order_transition(
            order=order, to=S.FAILED, by=by, at=at, stop=current, reason=reason.strip(),
            kind=StopEvent.Kind.FAILED, note=note, lat=lat, lng=lng,
        )  # fmt: skip
    else:
        _event(
            order=order, kind=_STOP_KIND[to], by=by, at=at, stop=current,
            from_status=current.status, to_status=to, reason=reason, note=note, lat=lat, lng=lng,
        )  # fmt: skip
    current.refresh_from_db()
    announce = {
        "stop_id": current.pk,
        "organization_id": current.organization_id,
        "route_id": current.route_id,
        "status": to,
    }
    transaction.on_commit(lambda: signals.stop_status_changed.send(sender=Stop, **announce))
    return current


# --- Housekeeping ---------------------------------------------------------------------------

IMPORT_UPLOADS_DIR = "imports"  # where dispatch.import_views keeps uploads awaiting confirmation


def import_uploads_purge(*, older_than: timedelta = timedelta(days=1), now: datetime | None = None) -> int:
    """Delete CSV uploads nobody confirmed or cancelled. Safe to run twice; returns how many."""
    from django.core.files.storage import default_storage

    cutoff = (now or timezone.now()) - older_than
    removed = 0
    if not default_storage.exists(IMPORT_UPLOADS_DIR):
        return 0
    folders, _ = default_storage.listdir(IMPORT_UPLOADS_DIR)
    for folder in folders:
        _, files = default_storage.listdir(f"{IMPORT_UPLOADS_DIR}/{folder}")
        for name in files:
            path = f"{IMPORT_UPLOADS_DIR}/{folder}/{name}"
            try:
                stale = default_storage.get_modified_time(path) < cutoff
            except FileNotFoundError:  # removed by a confirm or another sweep meanwhile
                continue
            if stale:
                default_storage.delete(path)
                removed += 1
    return removed


# --- What the customer asked for (tracking's self-service page calls this) --------------------

CUSTOMER_INSTRUCTIONS_MAX = 500


@transaction.atomic
def order_customer_instructions_set(
    *, order: Order, text: str, by: AbstractBaseUser | None = None, at: datetime | None = None
) -> Order:
    """Replace the customer's own instructions (door code, safe place…) on an open order and
    note it in the history; "" removes them. The driver sees them beside `instructions`.

    Raises ValidationError for a closed order or text over CUSTOMER_INSTRUCTIONS_MAX characters.
    """
    text = text.strip()
    if len(text) > CUSTOMER_INSTRUCTIONS_MAX:
        raise ValidationError(
            {
                "customer_instructions": f"Keep it to {CUSTOMER_INSTRUCTIONS_MAX} characters "
                f"(this has {len(text)})."
            }
        )
    current = Order.objects.get(pk=order.pk)
    if not current.is_open:
        raise ValidationError(
            f"Order {current} is {current.get_status_display().lower()}; "
            "its instructions can no longer change."
        )
    if current.customer_instructions == text:
        return current
    updated = Order.objects.filter(pk=current.pk, status__in=Order.OPEN_STATUSES).update(
        customer_instructions=text, version=F("version") + 1, updated_at=timezone.now()
    )
    if updated != 1:
        raise ValidationError(f"Order {current} closed at the same moment; its instructions did not change.")
    note = f"Customer instructions: {text}" if text else "Customer instructions removed."
    _event(order=current, kind=StopEvent.Kind.NOTE, by=by, at=at, note=note)
    current.refresh_from_db()
    return current


# --- Live ETAs (kept by tracking's ETA engine) ----------------------------------------------

ETA_STOP_STATUSES = (T.PENDING, T.EN_ROUTE)


def stops_eta_set(*, etas: Mapping[int, datetime | None], now: datetime | None = None) -> int:
    """Store the live ETA of each stop in `etas` (stop id → ETA or None), stamped `now`.

    One UPDATE for any number of stops, and only of stops still pending or en route: a stop
    closed since the ETAs were computed keeps its last one. Leaves Route.version alone, like
    route_travelled_set. Returns how many stops changed.
    """
    if not etas:
        return 0
    import json

    from django.db import connection

    now = now or timezone.now()
    table = Stop._meta.db_table
    ids = list(etas)
    # bulk_update's CASE WHEN … per row is quadratic on PostgreSQL and goes 249 rows a query
    # on SQLite; 20,000 stops a minute need one statement joining a list of (id, eta) pairs.
    if connection.vendor == "postgresql":
        sql = (
            f"UPDATE {table} AS s SET eta = v.eta, eta_updated_at = %s "
            "FROM unnest(%s::bigint[], %s::timestamptz[]) AS v(id, eta) "
            "WHERE s.id = v.id AND s.status IN (%s, %s)"
        )
        params = [now, ids, [etas[pk] for pk in ids], *ETA_STOP_STATUSES]
    elif connection.vendor == "sqlite":
        adapt = connection.ops.adapt_datetimefield_value
        pairs = json.dumps([[pk, None if etas[pk] is None else adapt(etas[pk])] for pk in ids])
        sql = (
            f"UPDATE {table} SET eta = json_extract(v.value, '$[1]'), eta_updated_at = %s "
            f"FROM json_each(%s) AS v WHERE {table}.id = json_extract(v.value, '$[0]') "
            f"AND {table}.status IN (%s, %s)"
        )
        params = [adapt(now), pairs, *ETA_STOP_STATUSES]
    else:  # another database: correct, just slower
        stops = list(Stop.objects.filter(pk__in=ids, status__in=ETA_STOP_STATUSES).only("pk"))
        for stop in stops:
            stop.eta, stop.eta_updated_at = etas[stop.pk], now
        return Stop.objects.bulk_update(stops, ["eta", "eta_updated_at"], batch_size=500)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


# --- What reports read, recorded when it happens (by tracking and pod) ----------------------

TRAVELLED_PATH_MAX_POINTS = 500


def order_rating_record(*, order: Order, rating: int, comment: str = "", at: datetime) -> Order:
    """Store the customer's rating on the order, and on its successful stop for reports
    (tracking.customer.customer_rating calls it in the transaction that records the request).

    Raises ValidationError {"rating": …} outside 1–5. Leaves Order.version alone: a rating is
    not a dispatcher's edit, and must not make an open order form stale.
    """
    if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5:
        raise ValidationError({"rating": "A rating is from 1 to 5 stars."})
    Order.objects.filter(pk=order.pk).update(rating=rating, rating_comment=comment, rated_at=at)
    # Read by dispatch.reports (rating over successful stops) without joining the orders.
    Stop.objects.filter(order=order, status=Stop.Status.COMPLETED).update(rating=rating)
    order.rating, order.rating_comment, order.rated_at = rating, comment, at
    return order


def stop_proof_record(*, stop: Stop, at: datetime, complete: bool) -> Stop:
    """Note on the stop that its proof was captured at `at` and whether it held everything the
    organisation's policy asks for (pod.services.proof_record calls it in its transaction), so
    reports never read pod's tables. Raises nothing."""
    Stop.objects.filter(pk=stop.pk).update(proof_recorded_at=at, proof_complete=complete)
    stop.proof_recorded_at, stop.proof_complete = at, complete
    return stop


def route_travelled_paths_set(*, paths: Mapping[int, list[list[float]]]) -> int:
    """Store each route's simplified driven path (route id → [[lat, lng], …], at most
    TRAVELLED_PATH_MAX_POINTS points; tracking.paths builds them) in one UPDATE per 100 routes.

    Leaves Route.version alone, like route_travelled_set. Raises ValueError for a malformed or
    too long path (nothing is written then); returns how many routes changed.
    """
    routes = []
    for route_id, path in paths.items():
        if len(path) > TRAVELLED_PATH_MAX_POINTS:
            raise ValueError(
                f"A travelled path has at most {TRAVELLED_PATH_MAX_POINTS} points, not {len(path)}."
            )
        clean = []
        for point in path:
            lat, lng = (float(v) for v in point)
            if not (-90 <= lat <= 90 and -180 <= lng <= 180):
                raise ValueError(f"({lat}, {lng}) is not a position on the Earth.")
            clean.append([round(lat, 6), round(lng, 6)])
        routes.append(Route(pk=route_id, travelled_path=clean))
    return Route.objects.bulk_update(routes, ["travelled_path"], batch_size=100) if routes else 0


# --- API keys and idempotency records --------------------------------------------------------


@transaction.atomic
def api_key_create(
    *, organization: Organization, name: str, by: AbstractBaseUser | None
) -> tuple[ApiKey, str]:
    """A new key and its plain text, which exists only in this return value: show it once.

    The key is "dsk_<prefix>_<secret>"; the row keeps the prefix (to find it) and the SHA-256
    of the whole key. Raises ValidationError for a blank name or one an active key has.
    """
    name = name.strip()
    if not name:
        raise ValidationError({"name": "Name the key after what will use it, e.g. “Shopify shop”."})
    if ApiKey.objects.filter(organization=organization, name__iexact=name, revoked_at=None).exists():
        raise ValidationError({"name": "An active key with this name already exists."})
    prefix = secrets.token_hex(6)
    raw = f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    key = _save(
        ApiKey(
            organization=organization,
            name=name,
            prefix=prefix,
            key_hash=api_key_hash(raw),
            created_by=by if by is not None and by.pk is not None else None,
        )
    )
    return key, raw


def api_key_revoke(*, api_key: ApiKey, now: datetime | None = None) -> ApiKey:
    """Stop the key working at once (every request looks it up). Revoking twice changes nothing."""
    ApiKey.objects.filter(pk=api_key.pk, revoked_at=None).update(revoked_at=now or timezone.now())
    api_key.refresh_from_db()
    return api_key


def api_key_touch(*, api_key: ApiKey, now: datetime, resolution: timedelta) -> None:
    """Record use, at most once per `resolution`: a conditional UPDATE, so a burst of requests
    (or several processes) writes the row once, not once per request."""
    stale = Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - resolution)
    if ApiKey.objects.filter(stale, pk=api_key.pk).update(last_used_at=now):
        api_key.last_used_at = now


def idempotency_records_purge(*, older_than: timedelta, now: datetime | None = None) -> int:
    """Forget replayable answers older than `older_than` (abandoned in-flight ones too)."""
    cutoff = (now or timezone.now()) - older_than
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted


def orders_check_many(
    *, organization: Organization, rows: list[tuple[int, Mapping[str, Any]]]
) -> list[tuple[int, str, list[str]]]:
    """Validate orders about to be created together, without saving: (index, field, messages)
    for each problem, including an external reference repeated within the batch. The index is
    the caller's (e.g. the item's position in an API request); an empty list means all valid."""
    problems: list[tuple[int, str, list[str]]] = []
    refs_seen: dict[str, int] = {}
    # One query for every reference already taken (the constraint would name no field).
    wanted = {str(fields.get("external_ref") or "") for _, fields in rows} - {""}
    taken = set(
        Order.objects.filter(organization=organization, external_ref__in=wanted).values_list(
            "external_ref", flat=True
        )
    )
    for index, fields in rows:
        ref = fields.get("external_ref") or ""
        try:
            if ref in taken:
                raise ValidationError({"external_ref": f"An order with the reference “{ref}” exists."})
            order = _order_build(organization, fields)
            # Fields only: Django checks each model constraint with its own query (1,000 orders
            # took over a minute). The constraints are the window order, checked here, the
            # coordinate and parcel ranges, which the fields' validators check, and the unique
            # external reference, checked above in one query and within the batch below.
            order.full_clean(validate_unique=False, validate_constraints=False)
            if order.window_start and order.window_end and order.window_end <= order.window_start:
                raise ValidationError({"window_end": "The window must end after it starts."})
        except ValidationError as exc:
            if hasattr(exc, "error_dict"):
                problems += [
                    (index, "non_field_errors" if field == "__all__" else field, messages)
                    for field, messages in exc.message_dict.items()
                ]
            else:
                problems.append((index, "non_field_errors", list(exc.messages)))
            continue
        if order.external_ref:
            if order.external_ref in refs_seen:
                first = refs_seen[order.external_ref]
                problems.append((index, "external_ref", [f"“{order.external_ref}” repeats item {first}."]))
            else:
                refs_seen[order.external_ref] = index
    return problems


# --- Sessions -------------------------------------------------------------------------------


def sessions_end(*, users) -> int:
    """Sign `users` out everywhere: every session of theirs is deleted, its copy in Redis with it
    (dispatch.sessions.forget_cached_copy). Returns how many sessions were ended."""
    ended, _ = UserSession.objects.filter(user__in=users).delete()
    return ended
