"""Webhooks (issue #8 item 4; RELIABILITY.md WH-1..4, JOB-5, JOB-6): signed deliveries through
the outbox, retries and give-up, disabling, SSRF refusal, rotation, the portal and the API, and
the signed inbound SMS callback. Deliveries go to a real HTTP receiver on 127.0.0.1; names
resolve through a stub resolver, so no traffic leaves the machine."""

import base64
import datetime as dt
import http.server
import json
import re
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.urls import reverse
from rest_framework.test import APIClient
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from dispatch import services
from dispatch.models import Order, Route, Stop, StopEvent
from tests.factories import DepotFactory, OrderFactory, RouteFactory, StopFactory
from tracking import notifications as notify
from tracking import webhook_http, webhooks
from tracking.models import Alert, InboundCallback, Notification, TrackingSettings, WebhookEndpoint

pytestmark = [pytest.mark.django_db]

N = Notification.Status
NOW = dt.datetime(2026, 11, 24, 9, 0, tzinfo=dt.UTC)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"


# --- A receiver on 127.0.0.1 and a stub resolver ----------------------------------------------


class Receiver:
    """Records every request; answers from `script` ((status, body, delay s)), then 200."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.script: list[tuple[int, bytes, float]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status, answer, delay = receiver.script.pop(0) if receiver.script else (200, b"ok", 0)
                time.sleep(delay)
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "http://127.0.0.1:1/elsewhere")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, host: str = "hooks.example.com") -> str:
        return f"http://{host}:{self.port}/doorstep"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def dns(monkeypatch):
    """name → addresses; anything else does not resolve. Counts lookups (DNS rebinding tests)."""
    table: dict[str, list[str]] = {
        "hooks.example.com": ["127.0.0.1"],
        "public.example.com": ["93.184.215.14"],
    }
    lookups: list[str] = []

    def resolve(host, port):
        lookups.append(host)
        if host not in table:
            raise OSError("Name or service not known")
        return table[host]

    monkeypatch.setattr(webhook_http, "resolve", resolve)
    table["_lookups"] = lookups  # type: ignore[assignment]
    return table


@pytest.fixture
def queued(monkeypatch):
    """Ids handed to django-q2 (async_task is what leaves the process)."""
    ids: list[int] = []
    monkeypatch.setattr(webhooks, "async_task", lambda func, pk: ids.append(pk))
    monkeypatch.setattr(notify, "async_task", lambda func, pk: None)
    return ids


@pytest.fixture(autouse=True)
def _clock(time_machine, settings):
    time_machine.move_to(NOW, tick=False)
    settings.SITE_URL = "https://doorstep.example.com"


@pytest.fixture
def private_ok(org):
    """Org A's admin allows private addresses (the receiver is on 127.0.0.1)."""
    return TrackingSettings.objects.create(organization=org, webhooks_allow_private=True)


def endpoint_for(org, receiver, **fields) -> WebhookEndpoint:
    return webhooks.webhook_endpoint_create(organization=org, url=receiver.url(), **fields)


def send_all(**filters) -> list[str]:
    return [
        notify.notification_send(notification_id=pk)
        for pk in Notification.objects.filter(channel="webhook", **filters)
        .order_by("pk")
        .values_list("pk", flat=True)
    ]


def create_order(org, capture, **fields) -> Order:
    with capture(execute=True):
        return services.order_create(organization=org, by=None, **_order_fields(org, **fields))


def _order_fields(org, **fields):
    base = {
        "recipient_name": "Anna Schmidt",
        "address": "Oranienstraße 25, Berlin",
        "lat": 52.5,
        "lng": 13.42,
        "service_date": NOW.date(),
        "external_ref": "SHOP-1",
    }
    return base | fields


