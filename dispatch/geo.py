"""Distances on the Earth, for every app (the lowest layer, so dispatch, pod and tracking share
one formula). The planner's matrices use the vectorised twin in dispatch.planner.matrix."""

import math

EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG), as dispatch.planner.matrix


def distance_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle distance in metres (haversine)."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi, dlmb = phi2 - phi1, math.radians(lng2 - lng1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, a)))
