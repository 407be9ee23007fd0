"""`manage.py seed_demo`: a demo organisation in Berlin, identical on every run.

`make run` calls it with --if-empty on every start, so it must be quick and must never touch
a database that already has data. The data are built first, as plain values from a fixed
seed (`build_demo`), and then written in one transaction through dispatch.services
(`seed_demo`), so a failure leaves nothing behind.
"""

import itertools
import math
import random
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from dispatch import demo_data, services
from dispatch.models import Membership, Order, Organization
from dispatch.timeutils import local_datetime, local_today

SLUG = "demo"
NAME = "Doorstep Demo Berlin"
TIMEZONE = "Europe/Berlin"
DEFAULT_PASSWORD = "demo"
SEED = 2026  # change it and every demo address, name and window changes with it

CONTACTS = 60
ORDERS = 150
PICKUPS = 8
HIGH_PRIORITY = 6
ORDERS_FROM_CONTACTS = 45
ORDERS_WITHOUT_WINDOW = 20
FIRST_WINDOW_START = time(8, 0)
LAST_WINDOW_END = time(18, 0)

# Fiction range of Berlin numbers (see demo_data); drivers get 101…, customers 200….
PHONE_PREFIX = "+493023125"


@dataclass(frozen=True)
class DemoData:
    """Everything seed_demo writes, as keyword arguments for the services."""

    day: date
    depot: dict[str, Any]
    admin: dict[str, Any]
    dispatcher: dict[str, Any]
    drivers: tuple[dict[str, Any], ...]  # each with "vehicle" and "shift" sub-dicts
    contacts: tuple[dict[str, Any], ...]
    orders: tuple[dict[str, Any], ...]  # "contact" is an index into `contacts` or None

    @property
    def usernames(self) -> list[str]:
        people = (self.admin, self.dispatcher, *self.drivers)
        return [person["username"] for person in people]


def build_demo(day: date, tz: ZoneInfo, seed: int = SEED) -> DemoData:
    """The demo for local date `day`: the same values for the same day, seed and tables."""
    rng = random.Random(seed)
    people = _People(rng)
    contacts = _contacts(rng, people)
    return DemoData(
        day=day,
        depot=dict(demo_data.DEPOT),
        admin=_portal_user(demo_data.ADMIN),
        dispatcher=_portal_user(demo_data.DISPATCHER),
        drivers=_drivers(day, tz),
        contacts=contacts,
        orders=_orders(rng, people, contacts, day, tz),
    )


@transaction.atomic
def seed_demo(data: DemoData, *, password: str) -> Organization:
    """Write `data` as the demo organisation. Raises ValidationError; then nothing is kept."""
    organization = services.organization_create(name=NAME, slug=SLUG, timezone_name=TIMEZONE)
    admin = services.membership_create(
        organization=organization,
        role=Membership.Role.ADMIN,
        password=password,
        is_staff=True,
        is_superuser=True,
        **data.admin,
    ).user
    services.membership_create(
        organization=organization,
        role=Membership.Role.DISPATCHER,
        password=password,
        **data.dispatcher,
    )
    depot = services.depot_create(organization=organization, **data.depot)
    for person in data.drivers:
        person = dict(person)
        vehicle = services.vehicle_create(organization=organization, depot=depot, **person.pop("vehicle"))
        shift = person.pop("shift")
        driver = services.driver_create(
            organization=organization,
            password=password,
            depot=depot,
            default_vehicle=vehicle,
            **person,
        )
        services.shift_create(driver=driver, vehicle=vehicle, **shift)
    contacts = [services.contact_create(organization=organization, **fields) for fields in data.contacts]
    rows = []
    for fields in data.orders:
        source = fields["contact"]
        rows.append({**fields, "depot": depot, "contact": None if source is None else contacts[source]})
    services.orders_create_many(organization=organization, by=admin, rows=rows)
    return organization