def doc_verify():
    """The `verify` function of docs/webhooks.md, executed from the document itself."""
    text = DOCS.read_text()
    section = text.split("### Verifying in Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL).group(1)
    assert len(code.strip().splitlines()) <= 20, "the documented snippet should stay short"
    namespace: dict = {}
    exec(compile(code, str(DOCS), "exec"), namespace)  # noqa: S102 (our own documentation)
    return namespace["verify"]


# --- Signatures (WH-1) ----------------------------------------------------------------------------


def test_delivery_is_signed_per_standard_webhooks_and_the_documented_code(
    org, private_ok, receiver, dns, queued, django_capture_on_commit_callbacks
):
    endpoint = endpoint_for(org, receiver)
    order = create_order(org, django_capture_on_commit_callbacks)

    assert send_all() == [N.SENT]
    request = receiver.requests[0]
    body, headers = request["body"], request["headers"]
    event = Webhook(endpoint.secret).verify(body, headers)
    assert doc_verify()(endpoint.secret, headers, body) == event
    assert event["type"] == "order.created" and event["id"] == headers["webhook-id"]
    assert event["data"]["order"]["id"] == order.pk and event["data"]["order"]["external_ref"] == "SHOP-1"
    assert event["timestamp"] == event["data"]["event"]["at"]
    assert headers["webhook-id"].startswith("msg_") and len(base64.b64decode(endpoint.secret[6:])) >= 24
    assert request["path"] == "/doorstep"
    # A body changed in transit or another secret does not verify, with either verifier.
    with pytest.raises(WebhookVerificationError):
        Webhook(webhooks.secret_new()).verify(body, headers)
    with pytest.raises(ValueError):
        doc_verify()(endpoint.secret, headers, body.replace(b"SHOP-1", b"SHOP-2"))


def test_documented_code_refuses_an_old_timestamp(org, private_ok, receiver, dns, queued, time_machine):
    endpoint = endpoint_for(org, receiver)
    webhooks.webhook_test_send(endpoint=endpoint)
    send_all()
    request = receiver.requests[0]
    time_machine.move_to(NOW + dt.timedelta(minutes=6), tick=False)
    with pytest.raises(ValueError, match="too old"):
        doc_verify()(endpoint.secret, request["headers"], request["body"])


def test_rotation_signs_with_both_secrets_for_the_grace_period(
    org, private_ok, receiver, dns, queued, time_machine, settings
):
    settings.WEBHOOK_ROTATION_GRACE_HOURS = 24
    endpoint = endpoint_for(org, receiver)
    old = endpoint.secret
    webhooks.webhook_endpoint_rotate(endpoint=endpoint)
    assert endpoint.secret != old and endpoint.secret.startswith("whsec_")

    webhooks.webhook_test_send(endpoint=endpoint)
    send_all()
    first = receiver.requests[-1]
    assert len(first["headers"]["webhook-signature"].split()) == 2
    assert Webhook(old).verify(first["body"], first["headers"])
    assert Webhook(endpoint.secret).verify(first["body"], first["headers"])

    time_machine.move_to(NOW + dt.timedelta(hours=25), tick=False)
    webhooks.webhook_test_send(endpoint=endpoint)
    send_all(status=N.PENDING)
    later = receiver.requests[-1]
    assert len(later["headers"]["webhook-signature"].split()) == 1
    assert Webhook(endpoint.secret).verify(later["body"], later["headers"])
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(later["body"], later["headers"])


# --- Delivery policy (WH-2, JOB-5, JOB-6) ----------------------------------------------------------


def test_failures_back_off_with_the_same_id_then_the_delivery_is_failed(
    org, private_ok, receiver, dns, queued, time_machine, settings
):
    settings.WEBHOOK_RETRY_HOURS = 72
    endpoint = endpoint_for(org, receiver)
    receiver.script = [(500, b"boom", 0)] * 100
    row = webhooks.webhook_test_send(endpoint=endpoint)
    waits, clock = [], NOW
    while True:
        assert notify.notification_send(notification_id=row.pk) in (N.PENDING, N.FAILED)
        row.refresh_from_db()
        if row.status == N.FAILED:
            break
        waits.append(row.not_before - clock)
        # Not due before its time: a second worker (or the sweep) sends nothing early.
        assert notify.notification_send(notification_id=row.pk) == ""
        clock = row.not_before
        time_machine.move_to(clock, tick=False)

    schedule = [30, 120, 600, 1800, 7200] + [21600] * (len(waits) - 5)
    for wait, base in zip(waits, schedule, strict=True):  # the base, plus up to 25 % jitter
        assert base <= wait.total_seconds() <= base * 1.25 + 1
    assert clock - NOW <= dt.timedelta(hours=72) and clock - NOW >= dt.timedelta(hours=60)
    ids = {r["headers"]["webhook-id"] for r in receiver.requests}
    bodies = {r["body"] for r in receiver.requests}
    assert len(ids) == 1 and len(bodies) == 1 and len(receiver.requests) == row.attempts
    assert "Gave up" in row.last_error and row.response_status == 500
    assert len(row.attempt_log) == min(row.attempts, webhooks.LOG_ATTEMPTS)
    # Failing every attempt of the whole schedule disables the endpoint and tells dispatchers.
    endpoint.refresh_from_db()
    assert not endpoint.active and "Every delivery attempt failed for" in endpoint.disabled_reason
    assert Alert.objects.get(organization=org, kind=Alert.Kind.WEBHOOK).resolved_at is None


def test_a_success_in_between_keeps_the_endpoint_enabled(
    org, private_ok, receiver, dns, queued, time_machine
):
    endpoint = endpoint_for(org, receiver)
    receiver.script = [(503, b"", 0)]
    row = webhooks.webhook_test_send(endpoint=endpoint)
    assert notify.notification_send(notification_id=row.pk) == N.PENDING
    endpoint.refresh_from_db()
    assert endpoint.consecutive_failures == 1 and endpoint.failing_since == NOW
    time_machine.move_to(NOW + dt.timedelta(minutes=1), tick=False)
    assert notify.notification_send(notification_id=row.pk) == N.SENT
    endpoint.refresh_from_db()
    assert (endpoint.consecutive_failures, endpoint.failing_since, endpoint.active) == (0, None, True)


def test_410_disables_the_endpoint_at_once(org, private_ok, receiver, dns, queued):
    endpoint = endpoint_for(org, receiver)
    receiver.script = [(410, b"gone", 0)]
    first = webhooks.webhook_test_send(endpoint=endpoint)
    second = webhooks.webhook_test_send(endpoint=endpoint)

    assert notify.notification_send(notification_id=first.pk) == N.FAILED
    endpoint.refresh_from_db()
    second.refresh_from_db()
    assert not endpoint.active and "410" in endpoint.disabled_reason
    assert second.status == N.SKIPPED and len(receiver.requests) == 1
    assert Alert.objects.filter(organization=org, kind=Alert.Kind.WEBHOOK).count() == 1
    # No new deliveries for a disabled endpoint; editing it back to active clears its record.
    assert (
        webhooks.deliveries_create(
            organization_id=org.pk, event="test", event_type="webhook.test", occurrence="x", data={}, at=NOW
        )
        == []
    )
    webhooks.webhook_endpoint_update(endpoint=endpoint, active=True)
    assert (endpoint.disabled_reason, endpoint.consecutive_failures) == ("", 0)


def test_a_disabled_endpoint_is_emailed_to_the_organisations_admins(
    org, private_ok, receiver, dns, queued, settings
):
    """WH-2: disabled endpoint → its organisation's admins are e-mailed once (besides the alert)."""
    from django.core import mail

    from dispatch.models import Membership
    from tests.factories import MembershipFactory

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    admin = MembershipFactory(organization=org, role=Membership.Role.ADMIN)
    MembershipFactory(organization=org, role=Membership.Role.DISPATCHER)  # the alert is theirs
    MembershipFactory(organization=org, role=Membership.Role.ADMIN, user__email="")  # no address
    endpoint = endpoint_for(org, receiver)
    receiver.script = [(410, b"gone", 0)]
    notify.notification_send(notification_id=webhooks.webhook_test_send(endpoint=endpoint).pk)
    assert not webhooks.webhook_endpoint_disable(endpoint=endpoint, reason="again")  # already off

    (row,) = Notification.objects.filter(event=Notification.Event.WEBHOOK_DISABLED)
    assert row.recipient == admin.user.email and row.order_id is None
    assert notify.notification_send(notification_id=row.pk) == N.SENT
    (email,) = mail.outbox
    assert email.to == [admin.user.email] and endpoint.url in email.subject
    assert "410" in email.body and f"/webhooks/{endpoint.pk}/" in email.body


def test_redirects_are_not_followed(org, private_ok, receiver, dns, queued):
    endpoint = endpoint_for(org, receiver)
    receiver.script = [(302, b"", 0)]
    row = webhooks.webhook_test_send(endpoint=endpoint)

    assert notify.notification_send(notification_id=row.pk) == N.PENDING
    row.refresh_from_db()
    assert row.response_status == 302 and "redirects are not followed" in row.last_error
    assert len(receiver.requests) == 1  # nobody called the Location


def test_a_timeout_is_retried_with_the_same_id(
    org, private_ok, receiver, dns, queued, settings, time_machine
):
    settings.WEBHOOK_TIMEOUT = 0.3
    endpoint = endpoint_for(org, receiver)
    receiver.script = [(200, b"late", 1.0)]
    row = webhooks.webhook_test_send(endpoint=endpoint)

    assert notify.notification_send(notification_id=row.pk) == N.PENDING
    row.refresh_from_db()
    assert "No answer" in row.last_error and "same webhook-id" in row.last_error
    time_machine.move_to(row.not_before, tick=False)
    assert notify.notification_send(notification_id=row.pk) == N.SENT
    ids = [r["headers"]["webhook-id"] for r in receiver.requests]
    assert len(ids) == 2 and ids[0] == ids[1]


def test_a_retried_or_racing_job_sends_once(
    org, private_ok, receiver, dns, queued, django_capture_on_commit_callbacks
):
    endpoint_for(org, receiver)
    order = create_order(org, django_capture_on_commit_callbacks)
    event = StopEvent.objects.get(order=order)
    # The signal already claimed the event; the sweep and a replayed claim make nothing more.
    StopEvent.objects.filter(pk=event.pk).update(notified_at=None)
    notify.notifications_for_event(event_id=event.pk)
    notify.notifications_sweep(now=NOW + dt.timedelta(minutes=5))
    row = Notification.objects.get(channel="webhook")
    # The task queued after commit and the sweep's copy of it both run: one POST.
    assert [notify.notification_send(notification_id=row.pk) for _ in range(2)] == [N.SENT, ""]
    assert len(receiver.requests) == 1


def test_a_worker_dying_mid_send_is_retried_not_lost(org, private_ok, receiver, dns, queued):
    endpoint = endpoint_for(org, receiver)
    row = webhooks.webhook_test_send(endpoint=endpoint)
    Notification.objects.filter(pk=row.pk).update(status=N.SENDING, attempts=1, not_before=NOW)

    notify.notifications_sweep(now=NOW + dt.timedelta(seconds=1))
    row.refresh_from_db()
    assert row.status == N.PENDING and "same webhook-id" in row.last_error
    assert notify.notification_send(notification_id=row.pk, now=NOW + dt.timedelta(seconds=2)) == N.SENT


def test_resend_sends_the_same_message_again(
    org, private_ok, receiver, dns, queued, django_capture_on_commit_callbacks
):
    endpoint = endpoint_for(org, receiver)
    row = webhooks.webhook_test_send(endpoint=endpoint)
    send_all()
    with django_capture_on_commit_callbacks(execute=True):
        webhooks.webhook_delivery_resend(delivery=row)
    assert queued[-1] == row.pk
    assert send_all() == [N.SENT]
    first, again = receiver.requests
    assert first["body"] == again["body"] and first["headers"]["webhook-id"] == again["headers"]["webhook-id"]
    row.refresh_from_db()
    assert row.attempts == 2 and [entry["status"] for entry in row.attempt_log] == [200, 200]


def test_test_event_reaches_only_that_endpoint_whatever_it_subscribes_to(
    org, private_ok, receiver, dns, queued
):
    endpoint = endpoint_for(org, receiver, events=["order.delivered"])
    other = endpoint_for(org, receiver)
    webhooks.webhook_test_send(endpoint=endpoint)
    send_all()
    assert [json.loads(r["body"])["type"] for r in receiver.requests] == ["webhook.test"]
    assert not Notification.objects.filter(endpoint=other).exists()


# --- Every event, by every path -------------------------------------------------------------------


def types_sent(receiver) -> list[str]:
    return [json.loads(r["body"])["type"] for r in receiver.requests]


def test_an_order_created_in_the_portal_is_delivered(
    org, private_ok, dispatcher, client, receiver, dns, queued, django_capture_on_commit_callbacks
):
    endpoint_for(org, receiver)
    client.force_login(dispatcher)
    depot = DepotFactory(organization=org)
    form = {
        "kind": "delivery", "recipient_name": "Portal Person", "address": "Adalbertstraße 1, Berlin",
        "lat": 52.5, "lng": 13.42, "service_date": NOW.date().isoformat(), "service_minutes": 5,
        "parcels": 1, "priority": "normal", "depot": depot.pk,
    }  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("dispatch:order_create"), form)
    assert response.status_code == 302, response.content.decode()[:1500]
    send_all()
    assert types_sent(receiver) == ["order.created"]
    assert json.loads(receiver.requests[0]["body"])["data"]["order"]["recipient_name"] == "Portal Person"


