"""Plausible GPS fixes: driver i drives a 400 m circle of its own around Berlin at 8 m/s.

The position is a function of the device time alone, so any two fixes of one driver are at
most 8 m/s apart and the app's speed-jump check never fires. lua/ingest.lua computes the same
track; keep the two in step.
"""

import math
import uuid
from datetime import UTC, datetime

RADIUS_M = 400.0
SPEED_MPS = 8.0
METRES_PER_DEGREE = 111_320.0


def fix(i: int, t: float, n: int = 0) -> dict:
    """Driver i's fix at epoch seconds t, as the app sends it (n varies the accuracy)."""
    lat0 = 52.52 + ((i * 7919) % 1000 / 1000 - 0.5) * 0.12
    lng0 = 13.405 + ((i * 104729) % 1000 / 1000 - 0.5) * 0.2
    a = SPEED_MPS / RADIUS_M * t + i
    return {
        "uuid": str(uuid.uuid4()),
        "recorded_at": datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds"),
        "lat": round(lat0 + RADIUS_M * math.cos(a) / METRES_PER_DEGREE, 7),
        "lng": round(lng0 + RADIUS_M * math.sin(a) / (METRES_PER_DEGREE * math.cos(math.radians(lat0))), 7),
        "accuracy": 5 + n % 10,
        "speed": SPEED_MPS,
        "heading": round(math.degrees(math.atan2(math.cos(a), -math.sin(a))) % 360, 1),
    }