class Command(BaseCommand):
    help = (
        "Create the demo organisation (Berlin): a depot, 8 drivers with vans and today's "
        "shifts, an address book and ~150 orders for today. Running it again changes nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--password",
            default=DEFAULT_PASSWORD,
            help=f"Password of every demo login (default: {DEFAULT_PASSWORD}).",
        )
        parser.add_argument(
            "--if-empty",
            action="store_true",
            help="Do nothing if the database holds any organisation (used by `make run`).",
        )

    def handle(self, *args: Any, password: str, if_empty: bool, **options: Any) -> None:
        if not password:
            raise CommandError("--password must not be empty.")
        if if_empty and Organization.objects.exists():
            self.stdout.write("The database already has an organisation; not seeding the demo.")
            return
        existing = Organization.objects.filter(slug=SLUG).first()
        if existing is not None:
            self.stdout.write(f"The demo organisation “{existing}” already exists; nothing to do.")
            return
        tz = ZoneInfo(TIMEZONE)
        data = build_demo(local_today(tz), tz)
        taken = sorted(
            get_user_model().objects.filter(username__in=data.usernames).values_list("username", flat=True)
        )
        if taken:
            raise CommandError(
                f"Cannot seed the demo: these usernames are taken: {', '.join(taken)}. "
                "The demo needs admin, dispatcher and driver1…driver8; "
                "use an empty database or rename those users."
            )
        try:
            seed_demo(data, password=password)
        except ValidationError as exc:
            raise CommandError(f"Could not seed the demo: {'; '.join(exc.messages)}") from exc
        self.stdout.write(self.style.SUCCESS(_summary(data, password)))


def _summary(data: DemoData, password: str) -> str:
    pickups = sum(order["kind"] == Order.Kind.PICKUP for order in data.orders)
    urgent = sum(order["priority"] == Order.Priority.HIGH for order in data.orders)
    drivers = f"{data.drivers[0]['username']}…{data.drivers[-1]['username']}"
    return (
        f"Seeded “{NAME}” (slug {SLUG}) for {data.day:%a %d %b %Y} ({TIMEZONE}):\n"
        f"  1 depot ({data.depot['address']}), {len(data.drivers)} drivers with a van and a "
        f"shift today, {len(data.contacts)} contacts,\n"
        f"  {len(data.orders)} orders for today ({pickups} pickups, {urgent} high priority).\n"
        f"Log in at /accounts/login/ with password “{password}” as: "
        f"{data.admin['username']} (superuser), {data.dispatcher['username']}, {drivers}."
    )


def _drivers(day: date, tz: ZoneInfo) -> tuple[dict[str, Any], ...]:
    def at(hhmm: str) -> datetime:
        hours, minutes = map(int, hhmm.split(":"))
        return local_datetime(day, time(hours, minutes), tz)

    drivers = []
    for number, row in enumerate(demo_data.DRIVERS, start=1):
        username, first, last, van, registration, capacity, start, end, pause = row
        drivers.append(
            {
                "username": username,
                "first_name": first,
                "last_name": last,
                "email": f"{username}@example.com",
                "phone": f"{PHONE_PREFIX}{100 + number:03d}",
                "vehicle": {"name": van, "registration": registration, "capacity": capacity},
                "shift": {
                    "date": day,
                    "starts_at": at(start),
                    "ends_at": at(end),
                    "break_starts_at": at(pause),
                    "break_minutes": demo_data.BREAK_MINUTES,
                },
            }
        )
    return tuple(drivers)