def test_an_order_created_by_csv_import_is_delivered_by_the_sweep(
    org, private_ok, dispatcher, client, receiver, dns, queued, django_capture_on_commit_callbacks
):
    endpoint_for(org, receiver)
    client.force_login(dispatcher)
    csv = (
        "external_ref,recipient_name,address,lat,lng,service_date,window_start,window_end,parcels\n"
        'CSV-1,Anna Schmidt,"Oranienstraße 25, 10999 Berlin",52.5016,13.4190,2026-11-24,09:00,12:00,2\n'
    ).encode()
    url = reverse("dispatch:order_import")
    upload = SimpleUploadedFile("orders.csv", csv, content_type="text/csv")
    uploaded = client.post(url, {"action": "upload", "service_date": "2026-11-24", "file": upload})
    token = parse_qs(urlsplit(uploaded["Location"]).query)["token"][0]
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(url, {"action": "confirm", "token": token}).status_code == 302
    assert Order.objects.filter(external_ref="CSV-1").exists()
    # An import writes its events in bulk, without a signal: the minute sweep claims them.
    notify.notifications_sweep(now=NOW + dt.timedelta(minutes=1))
    send_all()
    assert types_sent(receiver) == ["order.created"]
    assert json.loads(receiver.requests[0]["body"])["data"]["order"]["external_ref"] == "CSV-1"


