import json
import math
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from dispatch.planner.matrix import (
    UNREACHABLE,
    OsrmModel,
    RoutingUnavailable,
    StraightLineModel,
    clear_cache,
    haversine_metres,
    scaled_durations,
    travel_model,
)

ALEXANDERPLATZ = (52.521918, 13.413215)
BRANDENBURGER_TOR = (52.516275, 13.377704)


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def _haversine_km(a, b):
    """Textbook formula, one pair at a time, to check the vectorised one."""
    lat1, lng1, lat2, lng2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lng2 - lng1) / 2) ** 2
    return 2 * 6371.0088 * math.asin(math.sqrt(h))


def test_alexanderplatz_to_brandenburger_tor_is_about_two_and_a_half_km_straight():
    metres = haversine_metres([ALEXANDERPLATZ, BRANDENBURGER_TOR])
    assert metres[0, 1] == pytest.approx(_haversine_km(ALEXANDERPLATZ, BRANDENBURGER_TOR) * 1000, abs=0.5)
    assert 2400 < metres[0, 1] < 2550


def test_straight_line_model_applies_detour_and_speed():
    durations, distances = StraightLineModel(speed_kmh=25, detour=1.3).matrices(
        [ALEXANDERPLATZ, BRANDENBURGER_TOR]
    )
    expected_m = _haversine_km(ALEXANDERPLATZ, BRANDENBURGER_TOR) * 1000 * 1.3
    assert distances.dtype == np.int64 and durations.dtype == np.int64
    assert distances[0, 1] == round(expected_m) == distances[1, 0]
    assert durations[0, 1] == round(expected_m / (25 / 3.6))  # about 7¾ minutes
    assert distances[0, 0] == durations[1, 1] == 0


def test_slower_speed_gives_proportionally_longer_times():
    points = [ALEXANDERPLATZ, BRANDENBURGER_TOR]
    fast, _ = StraightLineModel(speed_kmh=50).matrices(points)
    slow, _ = StraightLineModel(speed_kmh=25).matrices(points)
    assert slow[0, 1] == pytest.approx(2 * fast[0, 1], abs=1)


def test_thousand_points_matrix_matches_pairwise_formula():
    rng = np.random.default_rng(1)
    points = [(52.4 + rng.random() * 0.2, 13.2 + rng.random() * 0.4) for _ in range(1000)]
    durations, distances = StraightLineModel(detour=1.0).matrices(points)
    assert distances.shape == durations.shape == (1000, 1000)
    for i, j in [(0, 999), (17, 423), (500, 3)]:
        assert distances[i, j] == pytest.approx(_haversine_km(points[i], points[j]) * 1000, abs=1)


def test_same_points_come_from_the_cache_and_cannot_be_mutated():
    points = [ALEXANDERPLATZ, BRANDENBURGER_TOR]
    first = StraightLineModel().matrices(points)
    again = StraightLineModel().matrices(list(points))
    other = StraightLineModel(speed_kmh=30).matrices(points)
    assert again[0] is first[0] and other[0] is not first[0]
    with pytest.raises(ValueError):
        first[0][0, 1] = 1


def test_speed_factor_divides_durations():
    durations = np.array([[0, 100], [60, 0]], dtype=np.int64)
    assert scaled_durations(durations, 0.5).tolist() == [[0, 200], [120, 0]]
    assert scaled_durations(durations, 1.0) is durations


def test_settings_choose_the_model(settings):
    settings.ROUTING_URL = ""
    settings.ROUTING_SPEED_KMH = 40
    settings.ROUTING_DETOUR = 1.5
    model = travel_model()
    assert isinstance(model, StraightLineModel) and (model.speed_kmh, model.detour) == (40, 1.5)
    settings.ROUTING_URL = "http://osrm.internal:5000/"
    model = travel_model()
    assert isinstance(model, OsrmModel) and model.base_url == "http://osrm.internal:5000"


# --- OSRM against a local server ------------------------------------------------------------


