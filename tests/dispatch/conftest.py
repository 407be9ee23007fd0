"""Shared set-up for planning tests: a small real day in Kreuzberg."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from dispatch import planning
from dispatch.models import Plan
from tests.factories import DepotFactory, DriverFactory, OrderFactory, ShiftFactory, VehicleFactory

BERLIN = ZoneInfo("Europe/Berlin")
DAY = dt.date(2026, 11, 24)

# Real points in Kreuzberg/Neukölln, a few km apart.
POINTS = [
    (52.4990, 13.4180), (52.5030, 13.4110), (52.4950, 13.4230), (52.4870, 13.4250), (52.4920, 13.4380),
    (52.5010, 13.4300), (52.4890, 13.4080), (52.4970, 13.3990), (52.5060, 13.4260), (52.4830, 13.4330),
]  # fmt: skip


def at(hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(DAY, dt.time(hour, minute), tzinfo=BERLIN)


@pytest.fixture
def day(org, dispatcher, time_machine):
    """A depot, two drivers with vans and shifts, ten orders with windows.

    The clock stands at 06:00 on DAY (tests may move it on): planning treats today's past as
    gone, so the result must not depend on the day the suite runs.
    """
    time_machine.move_to(dt.datetime.combine(DAY, dt.time(6), tzinfo=BERLIN))
    depot = DepotFactory(organization=org, lat=52.5017, lng=13.4058)
    drivers = []
    for n in range(2):
        van = VehicleFactory(organization=org, capacity=30)
        driver = DriverFactory(
            organization=org, depot=depot, default_vehicle=van, user__first_name=f"Driver{n}"
        )
        ShiftFactory(driver=driver, starts_at=at(8), ends_at=at(17))
        drivers.append(driver)
    orders = [
        OrderFactory(
            organization=org,
            lat=lat,
            lng=lng,
            window_start=at(9 + n % 4),
            window_end=at(12 + n % 4),
            parcels=2,
        )
        for n, (lat, lng) in enumerate(POINTS)
    ]
    return {"depot": depot, "drivers": drivers, "orders": orders, "by": dispatcher}


def create_and_run(org, day, budget=1, **kwargs) -> Plan:
    plan = planning.plan_create(
        organization=org, by=day["by"], day=DAY, depot=day["depot"], time_budget_seconds=budget, **kwargs
    )
    planning.plan_run(plan_id=plan.pk)
    plan.refresh_from_db()
    return plan