def test_an_order_created_through_the_api_is_delivered(
    org, private_ok, dispatcher, receiver, dns, queued, django_capture_on_commit_callbacks
):
    endpoint_for(org, receiver)
    api = APIClient()
    api.force_authenticate(dispatcher)
    body = {"recipient_name": "Api Person", "address": "Skalitzer Str. 1, Berlin", "lat": 52.5, "lng": 13.42,
            "service_date": NOW.date().isoformat(), "external_ref": "API-1"}  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post("/api/v1/orders/", body, format="json")
    assert response.status_code == 201, response.content
    notify.notifications_sweep(now=NOW + dt.timedelta(minutes=1))  # whichever path the API takes
    send_all()
    assert types_sent(receiver) == ["order.created"]


def _proof(stop, driver_user):
    import io
    import uuid as uuidlib

    from django.core.files.base import ContentFile
    from PIL import Image

    from pod import services as pod_services

    image = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 10)).save(image, format="PNG")
    prepared = pod_services.proof_prepare(
        stop=stop, outcome="delivered", photos=[ContentFile(image.getvalue(), name="p.png")],
        signature=ContentFile(image.getvalue(), name="s.png"), recipient_name="Neighbour",
    )  # fmt: skip
    return pod_services.proof_record(
        prepared=prepared, stop=stop, key=uuidlib.uuid4(), by=driver_user, captured_at=NOW
    )