def _contacts(rng: random.Random, people: "_People") -> tuple[dict[str, Any], ...]:
    """The address book: the businesses from demo_data first, then private customers."""
    contacts = []
    for index in range(CONTACTS):
        person = people.pick()
        contact = {
            "name": person["name"],
            "company": "",
            "phone": person["phone"],
            "email": person["email"],
            "address": person["address"],
            "lat": person["lat"],
            "lng": person["lng"],
            "default_instructions": "",
            "default_service_minutes": rng.choice((2, 3, 3, 4, 5)),
            "notes": "",
        }
        if index < len(demo_data.COMPANIES):
            company, instructions = demo_data.COMPANIES[index]
            contact |= {
                "company": company,
                "email": f"{_ascii(company).split()[0].lower()}@example.com",
                "default_instructions": instructions,
                "default_service_minutes": rng.choice((5, 8, 10)),
                "notes": "Business customer.",
            }
        elif rng.random() < 0.3:
            contact["default_instructions"] = rng.choice(demo_data.HOME_INSTRUCTIONS)
        contacts.append(contact)
    return tuple(contacts)


def _orders(
    rng: random.Random,
    people: "_People",
    contacts: tuple[dict[str, Any], ...],
    day: date,
    tz: ZoneInfo,
) -> tuple[dict[str, Any], ...]:
    """Today's orders: some for address-book contacts (by index), the rest one-off customers."""
    sources: list[int | None] = [rng.randrange(len(contacts)) for _ in range(ORDERS_FROM_CONTACTS)]
    sources += [None] * (ORDERS - ORDERS_FROM_CONTACTS)
    rng.shuffle(sources)
    pickups = set(rng.sample(range(ORDERS), PICKUPS))
    urgent = set(rng.sample(sorted(set(range(ORDERS)) - pickups), HIGH_PRIORITY))
    open_ended = set(rng.sample(sorted(set(range(ORDERS)) - urgent), ORDERS_WITHOUT_WINDOW))

    orders = []
    for index, source in enumerate(sources):
        if source is None:
            person = people.pick()
            has_email, has_note = rng.random() < 0.7, rng.random() < 0.25
            recipient = {
                "recipient_name": person["name"],
                "recipient_phone": person["phone"],
                "recipient_email": person["email"] if has_email else "",
                "address": person["address"],
                "lat": person["lat"],
                "lng": person["lng"],
                "instructions": rng.choice(demo_data.HOME_INSTRUCTIONS) if has_note else "",
                "service_minutes": rng.choice((2, 3, 3, 4, 5)),
            }
        else:
            contact = contacts[source]
            name, company = contact["name"], contact["company"]
            recipient = {
                "recipient_name": f"{name} ({company})" if company else name,
                "recipient_phone": contact["phone"],
                "recipient_email": contact["email"],
                "address": contact["address"],
                "lat": contact["lat"],
                "lng": contact["lng"],
                "instructions": contact["default_instructions"],
                "service_minutes": contact["default_service_minutes"],
            }
        order = {
            "external_ref": f"DEMO-{index + 1:04d}",
            "kind": Order.Kind.DELIVERY,
            "contact": source,
            "service_date": day,
            "window_start": None,
            "window_end": None,
            "parcels": rng.choices((1, 2, 3, 4, 6), weights=(55, 25, 10, 6, 4))[0],
            "priority": Order.Priority.NORMAL,
            **recipient,
        }
        if index in pickups:
            order |= {
                "kind": Order.Kind.PICKUP,
                "parcels": rng.choice((1, 1, 2)),
                "service_minutes": rng.choice((4, 5, 6)),
                "instructions": rng.choice(demo_data.PICKUP_INSTRUCTIONS),
            }
        if index in urgent:
            order |= {
                "priority": Order.Priority.HIGH,
                "instructions": rng.choice(demo_data.URGENT_INSTRUCTIONS),
            }
        if index not in open_ended:
            order["window_start"], order["window_end"] = _window(rng, day, tz)
        orders.append(order)
    return tuple(orders)


def _portal_user(row: tuple[str, str, str]) -> dict[str, str]:
    username, first, last = row
    return {
        "username": username,
        "first_name": first,
        "last_name": last,
        "email": f"{username}@example.com",
    }


