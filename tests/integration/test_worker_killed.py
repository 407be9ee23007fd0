"""A real `manage.py qcluster` killed with SIGKILL in the middle of sending (RELIABILITY.md
JOB-2/JOB-6): no message is lost and none is sent twice. The one caught mid-send ends failed
(it may have reached the provider, so it is not sent again) with an alert; the others are
sent by the next worker."""

import datetime as dt
import json
import os
import signal
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone
from django_q.tasks import async_task

from tests.factories import OrderFactory
from tests.integration.processes import start_qcluster, stop_qcluster, wait_for
from tracking.models import Alert, Notification
from tracking.notifications import notifications_sweep

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


class Provider(ThreadingHTTPServer):
    """A fake SMS provider on 127.0.0.1: records every message; holds the first one open."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.received: list[dict] = []
        self.first_arrived = threading.Event()
        self.release = threading.Event()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - the http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.received.append(body)
        if len(self.server.received) == 1:
            self.server.first_arrived.set()
            self.server.release.wait(30)  # the worker is killed while waiting for this answer
        answer = json.dumps({"id": f"msg-{len(self.server.received)}"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def start_worker(provider: Provider) -> subprocess.Popen:
    return start_qcluster(
        Q_WORKERS="1", SMS_BACKEND="http", SMS_HTTP_TIMEOUT="60",
        SMS_HTTP_URL=f"http://127.0.0.1:{provider.server_port}/messages",
    )  # fmt: skip


def test_a_worker_killed_mid_send_loses_nothing_and_sends_nothing_twice(org):
    provider = Provider()
    threading.Thread(target=provider.serve_forever, daemon=True).start()
    now = timezone.now()
    rows = [
        Notification.objects.create(
            organization=org,
            order=OrderFactory(organization=org, status="out_for_delivery"),
            event="out_for_delivery",
            channel="sms",
            key=f"kill-test:{n}",
            recipient=f"+4915100000{n:02d}",
            created_at=now,
        )  # fmt: skip
        for n in range(3)
    ]
    worker = start_worker(provider)
    try:
        async_task("tracking.tasks.send_notification", rows[0].pk)
        reached = provider.first_arrived.wait(30)
        assert reached, list(Notification.objects.values("status", "last_error"))
        os.killpg(worker.pid, signal.SIGKILL)  # mid-send: the provider has the message, no answer
        worker.wait(10)
    finally:
        provider.release.set()
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    rows[0].refresh_from_db()
    assert rows[0].status == Notification.Status.SENDING  # claimed, never settled

    # A new worker takes the queue again; the sweep settles the abandoned row once its lease ends.
    worker = start_worker(provider)
    try:
        for row in rows[1:]:
            async_task("tracking.tasks.send_notification", row.pk)
        assert wait_for(lambda: Notification.objects.filter(status="sent").count() == 2)
        notifications_sweep(now=timezone.now() + dt.timedelta(minutes=6))
    finally:
        stop_qcluster(worker)
        provider.shutdown()

    statuses = dict(Notification.objects.values_list("key", "status"))
    assert statuses == {"kill-test:0": "failed", "kill-test:1": "sent", "kill-test:2": "sent"}
    assert sorted(m["to"] for m in provider.received) == [row.recipient for row in rows]  # each once
    failed = Notification.objects.get(key="kill-test:0")
    assert "not sent again" in failed.last_error
    assert Alert.objects.filter(kind=Alert.Kind.NOTIFICATION, key=f"notification:{failed.pk}").exists()