def test_a_route_day_delivers_every_event_in_order(
    org, private_ok, receiver, dns, queued, django_capture_on_commit_callbacks, time_machine
):
    endpoint = endpoint_for(org, receiver)
    route = RouteFactory(organization=org, depot=DepotFactory(organization=org), date=NOW.date())
    first = StopFactory(route=route, sequence=1, order=OrderFactory(organization=org), planned_arrival=NOW)
    second = StopFactory(route=route, sequence=2, order=OrderFactory(organization=org), planned_arrival=NOW)
    Order.objects.filter(pk__in=[first.order_id, second.order_id]).update(status=Order.Status.PLANNED)
    with django_capture_on_commit_callbacks(execute=True):
        services.route_transition(route=route, to=Route.Status.PUBLISHED, by=None)
        services.route_transition(route=route, to=Route.Status.IN_PROGRESS, by=None)
    notify.notifications_sweep()  # route.started, order.arriving
    with django_capture_on_commit_callbacks(execute=True):
        services.stop_transition(stop=first, to=Stop.Status.ARRIVED, by=None)
        with transaction.atomic():  # as the driver app does: the proof with the stop's close
            _proof(first, route.driver.user)
            services.stop_transition(stop=first, to=Stop.Status.COMPLETED, by=None)
        services.stop_transition(stop=second, to=Stop.Status.FAILED, by=None, reason="Nobody home")
        services.route_transition(route=route, to=Route.Status.COMPLETED, by=None)
    notify.notifications_sweep()  # route.completed
    send_all()

    sent = types_sent(receiver)
    for expected in ["order.assigned", "order.out_for_delivery", "route.started", "order.arriving",
                     "order.delivered", "order.failed", "route.completed"]:  # fmt: skip
        assert expected in sent, (expected, sent)
    assert sent.count("route.started") == 1 and sent.count("order.delivered") == 1
    delivered = next(json.loads(r["body"]) for r in receiver.requests if b'"order.delivered"' in r["body"])
    proof = delivered["data"]["proof"]
    assert proof["recipient_name"] == "Neighbour" and len(proof["photos"]) == 1
    assert proof["url"] == f"https://doorstep.example.com/orders/{first.order_id}/proof/"
    assert all(link.startswith("https://doorstep.example.com/pod/") for link in proof["photos"])
    failed = next(json.loads(r["body"]) for r in receiver.requests if b'"order.failed"' in r["body"])
    assert failed["data"]["event"]["reason"] == "Nobody home"
    completed = next(json.loads(r["body"]) for r in receiver.requests if b'"route.completed"' in r["body"])
    assert (
        completed["data"]["route"]["completed_stops"] == 1 and completed["data"]["route"]["failed_stops"] == 1
    )
    # Nothing secret in any payload.
    everything = b" ".join(r["body"] for r in receiver.requests)
    assert endpoint.secret.encode() not in everything and b"/t/" not in everything
    # A second sweep makes nothing new.
    before = Notification.objects.filter(channel="webhook").count()
    notify.notifications_sweep()
    assert Notification.objects.filter(channel="webhook").count() == before


