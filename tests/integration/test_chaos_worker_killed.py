"""CHAOS-3 (RELIABILITY.md): `kill -9` a gunicorn worker in the middle of a driver's proof-of-
delivery upload and of a stop completion; the app retries with the same `Idempotency-Key`.

A real `gunicorn` (two sync workers) serves the test database. No hook in the app holds a
request open; the test does it from outside, so the kill lands at a known point every time:

- mid-body (both databases): the request's headers and half its body are sent, and the worker
  that accepted the connection (found through /proc: the socket's inode) blocks reading the
  rest. Killed there, it leaves nothing: no key, no action, no proof, no file. The retry runs
  once; a repeat replays it; a changed body under the key is a 422.
- mid-handler (PostgreSQL): the test holds `LOCK TABLE dispatch_stop`, so the worker commits its
  key reservation and then waits inside the handler on its first read of the stop. A retry
  meanwhile is a 409 (in flight); the worker is killed; a retry is still a 409 until
  IDEMPOTENCY_IN_FLIGHT_SECONDS pass, then runs once. SQLite has no lock that holds a reader
  (WAL) without also holding the reservation's write, so this half is PostgreSQL's only.
"""

import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, transaction
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from django.utils import timezone
from PIL import Image
from rest_framework.authtoken.models import Token

from dispatch.models import IdempotencyRecord, Order, Route, Stop, StopEvent
from pod.models import ProofOfDelivery, ProofPhoto
from tests.factories import RouteFactory, StopFactory
from tests.integration import processes
from tests.integration.processes import database_url, free_port
from tracking.models import DriverAction

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

IN_FLIGHT_SECONDS = 4  # the server's IDEMPOTENCY_IN_FLIGHT_SECONDS (120 in production)


class Server:
    def __init__(self, media: Path, log: Path):
        self.port, self.media = free_port(), media
        env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
        env.update(
            DATABASE_URL=database_url(), MEDIA_ROOT=str(media), SECURE_SSL_REDIRECT="false",
            IDEMPOTENCY_IN_FLIGHT_SECONDS=str(IN_FLIGHT_SECONDS), LOG_LEVEL="WARNING",
        )  # fmt: skip
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{self.port}",
             "--workers", "2", "--worker-class", "sync", "--timeout", "30", "--graceful-timeout", "2",
             "--preload"],  # workers forked with the app loaded: a killed one is replaced at once
            cwd=settings.BASE_DIR, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def workers(self) -> list[int]:
        """The master's live workers (sync workers fork nothing of their own)."""
        return processes.descendants(self.process.pid)

    def worker_serving(self, client: socket.socket) -> int | None:
        """The worker holding the server end of `client`'s connection."""
        return processes.tcp_socket_owner(
            self.workers(), local_port=self.port, remote_port=client.getsockname()[1]
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


def wait_for(condition, timeout: float = 15):
    return processes.wait_for(condition, timeout, interval=0.05)


def _healthy(server: Server) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=2)
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(django_db_setup, tmp_path_factory):
    pytest.importorskip("gunicorn", reason="gunicorn is not installed")
    folder = tmp_path_factory.mktemp("chaos")
    server = Server(folder / "media", folder / "gunicorn.log")
    try:
        ready = wait_for(lambda: _healthy(server) and len(server.workers()) == 2, 30)
        assert ready, (folder / "gunicorn.log").read_text()[-3000:]
        yield server
    finally:
        server.stop()


# --- The driver's requests ------------------------------------------------------------------


