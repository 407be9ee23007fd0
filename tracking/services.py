"""Writes for live data. Views, API views, the simulator and tests all call these."""

import math
import uuid as uuid_lib
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from dispatch.models import Driver
from tracking.models import DriverPosition, LocationPing, Source

MAX_FUTURE = timedelta(minutes=5)
MAX_AGE = timedelta(days=7)
MAX_SPEED_KMH = 250
EARTH_RADIUS_M = 6_371_008.8


def _distance_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle distance (haversine)."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi, dlmb = phi2 - phi1, math.radians(lng2 - lng1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, a)))


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _check(fix: Any, *, now: datetime) -> tuple[dict | None, str]:
    """A clean fix, or None and the reason it is implausible (Traccar's FilterHandler rules)."""
    if not isinstance(fix, dict):
        return None, "A fix must be an object with uuid, recorded_at, lat and lng."
    try:
        fix_uuid = (
            fix["uuid"] if isinstance(fix.get("uuid"), uuid_lib.UUID) else uuid_lib.UUID(str(fix["uuid"]))
        )
    except (KeyError, ValueError, TypeError, AttributeError):
        return None, "uuid is missing or not a UUID."
    recorded_at = fix.get("recorded_at")
    if not isinstance(recorded_at, datetime) or timezone.is_naive(recorded_at):
        return None, "recorded_at is missing or has no UTC offset."
    lat, lng = _number(fix.get("lat")), _number(fix.get("lng"))
    if lat is None or lng is None:
        return None, "lat and lng must both be numbers."
    if not -90 <= lat <= 90:
        return None, f"lat {lat} is outside -90…90."
    if not -180 <= lng <= 180:
        return None, f"lng {lng} is outside -180…180."
    if lat == 0 and lng == 0:
        return None, "(0, 0) is the position of a GPS without a fix, not a real place."
    if recorded_at > now + MAX_FUTURE:
        return None, "recorded_at is more than 5 minutes in the future; check the device clock."
    if recorded_at < now - MAX_AGE:
        return None, "recorded_at is more than 7 days old; such fixes are no longer accepted."
    accuracy = _number(fix.get("accuracy"))
    if accuracy is not None and accuracy < 0:
        return None, "accuracy must not be negative."
    return {
        "uuid": fix_uuid,
        "recorded_at": recorded_at,
        "lat": lat,
        "lng": lng,
        "accuracy_m": accuracy,
        "speed_mps": _number(fix.get("speed")),
        "heading_deg": _number(fix.get("heading")),
    }, ""


@transaction.atomic
def location_record_batch(
    *, driver: Driver, fixes: list[dict], source: str = Source.BROWSER, now: datetime | None = None
) -> dict:
    """Store a batch of GPS fixes for `driver` and move its DriverPosition forward.

    Each fix is a dict with uuid, recorded_at (aware datetime), lat, lng and optional accuracy
    (m), speed (m/s) and heading (degrees). Each is judged on its own: an implausible one is
    listed in "rejected" with its index and reason, the others are stored. A fix whose uuid this
    driver already sent is a duplicate and stores nothing. Low-accuracy and speed-jump fixes are
    stored with flags and never become the position. The driver is always the caller's
    (identity never comes from the fix). Raises nothing for bad fixes; enqueues nothing.

    Returns {"accepted", "duplicates", "rejected": [{"index", "uuid", "reason"}], "flagged"}.
    Under concurrent replays of one batch both requests may count a fix as accepted; the
    unique (driver, uuid) constraint still stores it once.
    """
    now = now or timezone.now()
    max_accuracy = getattr(settings, "GPS_MAX_ACCURACY_M", 500)
    max_speed_mps = MAX_SPEED_KMH / 3.6

    rejected, clean = [], []
    for index, fix in enumerate(fixes):
        row, reason = _check(fix, now=now)
        if row is None:
            raw_uuid = fix.get("uuid") if isinstance(fix, dict) else None
            rejected.append(
                {"index": index, "uuid": None if raw_uuid is None else str(raw_uuid), "reason": reason}
            )
        else:
            clean.append(row)

    # One query for every uuid of the batch: no per-fix lookups.
    seen = set(
        LocationPing.objects.filter(driver=driver, uuid__in={row["uuid"] for row in clean}).values_list(
            "uuid", flat=True
        )
    )
    new = []
    for row in clean:
        if row["uuid"] not in seen:  # also catches a uuid repeated inside the batch
            seen.add(row["uuid"])
            new.append(row)
    duplicates = len(clean) - len(new)
    if not new:
        return {"accepted": 0, "duplicates": duplicates, "rejected": rejected, "flagged": 0}

    # Speed is judged against the previous good fix in device time: for a late offline buffer
    # that is the good fix stored just before it, not the (newer) current position.
    new.sort(key=lambda row: row["recorded_at"])
    previous = (
        LocationPing.objects.filter(driver=driver, flags="", recorded_at__lt=new[0]["recorded_at"])
        .order_by("-recorded_at")
        .values("lat", "lng", "recorded_at")
        .first()
    )
    pings, flagged, newest_good = [], 0, None
    for row in new:
        flags = []
        if row["accuracy_m"] is not None and row["accuracy_m"] > max_accuracy:
            flags.append(LocationPing.Flag.LOW_ACCURACY)
        if previous is not None:
            seconds = (row["recorded_at"] - previous["recorded_at"]).total_seconds()
            metres = _distance_m(previous["lat"], previous["lng"], row["lat"], row["lng"])
            # Two fixes at the same instant more than 50 m apart cannot both be right.
            if (seconds > 0 and metres / seconds > max_speed_mps) or (seconds <= 0 and metres > 50):
                flags.append(LocationPing.Flag.SPEED_JUMP)
        if flags:
            flagged += 1
        else:
            previous = newest_good = row
        pings.append(
            LocationPing(
                organization_id=driver.organization_id,
                driver=driver,
                received_at=now,
                source=source,
                flags=",".join(flags),
                **row,
            )
        )
    LocationPing.objects.bulk_create(pings, ignore_conflicts=True)

    if newest_good is not None:
        _position_advance(driver=driver, row=newest_good, source=source, now=now)
    return {"accepted": len(new), "duplicates": duplicates, "rejected": rejected, "flagged": flagged}


def _position_advance(*, driver: Driver, row: dict, source: str, now: datetime) -> None:
    """Move the driver's position to `row` unless the stored one is as new or newer.

    A conditional UPDATE, not read-modify-write: two requests racing never move it backwards.
    """
    values = {
        "lat": row["lat"],
        "lng": row["lng"],
        "accuracy_m": row["accuracy_m"],
        "speed_mps": row["speed_mps"],
        "heading_deg": row["heading_deg"],
        "recorded_at": row["recorded_at"],
        "received_at": now,
        "source": source,
    }
    newer = DriverPosition.objects.filter(driver=driver, recorded_at__lt=row["recorded_at"])
    if newer.update(**values):
        return
    # No row yet, or a newer one. INSERT ... ON CONFLICT DO NOTHING, then the conditional
    # update once more in case another request created an older row in between.
    DriverPosition.objects.bulk_create(
        [DriverPosition(driver=driver, organization_id=driver.organization_id, **values)],
        ignore_conflicts=True,
    )
    newer.update(**values)