def test_subscriptions_filter_event_types(
    org, private_ok, receiver, dns, queued, django_capture_on_commit_callbacks
):
    endpoint_for(org, receiver, events=["order.cancelled"])
    order = create_order(org, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        services.order_cancel(order=order, by=None, reason="Customer changed their mind")
    send_all()
    assert types_sent(receiver) == ["order.cancelled"]


def test_a_customer_request_is_delivered(
    org, private_ok, receiver, dns, queued, django_capture_on_commit_callbacks
):
    from tracking import customer
    from tracking.links import tracking_link_ensure

    endpoint_for(org, receiver)
    order = create_order(org, django_capture_on_commit_callbacks)
    link = tracking_link_ensure(order=order)
    with django_capture_on_commit_callbacks(execute=True):
        customer.customer_message(link=link, text="Please ring twice")
    send_all()
    assert types_sent(receiver) == ["order.created", "customer_request.created"]
    request = json.loads(receiver.requests[1]["body"])["data"]["request"]
    assert (request["kind"], request["text"]) == ("message", "Please ring twice")


# --- SSRF (WH-3) -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.5",
        "192.168.1.1",
        "169.254.169.254",
        "::1",
        "fd12::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "100.64.0.1",
        "0.0.0.0",
    ],  # fmt: skip
)
def test_private_addresses_are_refused_at_registration(org, dns, address):
    dns["inside.example.com"] = [address]
    with pytest.raises(ValidationError) as refused:
        webhooks.webhook_endpoint_create(organization=org, url="https://inside.example.com/hook")
    assert "private" in str(refused.value) or "never allowed" in str(refused.value)
    assert not WebhookEndpoint.objects.exists()


def test_every_address_of_a_name_must_be_public(org, dns):
    dns["mixed.example.com"] = ["93.184.215.14", "10.0.0.1"]
    with pytest.raises(ValidationError):
        webhooks.webhook_endpoint_create(organization=org, url="https://mixed.example.com/hook")
    assert webhooks.webhook_endpoint_create(organization=org, url="https://public.example.com/hook").pk


def test_an_admin_may_allow_private_addresses_but_never_the_metadata_service(org, private_ok, dns):
    dns["metadata.example.com"] = ["169.254.169.254"]
    assert webhooks.webhook_endpoint_create(organization=org, url="http://127.0.0.1:9/hook").pk
    with pytest.raises(ValidationError):
        webhooks.webhook_endpoint_create(organization=org, url="http://metadata.example.com/latest")


def test_a_name_that_rebinds_to_a_private_address_is_refused_at_send(org, receiver, dns, queued):
    # Registered while it resolved to a public address; at send time it resolves to 127.0.0.1.
    dns["rebind.example.com"] = ["93.184.215.14"]
    endpoint = webhooks.webhook_endpoint_create(organization=org, url=receiver.url("rebind.example.com"))
    dns["rebind.example.com"] = ["127.0.0.1"]
    row = webhooks.webhook_test_send(endpoint=endpoint)

    assert notify.notification_send(notification_id=row.pk) == N.PENDING
    row.refresh_from_db()
    assert row.last_error.startswith("Refused:") and receiver.requests == []


def test_the_connection_goes_to_the_checked_address(org, private_ok, receiver, dns, queued, monkeypatch):
    # A second lookup (what a plain HTTP client would do at connect time) would be refused here.
    endpoint = endpoint_for(org, receiver)
    real = webhook_http.resolve
    calls = []

    def once(host, port):
        calls.append(host)
        if len(calls) > 1:
            return ["10.9.9.9"]
        return real(host, port)

    monkeypatch.setattr(webhook_http, "resolve", once)
    row = webhooks.webhook_test_send(endpoint=endpoint)
    assert notify.notification_send(notification_id=row.pk) == N.SENT
    assert calls == ["hooks.example.com"]
    assert receiver.requests[0]["headers"]["Host"] == f"hooks.example.com:{receiver.port}"


# --- Tenancy ----------------------------------------------------------------------------------------


def test_an_organisations_events_never_reach_another_organisations_endpoint(
    org, other_org, private_ok, receiver, dns, queued, django_capture_on_commit_callbacks
):
    TrackingSettings.objects.create(organization=other_org, webhooks_allow_private=True)
    theirs = webhooks.webhook_endpoint_create(organization=other_org, url=receiver.url())
    create_order(org, django_capture_on_commit_callbacks)
    webhooks.deliveries_create(
        organization_id=org.pk, event="test", event_type="webhook.test", occurrence="o", data={}, at=NOW,
        endpoints=WebhookEndpoint.objects.filter(pk=theirs.pk),
    )  # fmt: skip
    assert not Notification.objects.filter(endpoint=theirs).exists()


