"""Travel times and distances between points, behind one interface.

`StraightLineModel` (the default) is great-circle distance × a detour factor at a fixed speed,
computed with NumPy for the whole matrix at once (1,000 points in well under a second).
`OsrmModel` asks an OSRM server's table API (`ROUTING_URL`). Both answer
`(durations in seconds, distances in metres)` as int64 [n, n] arrays, indexed like `points`
(each a `(lat, lng)` pair in degrees), and both go through a small in-process LRU cache keyed by
the model's parameters and the exact points, so re-planning the same day does not recompute.
The returned arrays are read-only because they are shared through that cache.
"""

import http.client
import json
import threading
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG)
# OSRM answers null for a pair it cannot route (an island, a closed area). Such a pair costs
# about 31 years: never chosen, yet far below PyVRP's 2**44 ceiling, so sums cannot overflow.
UNREACHABLE = 10**9
CACHE_SIZE = 4  # 1,000 points take 16 MB per entry

Matrices = tuple[np.ndarray, np.ndarray]


class RoutingUnavailable(Exception):
    """The routing server could not give a travel-time table; the message says what to do."""


class TravelModel(Protocol):
    def matrices(self, points: Sequence[tuple[float, float]]) -> Matrices:
        """(durations in seconds, distances in metres), int64 [n, n], for (lat, lng) points."""
        ...


_cache: OrderedDict[tuple, Matrices] = OrderedDict()
_cache_lock = threading.Lock()


def _cached(key: tuple, compute: Callable[[], Matrices]) -> Matrices:
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    durations, distances = compute()
    durations.setflags(write=False)
    distances.setflags(write=False)
    with _cache_lock:
        _cache[key] = (durations, distances)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return durations, distances


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def _points_key(points: Sequence[tuple[float, float]]) -> tuple:
    return tuple((float(lat), float(lng)) for lat, lng in points)


