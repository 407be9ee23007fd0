"""Distances on the Earth for live data: how far a driver drove, how close he is to a stop."""

from collections.abc import Sequence

import numpy as np

from dispatch.geo import EARTH_RADIUS_M, distance_m

__all__ = ["EARTH_RADIUS_M", "MIN_HOP_M", "distance_m", "path_length_m"]
# Standing still, a phone's fixes wander by a few metres: a hop shorter than this, or than the
# later fix's own accuracy, is jitter and is not driven distance.
MIN_HOP_M = 10.0


def path_length_m(points: Sequence[tuple[float, float, float | None]]) -> float:
    """Length of a path of (lat, lng, accuracy_m) fixes in time order, without the jitter.

    Hops are judged one by one (never against an older anchor), so the length of a path is the
    sum of the lengths of its pieces: the ingest can extend a route's distance batch by batch
    and get what a recompute over all its fixes gets.
    """
    if len(points) < 2:
        return 0.0
    lat = np.radians(np.fromiter((p[0] for p in points), dtype=float, count=len(points)))
    lng = np.radians(np.fromiter((p[1] for p in points), dtype=float, count=len(points)))
    accuracy = np.fromiter((p[2] or 0.0 for p in points), dtype=float, count=len(points))
    a = np.sin(np.diff(lat) / 2) ** 2 + np.cos(lat[:-1]) * np.cos(lat[1:]) * np.sin(np.diff(lng) / 2) ** 2
    hops = 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(1.0, a)))
    return float(hops[hops >= np.maximum(MIN_HOP_M, accuracy[1:])].sum())
