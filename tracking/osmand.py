"""The OsmAnd protocol, as free tracker apps (Traccar Client, OsmAnd, GPSLogger…) send it.

A plain parser: request parts in, fix dicts for tracking.services.location_record_batch out.
Checked against the sources (issue #4 item 4):

- Query form — traccar/traccar src/main/java/org/traccar/protocol/OsmAndProtocolDecoder.java
  (decodeQuery): parameters come from the URL's query string, or, when it has none, from the
  body read as a query string (Traccar Client 10.x POSTs application/x-www-form-urlencoded,
  traccar/traccar-client issue #214). The device is `id` or `deviceid`; `timestamp` is unix
  seconds, or milliseconds when it is ≥ 2^31 (Integer.MAX_VALUE), or ISO 8601 when it contains
  "T", else "yyyy-MM-dd HH:mm:ss"; `lat`/`lon` or `location=lat,lon`; `speed` in knots (the
  decoder's default unit, convertSpeed(value, "kn")); `bearing` or `heading` in degrees;
  `altitude` (m), `accuracy` (m), `hdop`, `batt` (%); empty values are skipped; a
  missing timestamp means "now".
- JSON form — the same decoder's decodeJson, used when Content-Type is application/json, and
  traccar/traccar-client lib/preferences.dart (_locationTemplate, params {"device_id": id}):
  {"device_id": "...", "location": {"timestamp": ISO, "coords": {"latitude", "longitude",
  "accuracy", "speed" (m/s, negative = unknown), "heading" (negative = unknown), "altitude"},
  "is_moving", "odometer", "event", "battery": {"level": 0…1, "is_charging"}, "activity",
  "extras", "_": "&id=…&lat=…&lon=…&timestamp=…&"}}. The "_" string exists so that servers
  which read the body as a query string still find the fix; we read the JSON itself.
  The background-geolocation plugin underneath posts {"location": [...]} when it batches,
  so a list of locations is accepted too.

Altitude, battery, motion and odometer are parsed by neither us nor the model: the live map
needs position, time, accuracy, speed and heading only.
"""

import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

KNOT_MPS = 1852 / 3600
INT_MAX = 2**31 - 1  # Traccar: a smaller timestamp is seconds, a larger one milliseconds
MAX_LOCATIONS = 500  # the same cap as POST /api/v1/driver/locations/
# Fixed namespace for tracker fix ids: uuid5(namespace, device + time + coordinates) makes a
# retried request the same fix, so location_record_batch counts it as a duplicate.
FIX_NAMESPACE = uuid.UUID("5b0e0c3e-7f0a-4c39-9a53-0d3c2f7a1e64")


class OsmAndError(ValueError):
    """The request is not an OsmAnd message we can read; str() says what is wrong."""


@dataclass
class OsmAndMessage:
    key: str
    fixes: list[dict[str, Any]] = field(default_factory=list)


def fix_uuid(*, device_id: int, recorded_at: datetime, lat: float, lng: float) -> uuid.UUID:
    return uuid.uuid5(FIX_NAMESPACE, f"{device_id}|{recorded_at.isoformat()}|{lat!r}|{lng!r}")


