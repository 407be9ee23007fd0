"""Reads shaped for pages and endpoints. Every one is scoped to the caller's organisation."""

from datetime import date

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, F, Prefetch, Q, QuerySet

from dispatch.models import (
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


def membership_for(user: AbstractBaseUser | AnonymousUser | None) -> Membership | None:
    """The caller's membership (cached on the user object for the request), or None."""
    if user is None or not user.is_authenticated:
        return None
    if not hasattr(user, "_doorstep_membership"):
        user._doorstep_membership = (
            Membership.objects.select_related("organization").filter(user=user).first()
        )
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