def haversine_metres(points: Sequence[tuple[float, float]]) -> np.ndarray:
    """Great-circle distances in metres (float64 [n, n]) between (lat, lng) points."""
    coords = np.radians(np.asarray(points, dtype=np.float64).reshape(-1, 2))
    lat, lng = coords[:, 0], coords[:, 1]
    dlat = lat[None, :] - lat[:, None]
    dlng = lng[None, :] - lng[:, None]
    a = np.sin(dlat / 2) ** 2 + np.cos(lat)[:, None] * np.cos(lat)[None, :] * np.sin(dlng / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


class StraightLineModel:
    """Great-circle distance × `detour`, driven at `speed_kmh`."""

    def __init__(self, speed_kmh: float = 25.0, detour: float = 1.3):
        if not speed_kmh > 0:
            raise ValueError(f"speed_kmh must be positive, not {speed_kmh!r}")
        if not detour >= 1:
            raise ValueError(f"detour must be at least 1, not {detour!r}")
        self.speed_kmh = float(speed_kmh)
        self.detour = float(detour)

    def __repr__(self) -> str:
        return f"StraightLineModel(speed_kmh={self.speed_kmh}, detour={self.detour})"

    def matrices(self, points: Sequence[tuple[float, float]]) -> Matrices:
        key = ("straight", self.speed_kmh, self.detour, _points_key(points))
        return _cached(key, lambda: self._compute(points))

    def _compute(self, points: Sequence[tuple[float, float]]) -> Matrices:
        metres = haversine_metres(points) * self.detour
        seconds = metres / (self.speed_kmh / 3.6)
        return np.rint(seconds).astype(np.int64), np.rint(metres).astype(np.int64)


class OsrmModel:
    """Road travel times and distances from an OSRM server's table service.

    One request for the whole table; when the server refuses it as too big (OSRM's
    `--max-table-size`, 100 by default), rows are fetched in batches that fit `max_table_size`².
    Every failure raises RoutingUnavailable naming the server.
    """

    def __init__(self, base_url: str, timeout: float = 10.0, max_table_size: int = 100):
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.max_table_size = max_table_size

    def __repr__(self) -> str:
        return f"OsrmModel({self.base_url!r})"

    def matrices(self, points: Sequence[tuple[float, float]]) -> Matrices:
        key = ("osrm", self.base_url, _points_key(points))
        return _cached(key, lambda: self._compute(points))

    def _compute(self, points: Sequence[tuple[float, float]]) -> Matrices:
        n = len(points)
        if n == 0:
            empty = np.zeros((0, 0), dtype=np.int64)
            return empty, empty.copy()
        coords = ";".join(f"{float(lng):.6f},{float(lat):.6f}" for lat, lng in points)
        url = f"{self.base_url}/table/v1/driving/{coords}?annotations=duration,distance"
        answer = self._get(url, allow_too_big=True)
        if answer is not None:
            return self._parse(answer, n, n)
        rows_per_request = max(1, self.max_table_size**2 // n)
        durations = np.empty((n, n), dtype=np.int64)
        distances = np.empty((n, n), dtype=np.int64)
        for first in range(0, n, rows_per_request):
            rows = range(first, min(n, first + rows_per_request))
            sources = ";".join(map(str, rows))
            answer = self._get(f"{url}&sources={sources}", allow_too_big=False)
            durations[rows.start : rows.stop], distances[rows.start : rows.stop] = self._parse(
                answer, len(rows), n
            )
        return durations, distances

    def _get(self, url: str, *, allow_too_big: bool) -> dict | None:
        where = f"The routing server at {self.base_url}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
            answer = _json_or_none(body)
            code = answer.get("code") if isinstance(answer, dict) else None
            if code == "TooBig" and allow_too_big:
                return None
            detail = f"{code}: {answer.get('message', '')}" if code else f"HTTP {exc.code}"
            hint = " Raise osrm-routed's --max-table-size." if code == "TooBig" else ""
            raise RoutingUnavailable(f"{where} refused the travel-time table ({detail}).{hint}") from None
        except TimeoutError:
            raise RoutingUnavailable(
                f"{where} did not answer within {self.timeout:g} s. Check that it is running and not "
                "overloaded, or unset ROUTING_URL to use the built-in straight-line model."
            ) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError):
                raise RoutingUnavailable(
                    f"{where} did not answer within {self.timeout:g} s. Check that it is running, or "
                    "unset ROUTING_URL to use the built-in straight-line model."
                ) from None
            raise RoutingUnavailable(
                f"{where} cannot be reached ({reason}). Start it or correct ROUTING_URL, or unset "
                "ROUTING_URL to use the built-in straight-line model."
            ) from None
        answer = _json_or_none(body)
        if not isinstance(answer, dict):
            raise RoutingUnavailable(f"{where} answered something that is not an OSRM table (not JSON).")
        if answer.get("code") != "Ok":
            raise RoutingUnavailable(
                f"{where} refused the travel-time table ({answer.get('code')}: {answer.get('message', '')})."
            )
        return answer

    def _parse(self, answer: dict, rows: int, cols: int) -> Matrices:
        out = []
        for field in ("durations", "distances"):
            table = answer.get(field)
            if not isinstance(table, list) or len(table) != rows or any(len(r) != cols for r in table):
                raise RoutingUnavailable(
                    f"The routing server at {self.base_url} answered without a {rows}×{cols} "
                    f"'{field}' table. It needs OSRM 5.x with annotations=duration,distance."
                )
            try:
                values = np.array([[UNREACHABLE if v is None else v for v in r] for r in table], np.float64)
            except (TypeError, ValueError):
                raise RoutingUnavailable(
                    f"The routing server at {self.base_url} answered a '{field}' table with non-numbers."
                ) from None
            out.append(np.rint(np.minimum(values, UNREACHABLE)).astype(np.int64))
        return out[0], out[1]


def _json_or_none(body: bytes) -> object:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def scaled_durations(durations: np.ndarray, speed_factor: float) -> np.ndarray:
    """Durations for a vehicle `speed_factor` times as fast as the model's (a bike at 0.6)."""
    if speed_factor == 1:
        return durations
    return np.rint(durations / speed_factor).astype(np.int64)


def travel_model() -> TravelModel:
    """The model the settings select: OSRM when ROUTING_URL is set, else straight line × detour."""
    from django.conf import settings

    url = getattr(settings, "ROUTING_URL", "") or ""
    if url:
        return OsrmModel(url, timeout=float(getattr(settings, "ROUTING_TIMEOUT", 10.0)))
    return StraightLineModel(
        speed_kmh=float(getattr(settings, "ROUTING_SPEED_KMH", 25.0)),
        detour=float(getattr(settings, "ROUTING_DETOUR", 1.3)),
    )