def _window(rng: random.Random, day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """A 2–4 hour window on the half hour, inside FIRST_WINDOW_START…LAST_WINDOW_END."""
    length = rng.choices((120, 180, 240), weights=(3, 4, 3))[0]
    first = FIRST_WINDOW_START.hour * 60 + FIRST_WINDOW_START.minute
    last = LAST_WINDOW_END.hour * 60 + LAST_WINDOW_END.minute - length
    start = rng.randrange(first, last + 1, 30)
    end = start + length
    return (
        local_datetime(day, time(start // 60, start % 60), tz),
        local_datetime(day, time(end // 60, end % 60), tz),
    )


class _People:
    """Customers with distinct names, addresses and phone numbers."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.names: set[tuple[str, str]] = set()
        self.places = _Places(rng)
        self.phones = itertools.count(200)  # 100…199 are the drivers'

    def pick(self) -> dict[str, Any]:
        while True:
            first = self.rng.choice(demo_data.FIRST_NAMES)
            last = self.rng.choice(demo_data.LAST_NAMES)
            if (first, last) not in self.names:
                break
        self.names.add((first, last))
        address, lat, lng = self.places.pick()
        phone = next(self.phones)
        if phone > 999:
            raise ValueError("The fiction range has only 1,000 numbers; seed fewer customers.")
        return {
            "name": f"{first} {last}",
            "email": f"{_ascii(first)}.{_ascii(last)}@example.com".lower().replace(" ", ""),
            "phone": f"{PHONE_PREFIX}{phone:03d}",
            "address": address,
            "lat": lat,
            "lng": lng,
        }


class _Places:
    """Distinct street addresses on the demo segments, with their coordinates."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[tuple[str, str]] = set()
        self.districts = list(demo_data.DISTRICT_WEIGHTS)
        self.district_weights = [demo_data.DISTRICT_WEIGHTS[d] for d in self.districts]
        self.segments = {
            district: [s for s in demo_data.SEGMENTS if s.district == district] for district in self.districts
        }

    def pick(self) -> tuple[str, float, float]:
        while True:
            district = self.rng.choices(self.districts, weights=self.district_weights)[0]
            segments = self.segments[district]
            segment = self.rng.choices(segments, weights=[_length(s.points) for s in segments])[0]
            share = self.rng.uniform(0.05, 0.95)  # keep clear of the crossings at either end
            first, last = segment.numbers
            number = str(max(1, round(first + (last - first) * share) + self.rng.choice((0, 1))))
            if self.rng.random() < 0.08:
                number += self.rng.choice("ab")
            if (segment.street, number) in self.used:
                continue
            self.used.add((segment.street, number))
            lat, lng = _along(segment.points, share)
            return f"{segment.street} {number}, {segment.postcode} Berlin", lat, lng


def _metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    # Equirectangular: exact enough over the few hundred metres between two points of a street.
    dy = (b[0] - a[0]) * 111_195
    dx = (b[1] - a[1]) * 111_195 * math.cos(math.radians((a[0] + b[0]) / 2))
    return math.hypot(dx, dy)


def _length(points: tuple[tuple[float, float], ...]) -> float:
    return sum(_metres(a, b) for a, b in itertools.pairwise(points))


def _along(points: tuple[tuple[float, float], ...], share: float) -> tuple[float, float]:
    """The point `share` (0…1) of the way along a polyline, rounded to about 10 cm."""
    remaining = _length(points) * share
    for a, b in itertools.pairwise(points):
        step = _metres(a, b)
        if remaining <= step and step > 0:
            t = remaining / step
            return round(a[0] + (b[0] - a[0]) * t, 6), round(a[1] + (b[1] - a[1]) * t, 6)
        remaining -= step
    return points[-1]


_SPELLED_OUT = str.maketrans(
    {"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue", "ß": "ss", "ı": "i"}
)


def _ascii(text: str) -> str:
    """Müller → Mueller, Şahin → Sahin: the way a German e-mail address spells a name."""
    text = text.translate(_SPELLED_OUT)
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
