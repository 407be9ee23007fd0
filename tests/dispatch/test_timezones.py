"""TZ-1, TZ-2, TZ-4: wall-clock times on DST days, the local→UTC rule, and the org-local "today".

Rule under test (dispatch/timeutils.py): a local time skipped by a spring-forward jump is
rejected with a message naming it and the first valid time; a time that occurs twice in
autumn means its first occurrence (fold=0, still summer time). Stored instants are UTC.
"""

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.urls import reverse
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatch.models import Membership, Order
from dispatch.timeutils import is_ambiguous, local_datetime, local_day_bounds, local_today
from tests.factories import MembershipFactory, OrderFactory, OrganizationFactory

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


# --- TZ-1: DST days through timeutils ------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "day"),
    [(BERLIN, date(2027, 3, 28)), (NEW_YORK, date(2027, 3, 14))],
    ids=["berlin", "new_york"],
)
def test_time_in_spring_forward_gap_is_rejected_naming_first_valid_time(tz, day):
    with pytest.raises(ValidationError) as excinfo:
        local_datetime(day, time(2, 30), tz)

    message = excinfo.value.messages[0]
    assert "02:30" in message and "03:00" in message
    assert excinfo.value.code == "nonexistent_time"


@pytest.mark.parametrize(
    ("at", "expected_utc"),
    [
        (time(1, 59), datetime(2027, 3, 28, 0, 59, tzinfo=UTC)),
        (time(3, 0), datetime(2027, 3, 28, 1, 0, tzinfo=UTC)),
    ],
    ids=["last-minute-before-gap", "first-minute-after-gap"],
)
def test_times_either_side_of_the_gap_are_accepted(at, expected_utc):
    assert local_datetime(date(2027, 3, 28), at, BERLIN).astimezone(UTC) == expected_utc


@pytest.mark.parametrize(
    ("tz", "day", "at", "expected_utc"),
    [
        (BERLIN, date(2027, 10, 31), time(2, 30), datetime(2027, 10, 31, 0, 30, tzinfo=UTC)),
        (NEW_YORK, date(2027, 11, 7), time(1, 30), datetime(2027, 11, 7, 5, 30, tzinfo=UTC)),
    ],
    ids=["berlin", "new_york"],
)
def test_ambiguous_autumn_time_means_its_first_occurrence(tz, day, at, expected_utc):
    assert is_ambiguous(day, at, tz)

    # Compared in UTC: PEP 495 makes an ambiguous time unequal to every instant in another zone.
    assert local_datetime(day, at, tz).astimezone(UTC) == expected_utc


@pytest.mark.parametrize(
    ("tz", "day", "start", "end", "hours"),
    [
        (BERLIN, date(2027, 10, 31), time(1, 0), time(4, 0), 4),
        (BERLIN, date(2027, 3, 28), time(1, 0), time(4, 0), 2),
        (NEW_YORK, date(2027, 11, 7), time(0, 30), time(3, 30), 4),
    ],
    ids=["berlin-fall-back", "berlin-spring-forward", "new_york-fall-back"],
)
def test_window_length_across_a_dst_change_is_the_real_elapsed_time(tz, day, start, end, hours):
    # Python subtracts two datetimes sharing a tzinfo by wall clock, ignoring the offset
    # change; windows, shifts and the planner need elapsed time (TZ-2: durations in UTC).
    length = local_datetime(day, end, tz) - local_datetime(day, start, tz)

    assert length == timedelta(hours=hours)


def test_ordinary_time_is_not_ambiguous():
    assert not is_ambiguous(date(2027, 10, 31), time(12, 0), BERLIN)


@pytest.mark.parametrize(
    ("tz", "day", "hours"),
    [
        (BERLIN, date(2027, 3, 28), 23),
        (BERLIN, date(2027, 10, 31), 25),
        (BERLIN, date(2027, 6, 1), 24),
        (NEW_YORK, date(2027, 3, 14), 23),
        (NEW_YORK, date(2027, 11, 7), 25),
    ],
)
def test_local_day_bounds_are_23_or_25_hours_on_dst_days(tz, day, hours):
    start, end = local_day_bounds(day, tz)

    assert end - start == timedelta(hours=hours)
    assert start.astimezone(tz).replace(tzinfo=None) == datetime.combine(day, time(0))


def test_local_today_is_the_organisations_calendar_day():
    at = datetime(2026, 11, 24, 23, 30, tzinfo=UTC)

    assert local_today(BERLIN, now=at) == date(2026, 11, 25)
    assert local_today(NEW_YORK, now=at) == date(2026, 11, 24)


# --- TZ-2: property over random zones and wall-clock times ---------------------------------------


def _next_transition(tz: ZoneInfo, after: datetime) -> datetime | None:
    """The first UTC instant within a year of `after` at which `tz` changes its offset."""
    low = after
    for _ in range(366):
        high = low + timedelta(days=1)
        if low.astimezone(tz).utcoffset() != high.astimezone(tz).utcoffset():
            while high - low > timedelta(minutes=1):
                mid = low + (high - low) / 2
                if low.astimezone(tz).utcoffset() == mid.astimezone(tz).utcoffset():
                    low = mid
                else:
                    high = mid
            return high
        low = high
    return None


# Zones with offset changes of every shape: 1 h, 30 min (Lord Howe), 2 h (Troll), a skipped
# day (Apia, 2011), negative DST (Dublin), DST paused for Ramadan (Casablanca).
DST_ZONES = [
    "Europe/Berlin", "Europe/London", "Europe/Dublin", "America/New_York", "America/St_Johns",
    "America/Santiago", "America/Sao_Paulo", "Australia/Sydney", "Australia/Lord_Howe",
    "Pacific/Chatham", "Pacific/Apia", "Asia/Tehran", "Africa/Casablanca", "Antarctica/Troll",
]  # fmt: skip