def _is_json(body: bytes, content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == "application/json" or body.lstrip()[:1] == b"{"


def _form(query: Mapping[str, str], body: bytes) -> dict[str, str]:
    """The query-string parameters, or the body's when the URL has none (Traccar's order)."""
    params = {k: v for k, v in query.items() if v != ""}
    if params:
        return params
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OsmAndError("The body is neither JSON nor form data in UTF-8.") from exc
    return {k: values[-1] for k, values in parse_qs(text).items() if values[-1] != ""}


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise OsmAndError(f"The body is not valid JSON: {exc}.") from exc


def osmand_key(*, query: Mapping[str, str], body: bytes, content_type: str) -> str | None:
    """Just the device key, or None: to find the device (and rate-limit) before the full parse."""
    in_url = query.get("id") or query.get("deviceid")
    if in_url:
        return in_url
    try:
        if _is_json(body, content_type):
            root = _json(body)
            key = root.get("device_id") if isinstance(root, dict) else None
            return str(key) if key not in (None, "") else None
        params = _form(query, body)
    except OsmAndError:
        return None
    return params.get("id") or params.get("deviceid")


def _float(value: Any, name: str, *, unknown_below_zero: bool = False) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise OsmAndError(f"{name} must be a number, not {value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise OsmAndError(f"{name} must be a number, not {value!r}.") from exc
    if not math.isfinite(number):
        raise OsmAndError(f"{name} must be a finite number, not {value!r}.")
    if unknown_below_zero and number < 0:
        return None  # the apps send -1 for "no speed/heading"
    return number


def _timestamp(value: Any, *, now: datetime) -> datetime:
    """Unix seconds or milliseconds, or ISO 8601; naive times are read as UTC."""
    if value is None or value == "":
        return now
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None and math.isfinite(number):
        seconds = number / 1000 if abs(number) > INT_MAX else number
        try:
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise OsmAndError(f"timestamp {text!r} is out of range.") from exc
    try:
        parsed = datetime.fromisoformat(text.replace(" ", "T", 1) if "T" not in text else text)
    except ValueError as exc:
        raise OsmAndError(
            f"timestamp {text!r} is not unix seconds, milliseconds or an ISO 8601 time."
        ) from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _query_fix(params: dict[str, str], *, now: datetime) -> dict[str, Any]:
    lat, lng = params.get("lat"), params.get("lon")
    if (lat is None or lng is None) and "location" in params:
        parts = params["location"].split(",")
        if len(parts) != 2:
            raise OsmAndError("location must be “latitude,longitude”.")
        lat, lng = parts
    if lat is None or lng is None:
        raise OsmAndError("lat and lon are missing: send the position as lat=…&lon=….")
    speed_knots = _float(params.get("speed"), "speed")
    return {
        "recorded_at": _timestamp(params.get("timestamp"), now=now),
        "lat": _float(lat, "lat"),
        "lng": _float(lng, "lon"),
        "accuracy": _float(params.get("accuracy"), "accuracy"),
        "speed": None if speed_knots is None else speed_knots * KNOT_MPS,
        "heading": _float(params.get("bearing", params.get("heading")), "bearing"),
    }


def _json_fix(location: Any, index: int, *, now: datetime) -> dict[str, Any]:
    where = "location" if index < 0 else f"location[{index}]"
    if not isinstance(location, dict):
        raise OsmAndError(f"{where} must be an object with timestamp and coords.")
    coords = location.get("coords")
    if not isinstance(coords, dict):
        raise OsmAndError(f"{where}.coords is missing: it must hold latitude and longitude.")
    if coords.get("latitude") is None or coords.get("longitude") is None:
        raise OsmAndError(f"{where}.coords must hold latitude and longitude.")
    return {
        "recorded_at": _timestamp(location.get("timestamp"), now=now),
        "lat": _float(coords["latitude"], f"{where}.coords.latitude"),
        "lng": _float(coords["longitude"], f"{where}.coords.longitude"),
        "accuracy": _float(coords.get("accuracy"), f"{where}.coords.accuracy", unknown_below_zero=True),
        "speed": _float(coords.get("speed"), f"{where}.coords.speed", unknown_below_zero=True),
        "heading": _float(coords.get("heading"), f"{where}.coords.heading", unknown_below_zero=True),
    }


def osmand_parse(*, query: Mapping[str, str], body: bytes, content_type: str, now: datetime) -> OsmAndMessage:
    """The device key and its fixes (recorded_at aware UTC, lat, lng, accuracy m, speed m/s,
    heading °). No uuid yet: that needs the
    device (fix_uuid). Raises OsmAndError for anything that cannot be read; a fix that reads but
    is implausible (lat 95, a time in the future) is left to location_record_batch to reject."""
    if _is_json(body, content_type):
        root = _json(body)
        if not isinstance(root, dict):
            raise OsmAndError("The JSON body must be an object with device_id and location.")
        key = root.get("device_id")
        locations = root.get("location")
        if locations is None:
            raise OsmAndError("location is missing: the JSON body must hold a location object.")
        if isinstance(locations, list):
            if len(locations) > MAX_LOCATIONS:
                raise OsmAndError(f"At most {MAX_LOCATIONS} locations per request.")
            fixes = [_json_fix(loc, i, now=now) for i, loc in enumerate(locations)]
        else:
            fixes = [_json_fix(locations, -1, now=now)]
        if key in (None, ""):
            key = query.get("id") or query.get("deviceid")
        return OsmAndMessage(key="" if key is None else str(key), fixes=fixes)
    params = _form(query, body)
    key = params.get("id") or params.get("deviceid") or ""
    return OsmAndMessage(key=key, fixes=[_query_fix(params, now=now)])
