"""`manage.py seed_demo`: the demo organisation in Berlin (dispatch/demo.py), the same on every
run; its day starts at 07:30, or at the next quarter hour when seeded later in the day.

`make run` calls it with --if-empty on every start, so it must be quick and must never touch
a database that already has data; `simulate --publish-demo` gives the demo its later days.
"""

from typing import Any
from zoneinfo import ZoneInfo

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from dispatch.demo import (
    DEFAULT_PASSWORD,
    NAME,
    SLUG,
    TIMEZONE,
    DemoData,
    build_demo,
    demo_day_start,
    seed_demo,
)
from dispatch.models import Order, Organization
from dispatch.timeutils import local_today


class Command(BaseCommand):
    help = (
        "Create the demo organisation (Berlin): a depot, 8 drivers with vans and today's "
        "shifts, an address book and ~150 orders for today. Running it again changes nothing. "
        "Seeded after 07:30, the day starts at the next quarter hour."
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
        now = timezone.now()
        data = build_demo(local_today(tz, now), tz, start=demo_day_start(now, tz))
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
    first_shift = data.first_shift_starts_at.astimezone(ZoneInfo(TIMEZONE))
    return (
        f"Seeded “{NAME}” (slug {SLUG}) for {data.day:%a %d %b %Y} ({TIMEZONE}):\n"
        f"  1 depot ({data.depot['address']}), {len(data.drivers)} drivers with a van and a "
        f"shift today from {first_shift:%H:%M}, {len(data.contacts)} contacts,\n"
        f"  {len(data.orders)} orders for today ({pickups} pickups, {urgent} high priority).\n"
        f"Log in at /accounts/login/ with password “{password}” as: "
        f"{data.admin['username']} (superuser), {data.dispatcher['username']}, {drivers}."
    )
