"""One factory per model. A test sets only the fields its assertion is about."""

import datetime as dt

import factory
from django.contrib.auth import get_user_model

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

TODAY = dt.date(2026, 11, 24)


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization

    name = factory.Sequence(lambda n: f"Carrier {n}")
    slug = factory.Sequence(lambda n: f"carrier-{n}")
    timezone = "Europe/Berlin"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.PostGenerationMethodCall("set_password", "correct-horse-battery")

    @factory.post_generation
    def _save_password(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    organization = factory.SubFactory(OrganizationFactory)
    role = Membership.Role.DISPATCHER


class DepotFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Depot

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"Depot {n}")
    address = "Lindenstraße 1, 10969 Berlin"
    lat = 52.5035
    lng = 13.3989


class VehicleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Vehicle

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"Van {n}")
    capacity = 80


class DriverFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Driver
        skip_postgeneration_save = True

    organization = factory.SubFactory(OrganizationFactory)
    user = factory.SubFactory(UserFactory)
    phone = factory.Sequence(lambda n: f"+4915100000{n:03d}")

    @factory.post_generation
    def membership(obj, create, extracted, **kwargs):
        if create and not Membership.objects.filter(user=obj.user).exists():
            Membership.objects.create(
                user=obj.user, organization=obj.organization, role=Membership.Role.DRIVER
            )


def _at(day: dt.date, hour: int, minute: int = 0, tz: str = "Europe/Berlin") -> dt.datetime:
    from zoneinfo import ZoneInfo

    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=ZoneInfo(tz))


class ShiftFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Shift

    driver = factory.SubFactory(DriverFactory)
    organization = factory.SelfAttribute("driver.organization")
    date = TODAY
    starts_at = factory.LazyAttribute(lambda s: _at(s.date, 8))
    ends_at = factory.LazyAttribute(lambda s: _at(s.date, 17))


class ContactFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Contact

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Faker("name")
    phone = factory.Sequence(lambda n: f"+4930123{n:04d}")
    address = factory.Sequence(lambda n: f"Oranienstraße {n + 1}, 10999 Berlin")
    lat = 52.5016
    lng = 13.4190


class OrderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Order

    organization = factory.SubFactory(OrganizationFactory)
    external_ref = factory.Sequence(lambda n: f"SHOP-{n:05d}")
    recipient_name = factory.Faker("name")
    recipient_phone = factory.Sequence(lambda n: f"+4917000{n:05d}")
    address = factory.Sequence(lambda n: f"Wiener Straße {n + 1}, 10999 Berlin")
    lat = 52.4980
    lng = 13.4330
    service_date = TODAY
    window_start = factory.LazyAttribute(lambda o: _at(o.service_date, 9))
    window_end = factory.LazyAttribute(lambda o: _at(o.service_date, 12))


class PlanFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Plan

    organization = factory.SubFactory(OrganizationFactory)
    depot = factory.SubFactory(DepotFactory, organization=factory.SelfAttribute("..organization"))
    date = TODAY


class RouteFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Route

    organization = factory.SubFactory(OrganizationFactory)
    depot = factory.SubFactory(DepotFactory, organization=factory.SelfAttribute("..organization"))
    driver = factory.SubFactory(DriverFactory, organization=factory.SelfAttribute("..organization"))
    date = TODAY


ATTEMPTS = (Stop.Status.COMPLETED, Stop.Status.FAILED)


class StopFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Stop

    route = factory.SubFactory(RouteFactory)
    organization = factory.SelfAttribute("route.organization")
    order = factory.SubFactory(OrderFactory, organization=factory.SelfAttribute("..organization"))
    sequence = factory.Sequence(lambda n: n + 1)
    # What dispatch.services.stop_transition records when a visit ends: the order's first attempt
    # unless an attempt of it already exists (stops made in the order they happened).
    first_attempt = factory.LazyAttribute(
        lambda s: (
            not Stop.objects.filter(order=s.order, status__in=ATTEMPTS).exists()
            if getattr(s, "status", None) in ATTEMPTS
            else None
        )
    )
    # Also recorded when a visit ends: the order's window then (completed or failed), and its
    # rating on the successful stop (order_rating_record keeps that one up to date).
    window_start = factory.LazyAttribute(
        lambda s: s.order.window_start if getattr(s, "status", None) in ATTEMPTS else None
    )
    window_end = factory.LazyAttribute(
        lambda s: s.order.window_end if getattr(s, "status", None) in ATTEMPTS else None
    )
    rating = factory.LazyAttribute(
        lambda s: s.order.rating if getattr(s, "status", None) == Stop.Status.COMPLETED else None
    )


class StopEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = StopEvent

    order = factory.SubFactory(OrderFactory)
    organization = factory.SelfAttribute("order.organization")
    kind = StopEvent.Kind.NOTE
    at = factory.LazyFunction(lambda: _at(TODAY, 10))


class LocationPingFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "tracking.LocationPing"

    driver = factory.SubFactory(DriverFactory)
    organization = factory.SelfAttribute("driver.organization")
    uuid = factory.Faker("uuid4", cast_to=None)
    recorded_at = factory.LazyFunction(lambda: _at(TODAY, 10))
    received_at = factory.SelfAttribute("recorded_at")
    lat = 52.5035
    lng = 13.3989
    accuracy_m = 10.0


class DriverPositionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "tracking.DriverPosition"

    driver = factory.SubFactory(DriverFactory)
    organization = factory.SelfAttribute("driver.organization")
    recorded_at = factory.LazyFunction(lambda: _at(TODAY, 10))
    received_at = factory.SelfAttribute("recorded_at")
    lat = 52.5035
    lng = 13.3989
    accuracy_m = 10.0


class DriverActionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "tracking.DriverAction"

    driver = factory.SubFactory(DriverFactory)
    organization = factory.SelfAttribute("driver.organization")
    uuid = factory.Faker("uuid4", cast_to=None)
    kind = "arrived"
    recorded_at = factory.LazyFunction(lambda: _at(TODAY, 10))
    received_at = factory.SelfAttribute("recorded_at")