@st.composite
def wall_time_near_an_offset_change(draw) -> tuple[ZoneInfo, datetime]:
    """A wall time within an hour of an offset change, where random times almost never land
    (a gap is one hour a year)."""
    tz = ZoneInfo(draw(st.sampled_from(DST_ZONES)))
    start = draw(st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2060, 1, 1)))
    transition = _next_transition(tz, start.replace(tzinfo=UTC))
    if transition is None:
        return tz, start
    before = (transition - timedelta(minutes=1)).astimezone(tz).utcoffset()
    after = transition.astimezone(tz).utcoffset()
    earliest = transition.replace(tzinfo=None) + min(before, after) - timedelta(hours=1)
    minutes = int((abs(after - before) + timedelta(hours=2)).total_seconds() // 60)
    return tz, earliest + timedelta(minutes=draw(st.integers(0, minutes)))


def _check_round_trip_or_gap(tz: ZoneInfo, naive: datetime) -> None:
    # PEP 495: in a gap fold=0 takes the offset before the jump, which is the smaller one.
    first = naive.replace(tzinfo=tz, fold=0).utcoffset()
    second = naive.replace(tzinfo=tz, fold=1).utcoffset()

    if first < second:
        with pytest.raises(ValidationError):
            local_datetime(naive.date(), naive.time(), tz)
    else:
        aware = local_datetime(naive.date(), naive.time(), tz)
        assert aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == naive
        # An ambiguous time is its first occurrence: wall time minus the earlier offset.
        assert aware.astimezone(UTC) == (naive - first).replace(tzinfo=UTC)


@settings(max_examples=300, deadline=None)
@given(wall_time_near_an_offset_change())
def test_local_datetime_near_offset_changes_round_trips_or_rejects_only_gaps(case):
    _check_round_trip_or_gap(*case)


@settings(max_examples=200, deadline=None)
@given(st.timezones(), st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 12, 31)))
def test_local_datetime_in_any_zone_round_trips_or_rejects_only_gaps(tz, naive):
    _check_round_trip_or_gap(tz, naive)


# --- TZ-4: "today" on the dashboard follows the organisation's day -------------------------------


def _orders_today(html: str) -> int:
    match = re.search(r'<span class="value">(\d+)</span><span class="label">orders today</span>', html)
    return int(match.group(1))


@pytest.mark.parametrize(
    ("zone", "now", "heading", "count"),
    [
        ("Europe/Berlin", datetime(2026, 11, 24, 22, 30, tzinfo=UTC), "Tuesday 24 November", 2),
        ("Europe/Berlin", datetime(2026, 11, 24, 23, 30, tzinfo=UTC), "Wednesday 25 November", 1),
        # 03:30 UTC on the 25th is still 22:30 on the 24th in New York.
        ("America/New_York", datetime(2026, 11, 25, 3, 30, tzinfo=UTC), "Tuesday 24 November", 2),
    ],
    ids=["berlin-23:30", "berlin-00:30-next-day", "new_york-22:30"],
)
def test_dashboard_today_is_the_organisations_local_day(client, db, zone, now, heading, count):
    org = OrganizationFactory(timezone=zone)
    user = MembershipFactory(organization=org, role=Membership.Role.DISPATCHER).user
    OrderFactory.create_batch(2, organization=org, service_date=date(2026, 11, 24))
    OrderFactory(organization=org, service_date=date(2026, 11, 25))
    client.force_login(user)

    with time_machine.travel(now, tick=False):
        html = client.get(reverse("tracking:dashboard")).content.decode()

    assert f"Today, {heading}" in html
    assert _orders_today(html) == count


# --- TZ-1 through the order form -----------------------------------------------------------------


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _order_form(day: str, start: str, end: str) -> dict:
    return {
        "kind": "delivery",
        "recipient_name": "Window Test",
        "address": "Wiener Straße 1, 10999 Berlin",
        "service_date": day,
        "window_from": start,
        "window_to": end,
        "service_minutes": 5,
        "parcels": 1,
        "priority": "normal",
    }


@pytest.mark.parametrize(
    ("day", "start", "end", "start_utc", "end_utc"),
    [
        ("2027-03-27", "09:00", "12:00", _utc(2027, 3, 27, 8), _utc(2027, 3, 27, 11)),
        ("2027-03-28", "09:00", "12:00", _utc(2027, 3, 28, 7), _utc(2027, 3, 28, 10)),
        # 02:30 happens twice on 31 October: the first time, still summer time (UTC+2).
        ("2027-10-31", "02:30", "04:00", _utc(2027, 10, 31, 0, 30), _utc(2027, 10, 31, 3)),
    ],
    ids=["day-before-spring-forward", "spring-forward-day", "fall-back-ambiguous"],
)  # fmt: skip
def test_order_form_stores_berlin_window_in_utc(dispatcher_client, org, day, start, end, start_utc, end_utc):
    assert org.timezone == "Europe/Berlin"

    response = dispatcher_client.post(reverse("dispatch:order_create"), _order_form(day, start, end))

    assert response.status_code == 302
    order = Order.objects.get()
    assert (order.window_start, order.window_end) == (start_utc, end_utc)


def test_order_form_rejects_window_start_in_the_spring_forward_gap(dispatcher_client, org):
    response = dispatcher_client.post(
        reverse("dispatch:order_create"), _order_form("2027-03-28", "02:30", "12:00")
    )

    assert response.status_code == 200
    [error] = response.context["form"].errors["window_from"]
    assert "02:30" in error and "03:00" in error
    assert "03:00 or later" in response.content.decode()
    assert not Order.objects.exists()
