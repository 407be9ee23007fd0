"""The demo organisation in Berlin (`manage.py seed_demo`) and its later days (`manage.py
simulate --publish-demo`), the same on every run.

The data are built first, as plain values from a fixed seed (`build_demo`), and then written in
one transaction through dispatch.services (`seed_demo`, `add_demo_day`), so a failure leaves
nothing behind. The demo's day begins when it is made: seeded in the afternoon, its shifts and
windows start at the next quarter hour instead of at 07:30, so the routes planned from them are
not late before a driver has moved.
"""

import itertools
import math
import random
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.core.exceptions import ValidationError
from django.db import transaction

from dispatch import demo_data, services
from dispatch.models import Contact, Depot, Driver, Membership, Order, Organization, Shift
from dispatch.planning import END_OF_DAY
from dispatch.timeutils import local_datetime

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
# The demo day as written in demo_data starts with the first shift (07:30). Made later, it is
# moved to start at the next quarter hour, at most so far that it still ends by the planner's
# END_OF_DAY (the early morning after).
DAY_START = min(time.fromisoformat(row[6]) for row in demo_data.DRIVERS)
_DAY_END = max(LAST_WINDOW_END, *(time.fromisoformat(row[7]) for row in demo_data.DRIVERS))

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
    def first_shift_starts_at(self) -> datetime:
        """When the day's first shift starts (the demo day's start)."""
        return min(person["shift"]["starts_at"] for person in self.drivers)

    @property
    def usernames(self) -> list[str]:
        people = (self.admin, self.dispatcher, *self.drivers)
        return [person["username"] for person in people]


def build_demo(day: date, tz: ZoneInfo, seed: int = SEED, *, start: time = DAY_START) -> DemoData:
    """The demo for local date `day`, its first shift starting at local time `start` (every
    shift and window moves with it): the same values for the same day, start, seed and tables."""
    rng = random.Random(seed)
    people = _People(rng)
    contacts = _contacts(rng, people)
    clock = _Clock(day, tz, offset=_minutes(start) - _minutes(DAY_START))
    return DemoData(
        day=day,
        depot=dict(demo_data.DEPOT),
        admin=_portal_user(demo_data.ADMIN),
        dispatcher=_portal_user(demo_data.DISPATCHER),
        drivers=_drivers(day, clock),
        contacts=contacts,
        orders=_orders(rng, people, contacts, day, clock),
    )


def demo_day_start(now: datetime, tz: ZoneInfo) -> time:
    """When a demo day made at `now` starts: at 07:30, or later in the day at the next quarter
    hour, but no later than leaves the whole day before the planner's END_OF_DAY (in elapsed
    time: a night the clocks go back is an hour longer)."""
    local = now.astimezone(tz)
    minutes = -(-(local.hour * 3600 + local.minute * 60 + local.second) // 900) * 15  # round up
    minutes = max(minutes, _minutes(DAY_START))
    midnight = _Clock(local.date(), tz, offset=0).at(0)
    while minutes > _minutes(DAY_START):
        clock = _Clock(local.date(), tz, offset=minutes - _minutes(DAY_START))
        if (clock.at(_minutes(_DAY_END)) - midnight).total_seconds() <= END_OF_DAY:
            break
        minutes -= 15
    return time(minutes // 60, minutes % 60)


def _minutes(moment: time) -> int:
    return moment.hour * 60 + moment.minute


@dataclass(frozen=True)
class _Clock:
    """Local wall-clock times of the demo day, `offset` minutes later than demo_data says."""

    day: date
    tz: ZoneInfo
    offset: int

    def at(self, minutes: int) -> datetime:
        """`minutes` after local midnight of the day (plus the offset), on the wall clock; past
        24 h, the next day. A time the clocks skip (spring forward) is the one they land on."""
        minutes += self.offset
        day = self.day + timedelta(days=minutes // 1440)
        wall = time(minutes % 1440 // 60, minutes % 60)
        try:
            return local_datetime(day, wall, self.tz)
        except ValidationError:  # in the gap: through UTC, as the clocks jump over it
            return datetime.combine(day, wall, self.tz).astimezone(UTC)


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


def demo_day_exists(organization: Organization, day: date) -> bool:
    return (
        Order.objects.filter(organization=organization, service_date=day).exists()
        or Shift.objects.filter(organization=organization, date=day).exists()
    )


@transaction.atomic
def add_demo_day(organization: Organization, data: DemoData) -> list[Order]:
    """Write the shifts and orders of `data.day` into the existing demo organisation: a later
    day of the same carrier. Drivers and contacts are found by username and by name and
    address; one that was deleted since is left out (an order then keeps its own recipient).
    Raises ValidationError; then nothing is kept."""
    depot = Depot.objects.filter(organization=organization, is_active=True).order_by("pk").first()
    if depot is None:
        raise ValidationError("The demo organisation has no active depot to deliver from.")
    drivers = {
        d.user.username: d
        for d in Driver.objects.filter(organization=organization).select_related("user", "default_vehicle")
    }
    for person in data.drivers:
        driver = drivers.get(person["username"])
        if driver is not None and driver.default_vehicle is not None:
            services.shift_create(driver=driver, vehicle=driver.default_vehicle, **person["shift"])
    contacts = {(c.name, c.address): c for c in Contact.objects.filter(organization=organization)}
    rows = []
    for fields in data.orders:
        source = None if fields["contact"] is None else data.contacts[fields["contact"]]
        contact = None if source is None else contacts.get((source["name"], source["address"]))
        rows.append({**fields, "depot": depot, "contact": contact})
    return services.orders_create_many(organization=organization, by=None, rows=rows)


def _drivers(day: date, clock: _Clock) -> tuple[dict[str, Any], ...]:
    def at(hhmm: str) -> datetime:
        return clock.at(_minutes(time.fromisoformat(hhmm)))

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
    clock: _Clock,
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
            "external_ref": f"DEMO-{day:%Y%m%d}-{index + 1:03d}",  # unique across the demo's days
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
            order["window_start"], order["window_end"] = _window(rng, clock)
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


def _window(rng: random.Random, clock: _Clock) -> tuple[datetime, datetime]:
    """A 2–4 hour window on the half hour, inside FIRST_WINDOW_START…LAST_WINDOW_END (moved
    with the day's start)."""
    length = rng.choices((120, 180, 240), weights=(3, 4, 3))[0]
    first = _minutes(FIRST_WINDOW_START)
    last = _minutes(LAST_WINDOW_END) - length
    start = rng.randrange(first, last + 1, 30)
    return clock.at(start), clock.at(start + length)


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
