"""Reads shaped for pages and endpoints. Every one is scoped to the caller's organisation."""

import hashlib
import hmac
from datetime import date

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, F, Prefetch, Q, QuerySet

from dispatch.models import (
    ApiKey,
    Contact,
    Depot,
    Driver,
    Membership,
    Order,
    Organization,
    Plan,
    Route,
    Shift,
    Stop,
    StopEvent,
    Vehicle,
)
from dispatch.reports import SecondsBetween


def membership_for(user: AbstractBaseUser | AnonymousUser | None) -> Membership | None:
    """The caller's membership (cached on the user object for the request), or None."""
    if user is None or not user.is_authenticated:
        return None
    if not hasattr(user, "_doorstep_membership"):
        # Loaded with the user by the session's and the token's authentication; this read is for
        # a user obtained otherwise. A get: .first() would order by Membership's joined ordering.
        try:
            user._doorstep_membership = Membership.objects.select_related("organization").get(user=user)
        except Membership.DoesNotExist:
            user._doorstep_membership = None
    return user._doorstep_membership


def organization_for(user: AbstractBaseUser) -> Organization | None:
    membership = membership_for(user)
    return membership.organization if membership else None


def _scoped(model, user: AbstractBaseUser) -> QuerySet:
    organization = organization_for(user)
    if organization is None:
        return model.objects.none()
    return model.objects.filter(organization=organization)


def orders_visible_to(user: AbstractBaseUser) -> QuerySet[Order]:
    return _scoped(Order, user)


def contacts_visible_to(user: AbstractBaseUser) -> QuerySet[Contact]:
    return _scoped(Contact, user)


def depots_visible_to(user: AbstractBaseUser) -> QuerySet[Depot]:
    return _scoped(Depot, user)


def vehicles_visible_to(user: AbstractBaseUser) -> QuerySet[Vehicle]:
    return _scoped(Vehicle, user).select_related("depot")


def drivers_visible_to(user: AbstractBaseUser) -> QuerySet[Driver]:
    return _scoped(Driver, user).select_related("user", "depot", "default_vehicle")


def shifts_visible_to(user: AbstractBaseUser) -> QuerySet[Shift]:
    return _scoped(Shift, user)


def routes_visible_to(user: AbstractBaseUser) -> QuerySet[Route]:
    return _scoped(Route, user).select_related("driver__user", "vehicle", "depot")


def plans_visible_to(user: AbstractBaseUser) -> QuerySet[Plan]:
    return _scoped(Plan, user).select_related("depot")


def order_list(
    *,
    user: AbstractBaseUser,
    service_date: date | None = None,
    status: str = "",
    depot: Depot | None = None,
    text: str = "",
) -> QuerySet[Order]:
    orders = orders_visible_to(user).select_related("depot")
    if service_date:
        orders = orders.filter(service_date=service_date)
    if status == "needs_location":
        orders = orders.filter(Q(lat__isnull=True) | Q(lng__isnull=True))
    elif status == "open":
        orders = orders.filter(status__in=Order.OPEN_STATUSES)
    elif status:
        orders = orders.filter(status=status)
    if depot:
        orders = orders.filter(depot=depot)
    for word in text.split()[:5]:
        orders = orders.filter(
            Q(external_ref__icontains=word)
            | Q(recipient_name__icontains=word)
            | Q(address__icontains=word)
            | Q(recipient_phone__icontains=word)
            | Q(recipient_email__icontains=word)
        )
    # Orders with a window first (by its start); "any time" orders after them.
    return orders.order_by("service_date", F("window_start").asc(nulls_last=True), "pk")


def order_detail(*, user: AbstractBaseUser, pk: int) -> Order | None:
    return (
        orders_visible_to(user)
        .select_related("depot", "contact", "required_driver__user")
        .prefetch_related(
            Prefetch(
                "stops",
                queryset=Stop.objects.select_related("route__driver__user").order_by("pk"),
            ),
            Prefetch(
                "events",
                queryset=StopEvent.objects.select_related("actor", "stop").order_by("at", "pk"),
            ),
        )
        .filter(pk=pk)
        .first()
    )


def contact_list(*, user: AbstractBaseUser, text: str = "") -> QuerySet[Contact]:
    contacts = contacts_visible_to(user).annotate(order_count=Count("orders"))
    for word in text.split()[:5]:
        contacts = contacts.filter(
            Q(name__icontains=word)
            | Q(company__icontains=word)
            | Q(address__icontains=word)
            | Q(phone__icontains=word)
            | Q(email__icontains=word)
        )
    return contacts.order_by("name", "pk")


def driver_list(*, user: AbstractBaseUser, day: date) -> QuerySet[Driver]:
    """Drivers with their shift on `day` (if any) prefetched as `shifts_today`."""
    return drivers_visible_to(user).prefetch_related(
        Prefetch("shifts", queryset=Shift.objects.filter(date=day), to_attr="shifts_today")
    )


def order_status_counts(*, user: AbstractBaseUser, day: date) -> dict[str, int]:
    rows = orders_visible_to(user).filter(service_date=day).values("status").annotate(n=Count("pk"))
    return {row["status"]: row["n"] for row in rows}


API_KEY_PREFIX = "dsk_"


def api_key_hash(raw: str) -> str:
    """SHA-256 of the whole key. Its secret part has 256 bits of randomness, so a plain hash
    cannot be brute-forced, and rotating SECRET_KEY does not break every integration."""
    return hashlib.sha256(raw.encode()).hexdigest()


def api_key_for_secret(raw: str) -> ApiKey | None:
    """The active key whose plain text is `raw`, or None (malformed, unknown or revoked).

    The prefix finds the row; the hash of the whole key, compared in constant time, proves it.
    """
    if not raw.startswith(API_KEY_PREFIX) or len(raw) > 200:
        return None
    prefix, _, secret = raw.removeprefix(API_KEY_PREFIX).partition("_")
    if not prefix or not secret:
        return None
    key = ApiKey.objects.select_related("organization").filter(prefix=prefix, revoked_at=None).first()
    if key is None or not hmac.compare_digest(key.key_hash, api_key_hash(raw)):
        return None
    return key


def api_keys_visible_to(user: AbstractBaseUser) -> QuerySet[ApiKey]:
    return _scoped(ApiKey, user).select_related("created_by").order_by("-created_at", "-pk")


def route_stops_planned_vs_actual(*, route: Route) -> QuerySet[Stop]:
    """The route's stops in order with their orders, and `delay_s`: actual minus planned arrival
    in seconds (None until the driver arrives)."""
    return (
        route.stops.select_related("order")
        .annotate(delay_s=SecondsBetween("arrived_at", "planned_arrival"))
        .order_by("sequence")
    )