def jpeg(colour=(200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(out, format="JPEG")
    return out.getvalue()


def png_signature() -> bytes:
    image = Image.new("RGBA", (120, 40), (0, 0, 0, 0))
    for x in range(10, 110):
        image.putpixel((x, 20), (0, 0, 0, 255))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def pod_request(stop: Stop, capture: uuid.UUID, colour=(200, 30, 30)) -> tuple[str, str, bytes]:
    fields = {
        "uuid": str(capture), "kind": "delivered", "at": timezone.now().isoformat(),
        "recipient_name": "Ada Lovelace", "lat": "52.4981", "lng": "13.4331",
        "photos": [SimpleUploadedFile("door.jpg", jpeg(colour), content_type="image/jpeg")],
        "signature": SimpleUploadedFile("signature.png", png_signature(), content_type="image/png"),
    }  # fmt: skip
    return f"/api/v1/driver/stops/{stop.pk}/pod/", MULTIPART_CONTENT, encode_multipart(BOUNDARY, fields)


def event_request(stop: Stop, action: uuid.UUID, note: str = "") -> tuple[str, str, bytes]:
    body = {"uuid": str(action), "kind": "delivered", "at": timezone.now().isoformat(), "note": note}
    return f"/api/v1/driver/stops/{stop.pk}/events/", "application/json", json.dumps(body).encode()


REQUESTS = {
    # (first request, the same key with a changed payload)
    "pod": (lambda stop, u: pod_request(stop, u), lambda stop, u: pod_request(stop, u, colour=(10, 200, 10))),
    "events": (
        lambda stop, u: event_request(stop, u),
        lambda stop, u: event_request(stop, u, note="changed"),
    ),
}


def head(server: Server, path: str, content_type: str, length: int, token: str, key: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nAuthorization: Token {token}\r\n"
        f"Idempotency-Key: {key}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()


def post(server: Server, request: tuple[str, str, bytes], token: str, key: str) -> tuple[int, dict, dict]:
    path, content_type, body = request
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=15)
    conn.request(
        "POST", path, body=body,
        headers={"Authorization": f"Token {token}", "Idempotency-Key": key, "Content-Type": content_type},
    )  # fmt: skip
    response = conn.getresponse()
    status, headers, text = response.status, dict(response.getheaders()), response.read()
    conn.close()
    return status, headers, json.loads(text)


def start(server: Server, request: tuple[str, str, bytes], token: str, key: str, sent: float):
    """Open a request and send its headers and the first `sent` share of its body; no more.
    Answers the client socket and the worker that accepted it."""
    path, content_type, body = request
    client = socket.create_connection(("127.0.0.1", server.port), timeout=15)
    client.sendall(head(server, path, content_type, len(body), token, key) + body[: int(len(body) * sent)])
    worker = wait_for(lambda: server.worker_serving(client))
    assert worker, "no worker took the connection"
    return client, worker


def kill(server: Server, worker: int) -> None:
    os.kill(worker, signal.SIGKILL)
    assert wait_for(lambda: worker not in server.workers()), "the worker outlived SIGKILL"
    # The master starts a replacement: two workers again for what follows.
    assert wait_for(lambda: len(server.workers()) == 2), "the master did not replace its worker"


def answered(client: socket.socket) -> bytes:
    try:
        return client.recv(65536)
    except ConnectionResetError:
        return b""
    finally:
        client.close()


# --- The world ------------------------------------------------------------------------------


@pytest.fixture
def stop(org, driver) -> Stop:
    """A stop of the driver's published route for the real today (the server runs on the clock)."""
    today = timezone.localdate(timezone=org.tzinfo)
    route = RouteFactory(organization=org, driver=driver, status=Route.Status.PUBLISHED, date=today)
    StopFactory(route=route, sequence=1, order__status=Order.Status.ASSIGNED, order__service_date=today)
    return route.stops.get()


@pytest.fixture
def token(driver) -> str:
    return Token.objects.create(user=driver.user).key


def media(server: Server) -> set[Path]:
    return {p for p in server.media.rglob("*") if p.is_file()} if server.media.exists() else set()


def proof_files(server: Server) -> set[Path]:
    paths = set()
    for proof in ProofOfDelivery.objects.all():
        paths |= {proof.signature.name} if proof.signature else set()
    for photo in ProofPhoto.objects.all():
        paths |= {photo.image.name, photo.thumbnail.name}
    return {server.media / name for name in paths}


def nothing_written(stop: Stop) -> bool:
    return not (
        DriverAction.objects.exists()
        or ProofOfDelivery.objects.exists()
        or StopEvent.objects.filter(stop=stop).exists()
    )


def assert_done_once(server: Server, stop: Stop, kind: str, files_before: set[Path]) -> None:
    stop.refresh_from_db()
    assert stop.status == Stop.Status.COMPLETED
    assert DriverAction.objects.count() == 1
    events = Counter(StopEvent.objects.filter(stop=stop).values_list("kind", "to_status"))
    assert events[("delivered", Order.Status.DELIVERED)] == 1 and set(events.values()) == {1}, events
    if kind == "pod":
        assert ProofOfDelivery.objects.count() == 1 and ProofPhoto.objects.count() == 1
        # The photo, its thumbnail and the signature, each once; no orphan from the killed try.
        assert media(server) - files_before == proof_files(server) and len(proof_files(server)) == 3
    else:
        assert media(server) == files_before


@pytest.mark.parametrize("kind", REQUESTS)
def test_a_worker_killed_mid_upload_leaves_nothing_and_the_retry_counts_once(server, stop, token, kind):
    first, changed = REQUESTS[kind]
    key, action, files_before = f"chaos-{uuid.uuid4()}", uuid.uuid4(), media(server)
    request = first(stop, action)

    client, worker = start(server, request, token, key, sent=0.5)
    time.sleep(0.3)  # the worker is now blocked reading the rest of the body
    assert worker in server.workers()
    kill(server, worker)
    assert answered(client) == b""  # the app never answered
    assert not IdempotencyRecord.objects.exists() and nothing_written(stop)
    assert media(server) == files_before

    status, headers, body = post(server, request, token, key)
    assert status == 200, body
    assert body["duplicate"] is False and "Idempotent-Replayed" not in headers
    status, headers, again = post(server, request, token, key)
    assert (status, headers.get("Idempotent-Replayed"), again) == (200, "true", body)
    status, _, refused = post(server, changed(stop, action), token, key)
    assert status == 422, refused
    assert_done_once(server, stop, kind, files_before)


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="holding a request inside its handler needs PostgreSQL's table lock",
)
@pytest.mark.parametrize("kind", REQUESTS)
def test_a_worker_killed_mid_handler_holds_its_key_then_the_retry_counts_once(server, stop, token, kind):
    first, changed = REQUESTS[kind]
    key, action, files_before = f"chaos-{uuid.uuid4()}", uuid.uuid4(), media(server)
    request = first(stop, action)

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("LOCK TABLE dispatch_stop IN ACCESS EXCLUSIVE MODE")
        client, worker = start(server, request, token, key, sent=1.0)
        assert wait_for(lambda: IdempotencyRecord.objects.filter(key=key, status_code=None).exists())

        def waiting_on_the_lock() -> bool:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            )
            return cursor.fetchone()[0] == 1

        assert wait_for(waiting_on_the_lock)
        status, _, body = post(server, request, token, key)  # the app's retry while it is in flight
        assert status == 409, body
        kill(server, worker)
    assert answered(client) == b""
    assert nothing_written(stop) and media(server) == files_before

    status, _, body = post(server, request, token, key)  # the dead request still holds its key
    assert status == 409, body
    reserved = IdempotencyRecord.objects.get(key=key).created_at
    time.sleep(max(0.0, IN_FLIGHT_SECONDS + 0.5 - (timezone.now() - reserved).total_seconds()))
    status, headers, body = post(server, request, token, key)
    assert status == 200, body
    assert body["duplicate"] is False and "Idempotent-Replayed" not in headers
    status, headers, again = post(server, request, token, key)
    assert (status, headers.get("Idempotent-Replayed"), again) == (200, "true", body)
    status, _, refused = post(server, changed(stop, action), token, key)
    assert status == 422, refused
    assert_done_once(server, stop, kind, files_before)