def test_another_organisations_endpoints_and_deliveries_are_404(
    org, other_org, private_ok, dispatcher, other_dispatcher, client, receiver, dns, queued
):
    endpoint = endpoint_for(org, receiver, description="Qxwebhookdesc")
    delivery = webhooks.webhook_test_send(endpoint=endpoint)
    client.force_login(other_dispatcher)
    for name, pk in [("webhook_detail", endpoint.pk), ("webhook_delivery", delivery.pk)]:
        assert client.get(reverse(f"tracking:{name}", args=[pk])).status_code == 404
    for name, pk in [("webhook_delete", endpoint.pk), ("webhook_rotate", endpoint.pk),
                     ("webhook_test", endpoint.pk), ("webhook_resend", delivery.pk)]:  # fmt: skip
        assert client.post(reverse(f"tracking:{name}", args=[pk])).status_code == 404
    assert b"Qxwebhookdesc" not in client.get(reverse("tracking:webhook_list")).content
    api = APIClient()
    api.force_authenticate(other_dispatcher)
    assert api.get("/api/v1/webhooks/").json()["results"] == []
    assert api.get(f"/api/v1/webhooks/{endpoint.pk}/").status_code == 404
    assert api.patch(f"/api/v1/webhooks/{endpoint.pk}/", {"active": False}, format="json").status_code == 404
    assert api.post(f"/api/v1/webhooks/{endpoint.pk}/rotate/").status_code == 404
    assert api.delete(f"/api/v1/webhooks/{endpoint.pk}/").status_code == 404
    endpoint.refresh_from_db()
    assert endpoint.active and WebhookEndpoint.objects.filter(pk=endpoint.pk).exists()
    assert Notification.objects.filter(endpoint=endpoint).count() == 1


# --- The portal and the API ---------------------------------------------------------------------------


def test_portal_create_test_and_log(org, private_ok, dispatcher, client, receiver, dns, queued):
    client.force_login(dispatcher)
    created = client.post(
        reverse("tracking:webhook_list"),
        {"url": receiver.url(), "description": "ERP", "events": ["order.delivered"], "active": "on"},
    )
    endpoint = WebhookEndpoint.objects.get()
    assert created["Location"] == reverse("tracking:webhook_detail", args=[endpoint.pk])
    assert endpoint.events == ["order.delivered"] and endpoint.created_by == dispatcher
    page = client.get(reverse("tracking:webhook_detail", args=[endpoint.pk])).content.decode()
    assert endpoint.secret in page and "Send test event" in page
    client.post(reverse("tracking:webhook_test", args=[endpoint.pk]))
    send_all()
    log = client.get(reverse("tracking:webhook_detail", args=[endpoint.pk]), headers={"HX-Request": "true"})
    html = log.content.decode()
    assert "<html" not in html and "webhook.test" in html and "Resend" in html
    delivery = Notification.objects.get(endpoint=endpoint)
    detail = client.get(reverse("tracking:webhook_delivery", args=[delivery.pk])).content.decode()
    assert delivery.webhook_id in detail and "200" in detail


def test_portal_refuses_a_private_url_with_a_field_message(org, dispatcher, client, dns):
    client.force_login(dispatcher)
    response = client.post(
        reverse("tracking:webhook_list"), {"url": "http://127.0.0.1:8000/x", "active": "on"}
    )
    assert response.status_code == 200 and "private" in response.content.decode()
    assert not WebhookEndpoint.objects.exists()


def test_only_an_admin_may_allow_private_addresses(org, dispatcher, org_admin, client):
    client.force_login(dispatcher)
    assert (
        client.post(reverse("tracking:webhook_settings"), {"webhooks_allow_private": "on"}).status_code == 403
    )
    assert not TrackingSettings.objects.filter(organization=org, webhooks_allow_private=True).exists()
    client.force_login(org_admin)
    client.post(reverse("tracking:webhook_settings"), {"webhooks_allow_private": "on"})
    assert TrackingSettings.objects.get(organization=org).webhooks_allow_private


