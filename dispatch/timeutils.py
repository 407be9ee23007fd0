"""Local wall-clock times <-> UTC instants, with explicit rules for DST days.

Rule (documented in docs/time.md): a local time that does not exist because the clocks jump
forward is rejected with a message naming the gap; a local time that occurs twice because the
clocks go back means its first occurrence (fold=0, still summer time).
"""

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.core.exceptions import ValidationError
from django.utils import timezone


def local_datetime(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The UTC instant for wall-clock `at` on `day` in `tz`. Raises ValidationError in a DST gap.

    UTC, not `tz`: Python subtracts two datetimes of one zone by wall clock, which gets a
    window's length wrong across a DST change.
    """
    naive = datetime.combine(day, at.replace(tzinfo=None, fold=0))
    aware = naive.replace(tzinfo=tz)
    if aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != naive:
        gap_end = _first_valid_after(naive, tz)
        raise ValidationError(
            f"{at:%H:%M} does not exist on {day:%d %b %Y} in {tz.key}: the clocks go forward. "
            f"Choose {gap_end:%H:%M} or later, or a time before the change.",
            code="nonexistent_time",
        )
    return aware.astimezone(UTC)


def is_ambiguous(day: date, at: time, tz: ZoneInfo) -> bool:
    naive = datetime.combine(day, at.replace(tzinfo=None))
    return naive.replace(tzinfo=tz, fold=0).utcoffset() != naive.replace(tzinfo=tz, fold=1).utcoffset()


def _first_valid_after(naive: datetime, tz: ZoneInfo) -> datetime:
    """The wall-clock time at which the clocks land when they jump over `naive`."""
    probe = naive
    for _ in range(24 * 60):  # gaps are an hour or less; a day bounds the search
        probe -= timedelta(minutes=1)
        aware = probe.replace(tzinfo=tz)
        if aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == probe:
            # `probe` is the last whole minute before the jump; one minute later is the jump.
            return (aware.astimezone(UTC) + timedelta(minutes=1)).astimezone(tz).replace(tzinfo=None)
    return naive


def local_today(tz: ZoneInfo, now: datetime | None = None) -> date:
    """The calendar day it is in `tz` (an organisation's "today")."""
    return (now or timezone.now()).astimezone(tz).date()


def local_day_bounds(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """UTC instants [start, end) of a local day; 23 or 25 hours long on DST days."""
    start = datetime.combine(day, time(0), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)