class _Osrm(BaseHTTPRequestHandler):
    """Answers /table/v1/driving/... like OSRM: durations = 10 × |i - j| s, distances = 100 × |i - j| m."""

    requests: list[str] = []
    mode = "ok"
    max_coords = 1000

    def log_message(self, *args):
        pass

    def _send(self, status, body):
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (the timeout test)

    def do_GET(self):
        type(self).requests.append(self.path)
        url = urlsplit(self.path)
        coords = url.path.split("/table/v1/driving/")[1].split(";")
        query = parse_qs(url.query)
        n = len(coords)
        if self.mode == "slow":
            time.sleep(1.0)
        if self.mode == "error":
            return self._send(
                400, {"code": "InvalidQuery", "message": "Query string malformed close to position 3"}
            )
        if self.mode == "garbage":
            return self._send(200, b"<html>502 Bad Gateway</html>")
        sources = [int(s) for s in query["sources"][0].split(";")] if "sources" in query else list(range(n))
        if len(sources) * n > self.max_coords**2:
            return self._send(400, {"code": "TooBig", "message": "Too many table coordinates"})
        durations = [[10.0 * abs(i - j) for j in range(n)] for i in sources]
        distances = [[100.0 * abs(i - j) for j in range(n)] for i in sources]
        if self.mode == "null":
            durations[0][-1] = None
            distances[0][-1] = None
        self._send(200, {"code": "Ok", "durations": durations, "distances": distances})


@pytest.fixture
def osrm():
    _Osrm.requests = []
    _Osrm.mode = "ok"
    _Osrm.max_coords = 1000
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Osrm)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield _Osrm, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


POINTS = [(52.52, 13.40), (52.50, 13.45), (52.53, 13.38)]


def test_osrm_table_is_read_into_int_matrices(osrm):
    handler, url = osrm
    durations, distances = OsrmModel(url).matrices(POINTS)
    assert durations.tolist() == [[0, 10, 20], [10, 0, 10], [20, 10, 0]]
    assert distances.tolist() == [[0, 100, 200], [100, 0, 100], [200, 100, 0]]
    path = handler.requests[0]
    assert path.startswith("/table/v1/driving/13.400000,52.520000;13.450000,52.500000;")  # lng,lat
    assert "annotations=duration,distance" in path


def test_osrm_is_asked_once_for_the_same_points(osrm):
    handler, url = osrm
    OsrmModel(url).matrices(POINTS)
    OsrmModel(url).matrices(POINTS)
    assert len(handler.requests) == 1


def test_osrm_too_big_table_is_fetched_in_row_batches(osrm):
    handler, url = osrm
    handler.max_coords = 2
    durations, _ = OsrmModel(url, max_table_size=2).matrices(POINTS)
    assert durations.tolist() == [[0, 10, 20], [10, 0, 10], [20, 10, 0]]
    assert len(handler.requests) == 4  # the refused whole table, then one row at a time
    assert all("sources=" in p for p in handler.requests[1:])


def test_osrm_unroutable_pair_is_unreachable_not_zero(osrm):
    handler, url = osrm
    handler.mode = "null"
    durations, distances = OsrmModel(url).matrices(POINTS)
    assert durations[0, 2] == distances[0, 2] == UNREACHABLE


def test_osrm_error_code_is_a_clear_error(osrm):
    handler, url = osrm
    handler.mode = "error"
    with pytest.raises(RoutingUnavailable) as excinfo:
        OsrmModel(url).matrices(POINTS)
    message = str(excinfo.value)
    assert url in message and "InvalidQuery" in message and "Traceback" not in message


def test_osrm_answer_that_is_not_a_table_is_a_clear_error(osrm):
    handler, url = osrm
    handler.mode = "garbage"
    with pytest.raises(RoutingUnavailable, match="not an OSRM table"):
        OsrmModel(url).matrices(POINTS)


def test_osrm_that_does_not_answer_in_time_is_a_clear_error(osrm):
    handler, url = osrm
    handler.mode = "slow"
    with pytest.raises(RoutingUnavailable, match=r"did not answer within 0\.2 s"):
        OsrmModel(url, timeout=0.2).matrices(POINTS)


def test_osrm_down_names_the_server_and_what_to_do():
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(RoutingUnavailable) as excinfo:
        OsrmModel(url, timeout=2).matrices(POINTS)
    message = str(excinfo.value)
    assert f"The routing server at {url} cannot be reached" in message
    assert "ROUTING_URL" in message
    assert excinfo.value.__cause__ is None and excinfo.value.__suppress_context__