def test_api_create_rotate_test_deliveries_and_resend(
    org, private_ok, dispatcher, receiver, dns, queued, django_capture_on_commit_callbacks
):
    api = APIClient()
    api.force_authenticate(dispatcher)
    refused = api.post(
        "/api/v1/webhooks/", {"url": "https://x.example.com/", "events": ["nope"]}, format="json"
    )
    assert refused.status_code == 400 and "events" in refused.json()
    created = api.post("/api/v1/webhooks/", {"url": receiver.url(), "description": "ERP"}, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["secret"].startswith("whsec_") and body["events"] == []
    rotated = api.post(f"/api/v1/webhooks/{body['id']}/rotate/").json()
    assert rotated["secret"] != body["secret"] and rotated["previous_secret_until"]
    test = api.post(f"/api/v1/webhooks/{body['id']}/test/")
    assert test.status_code == 202 and test.json()["type"] == "webhook.test"
    send_all()
    log = api.get(f"/api/v1/webhooks/{body['id']}/deliveries/").json()
    assert [(d["type"], d["status"], d["response_status"]) for d in log] == [("webhook.test", "sent", 200)]
    with django_capture_on_commit_callbacks(execute=True):
        resent = api.post(f"/api/v1/webhooks/{body['id']}/resend/", {"delivery": log[0]["id"]}, format="json")
    assert resent.status_code == 202 and resent.json()["status"] == "pending"
    patched = api.patch(f"/api/v1/webhooks/{body['id']}/", {"active": False}, format="json")
    assert patched.json()["active"] is False and patched.json()["url"] == receiver.url()
    assert api.delete(f"/api/v1/webhooks/{body['id']}/").status_code == 204
    assert not WebhookEndpoint.objects.exists()


def test_api_deliveries_answer_the_bare_list_the_schema_describes(org, dispatcher, dns, queued, client):
    endpoint = webhooks.webhook_endpoint_create(organization=org, url="https://public.example.com/h")
    webhooks.webhook_test_send(endpoint=endpoint)
    api = APIClient()
    api.force_authenticate(dispatcher)
    log = api.get(f"/api/v1/webhooks/{endpoint.pk}/deliveries/").json()
    assert [d["type"] for d in log] == ["webhook.test"]
    schema = client.get("/api/schema/?format=json").json()
    answer = schema["paths"]["/api/v1/webhooks/{id}/deliveries/"]["get"]["responses"]["200"]
    assert answer["content"]["application/json"]["schema"]["type"] == "array"


def test_api_resend_of_a_delivery_the_endpoint_does_not_have_is_a_400_on_the_field(
    org, other_org, dispatcher, dns, queued
):
    endpoint = webhooks.webhook_endpoint_create(organization=org, url="https://public.example.com/h")
    theirs = webhooks.webhook_endpoint_create(organization=other_org, url="https://public.example.com/t")
    foreign = webhooks.webhook_test_send(endpoint=theirs)
    api = APIClient()
    api.force_authenticate(dispatcher)
    response = api.post(f"/api/v1/webhooks/{endpoint.pk}/resend/", {"delivery": foreign.pk}, format="json")
    assert response.status_code == 400
    assert response.json() == {"delivery": ["No such delivery of this endpoint."]}
    assert Notification.objects.get(pk=foreign.pk).attempts == foreign.attempts


def test_a_driver_cannot_use_the_webhooks_api(driver):
    api = APIClient()
    api.force_authenticate(driver.user)
    assert api.get("/api/v1/webhooks/").status_code == 403


# --- Inbound SMS callbacks (WH-4) ---------------------------------------------------------------------


INBOUND_SECRET = "whsec_" + base64.b64encode(b"provider-shared-secret-32-bytes!").decode()


def _signed(body: bytes, *, msg_id="evt_1", at=None, secret=INBOUND_SECRET) -> dict:
    stamp = str(int((at or NOW).timestamp()))
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": Webhook(secret).sign(
            msg_id, dt.datetime.fromtimestamp(int(stamp), dt.UTC), body.decode()
        ),
    }


@pytest.fixture
def inbound(settings):
    settings.SMS_INBOUND_SECRET = INBOUND_SECRET
    settings.SMS_INBOUND_AUTH = "signature"
    return reverse("tracking:sms_inbound")


def test_signed_inbound_sms_is_acted_on_once(client, inbound, org):
    order = OrderFactory(organization=org)
    Notification.objects.create(
        organization=org, order=order, event="delivered", channel="sms", key="k", recipient="+4917000000001",
        created_at=NOW,
    )  # fmt: skip
    body = json.dumps({"from": "+4917000000001", "body": "STOP"}).encode()
    first = client.post(inbound, body, content_type="application/json", headers=_signed(body))
    assert first.json() == {"opted_out": 1}
    again = client.post(inbound, body, content_type="application/json", headers=_signed(body))
    assert again.json() == {"opted_out": 0, "duplicate": True}
    assert InboundCallback.objects.filter(source="sms", event_id="evt_1").count() == 1


def test_inbound_sms_with_a_bad_signature_or_an_old_timestamp_is_refused(client, inbound, org):
    body = json.dumps({"from": "+4917000000001", "body": "STOP"}).encode()
    forged = _signed(body, secret="whsec_" + base64.b64encode(b"x" * 32).decode())
    assert client.post(inbound, body, content_type="application/json", headers=forged).status_code == 403
    old = _signed(body, msg_id="evt_2", at=NOW - dt.timedelta(minutes=6))
    refused = client.post(inbound, body, content_type="application/json", headers=old)
    assert refused.status_code == 403 and "five minutes" in refused.json()["detail"]
    tampered = _signed(body, msg_id="evt_3")
    other_body = body.replace(b"STOP", b"STOPALL")
    assert (
        client.post(inbound, other_body, content_type="application/json", headers=tampered).status_code == 403
    )
    unsigned = client.post(
        inbound, body, content_type="application/json", headers={"Authorization": f"Bearer {INBOUND_SECRET}"}
    )
    assert unsigned.status_code == 403
    assert not InboundCallback.objects.exists()
