"""Customer notifications through the outbox (issue #6 items 6 and 7): one row per message,
made once, sent once, held in quiet hours, retried with back-off, never repeated after an
ambiguous failure, stopped by the customer."""

import base64
import datetime as dt
import http.server
import json
import threading
import time
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse

from dispatch import services
from dispatch.models import Route, Stop, StopEvent
from tests.factories import DepotFactory, OrderFactory, RouteFactory, StopFactory
from tracking import notifications as notify
from tracking.links import link_token, tracking_link_ensure
from tracking.models import Alert, Notification, NotificationOptOut, TrackingSettings
from tracking.sms import HttpBackend, SendError

pytestmark = [pytest.mark.django_db]

BERLIN = ZoneInfo("Europe/Berlin")
DAY = dt.date(2026, 11, 24)
N = Notification.Status
HTMX = {"HX-Request": "true"}


def at(hour: int, minute: int = 0, day: dt.date = DAY) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=BERLIN)


class FakeSms:
    """settings.SMS_BACKEND points here: records every call; `script` holds failures to raise."""

    calls: list[dict] = []
    script: list[SendError] = []
    lock = threading.Lock()

    def send(self, *, to: str, body: str, reference: str) -> str:
        with self.lock:
            FakeSms.calls.append({"to": to, "body": body, "reference": reference})
            if FakeSms.script:
                raise FakeSms.script.pop(0)
            return f"fake-{len(FakeSms.calls)}"


@pytest.fixture(autouse=True)
def _setup(settings, time_machine):
    time_machine.move_to(at(10), tick=False)
    settings.SMS_BACKEND = "tests.tracking.test_notifications.FakeSms"
    settings.SITE_URL = "https://track.example.com"
    FakeSms.calls, FakeSms.script = [], []


@pytest.fixture
def queued(monkeypatch):
    """The ids handed to django-q2 (async_task is what leaves the process)."""
    ids: list[int] = []
    monkeypatch.setattr(notify, "async_task", lambda func, pk: ids.append(pk))
    return ids


def make_route(org, n=3, **order):
    route = RouteFactory(organization=org, depot=DepotFactory(organization=org), date=DAY)
    for i in range(n):
        StopFactory(
            route=route,
            sequence=i + 1,
            planned_arrival=at(11, 10 * i),
            order=OrderFactory(organization=org, recipient_email=f"c{i}@example.com", **order),
        )
    return route


def start(route, capture, execute=True):
    with capture(execute=execute):
        services.route_transition(route=route, to=Route.Status.PUBLISHED, by=None, at=at(8))
        services.route_transition(route=route, to=Route.Status.IN_PROGRESS, by=None, at=at(9))
    return list(route.stops.order_by("sequence").select_related("order"))


def deliver(stop):
    services.stop_transition(stop=stop, to=Stop.Status.ARRIVED, by=None)
    services.stop_transition(stop=stop, to=Stop.Status.COMPLETED, by=None)


def rows(**filters):
    return sorted(Notification.objects.filter(**filters).values_list("event", "channel", "status"))


def send_all(**filters) -> list[str]:
    return [
        notify.notification_send(notification_id=pk)
        for pk in Notification.objects.filter(**filters).order_by("pk").values_list("pk", flat=True)
    ]


# --- Making rows -----------------------------------------------------------------------------


def test_out_for_delivery_makes_one_row_per_default_channel_and_queues_them(
    org, queued, django_capture_on_commit_callbacks
):
    stops = start(make_route(org), django_capture_on_commit_callbacks)

    assert rows(order=stops[0].order) == [
        ("out_for_delivery", "email", "pending"),
        ("out_for_delivery", "sms", "pending"),
    ]
    assert sorted(queued) == sorted(Notification.objects.values_list("pk", flat=True))
    assert StopEvent.objects.filter(notified_at=None).count() == 0


def test_channels_follow_the_organisations_settings(org, queued, django_capture_on_commit_callbacks):
    TrackingSettings.objects.create(organization=org, channels={"out_for_delivery": ["sms"], "delivered": []})
    stops = start(make_route(org, n=1), django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        deliver(stops[0])

    assert rows() == [("out_for_delivery", "sms", "pending")]


def test_delivered_and_failed_make_their_messages_with_reason_and_link(
    org, queued, mailoutbox, django_capture_on_commit_callbacks
):
    stops = start(make_route(org, n=2), django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        deliver(stops[0])
        services.stop_transition(stop=stops[1], to=Stop.Status.FAILED, by=None, reason="Nobody home")

    assert rows(order=stops[0].order, event="delivered") == [("delivered", "email", "pending")]
    assert rows(order=stops[1].order, event="failed") == [
        ("failed", "email", "pending"),
        ("failed", "sms", "pending"),
    ]
    send_all(event__in=["delivered", "failed"])
    token = link_token(tracking_link_ensure(order=stops[1].order))
    failed_sms = FakeSms.calls[-1]["body"]
    assert "Nobody home" in failed_sms and f"https://track.example.com/t/{token}/" in failed_sms
    subjects = sorted(m.subject for m in mailoutbox)
    assert subjects[0].startswith("We could not deliver") and "was delivered" in subjects[1]


def test_missing_address_skips_the_row_with_the_reason(org, queued, django_capture_on_commit_callbacks):
    stops = start(make_route(org, n=1, recipient_phone=""), django_capture_on_commit_callbacks)

    sms = Notification.objects.get(order=stops[0].order, channel="sms")
    assert (sms.status, sms.last_error) == (N.SKIPPED, "No phone number on the order.")
    assert sms.pk not in queued


def test_a_replayed_event_or_a_retried_job_makes_and_sends_nothing_twice(
    org, queued, mailoutbox, django_capture_on_commit_callbacks
):
    stops = start(make_route(org, n=1), django_capture_on_commit_callbacks)
    event = StopEvent.objects.get(order=stops[0].order, to_status="out_for_delivery")
    before = Notification.objects.count()

    assert notify.notifications_for_event(event_id=event.pk) == []  # already claimed
    StopEvent.objects.filter(pk=event.pk).update(notified_at=None)  # as if the claim were lost
    assert notify.notifications_for_event(event_id=event.pk) == []  # the keys exist already
    assert Notification.objects.count() == before

    assert send_all() == [N.SENT, N.SENT]
    assert send_all() == ["", ""]  # the job ran again: nothing is due
    assert (len(mailoutbox), len(FakeSms.calls)) == (1, 1)


def test_the_sweep_claims_events_the_signal_missed(org, queued, django_capture_on_commit_callbacks):
    stops = start(make_route(org, n=2), django_capture_on_commit_callbacks, execute=False)
    assert Notification.objects.count() == 0

    first = notify.notifications_sweep(now=at(10, 1))
    second = notify.notifications_sweep(now=at(10, 2))

    assert first["made"] == 4 and second["made"] == 0
    assert rows(order=stops[1].order, event="out_for_delivery") == [
        ("out_for_delivery", "email", "pending"),
        ("out_for_delivery", "sms", "pending"),
    ]
    assert StopEvent.objects.filter(notified_at=None).count() == 0


def test_an_event_seen_only_after_the_order_moved_on_sends_nothing(
    org, queued, django_capture_on_commit_callbacks
):
    stops = start(make_route(org, n=1), django_capture_on_commit_callbacks, execute=False)
    deliver(stops[0])

    notify.notifications_sweep(now=at(10, 5))

    assert rows() == [("delivered", "email", "pending")]


# --- Wording -----------------------------------------------------------------------------------


def test_email_has_link_pin_and_unsubscribe_and_escapes_customer_data(
    org, queued, mailoutbox, django_capture_on_commit_callbacks
):
    stops = start(
        make_route(org, n=1, recipient_name="<b>Ann & Bob</b>", require_pin=True),
        django_capture_on_commit_callbacks,
    )
    order = stops[0].order
    send_all(channel="email")

    [mail] = mailoutbox
    html = mail.alternatives[0][0]
    token = link_token(tracking_link_ensure(order=order))
    assert f"https://track.example.com/t/{token}/" in mail.body and order.handover_pin in mail.body
    assert f"https://track.example.com/t/{token}/unsubscribe/" in mail.body
    assert f"/t/{token}/unsubscribe/" in html and mail.extra_headers["List-Unsubscribe"].endswith(
        "/unsubscribe/>"
    )
    assert "&lt;b&gt;Ann &amp; Bob&lt;/b&gt;" in html and "<b>Ann" not in html
    assert order.handover_pin in html
    row = Notification.objects.get(channel="email")
    assert (row.status, row.provider_id) == (N.SENT, mail.extra_headers["Message-ID"])


def test_no_pin_in_the_message_when_the_delivery_needs_none(org, queued, django_capture_on_commit_callbacks):
    stops = start(make_route(org, n=1), django_capture_on_commit_callbacks)
    send_all(channel="sms")

    assert stops[0].order.handover_pin not in FakeSms.calls[0]["body"]
    assert FakeSms.calls[0]["body"].endswith("Reply STOP to stop.")


def test_organisation_wording_overrides_escape_html_but_not_text(
    org, queued, mailoutbox, django_capture_on_commit_callbacks
):
    TrackingSettings.objects.create(
        organization=org,
        templates={
            "out_for_delivery.sms.body": "Hi {{ recipient_name }}, {{ reference }} comes. {{ link }}",
            "out_for_delivery.email.html": "<p>Dear {{ recipient_name }}</p>",
            "out_for_delivery.email.subject": "{{ organization }} brings {{ reference }}",
        },
    )
    start(
        make_route(org, n=1, recipient_name="Tom & <Jerry>", external_ref="R-1"),
        django_capture_on_commit_callbacks,
    )
    send_all()

    sms_body = FakeSms.calls[0]["body"]
    assert sms_body.startswith("Hi Tom & <Jerry>, R-1 comes. https://track.example.com/t/")
    assert sms_body.endswith("Reply STOP to stop.")
    [mail] = mailoutbox
    assert mail.subject == "Kreuzberg Kurier brings R-1"
    assert mail.alternatives[0][0].startswith("<p>Dear Tom &amp; &lt;Jerry&gt;</p>")
    assert "unsubscribe" in mail.alternatives[0][0]  # the footer stays whatever the wording


# --- Quiet hours -------------------------------------------------------------------------------


def test_quiet_hours_hold_messages_until_they_end(
    org, queued, time_machine, django_capture_on_commit_callbacks
):
    TrackingSettings.objects.create(
        organization=org, quiet_from=dt.time(21), quiet_until=dt.time(8), channels={"arriving_soon": []}
    )
    time_machine.move_to(at(22), tick=False)
    stops = start(make_route(org, n=1), django_capture_on_commit_callbacks)
    held = Notification.objects.filter(order=stops[0].order)

    assert {(r.status, r.not_before) for r in held} == {(N.HELD, at(8, day=DAY + dt.timedelta(days=1)))}
    assert queued == [] and send_all() == ["", ""]

    notify.notifications_sweep(now=at(7, 59, day=DAY + dt.timedelta(days=1)))
    assert set(held.values_list("status", flat=True)) == {N.HELD}
    morning = at(8, 1, day=DAY + dt.timedelta(days=1))
    with django_capture_on_commit_callbacks(execute=True):
        result = notify.notifications_sweep(now=morning)
    assert result["released"] == 2 and sorted(queued) == sorted(r.pk for r in held)
    time_machine.move_to(morning, tick=False)
    assert send_all() == [N.SENT, N.SENT]


def test_quiet_hours_within_one_day():
    options = TrackingSettings(quiet_from=dt.time(12), quiet_until=dt.time(14))
    assert notify.quiet_hours_end(options, BERLIN, at(13)) == at(14)
    assert notify.quiet_hours_end(options, BERLIN, at(14)) is None
    assert notify.quiet_hours_end(TrackingSettings(), BERLIN, at(13)) is None


# --- Opting out --------------------------------------------------------------------------------


def test_unsubscribe_link_asks_then_opts_out_and_later_messages_are_skipped(
    client, org, queued, django_capture_on_commit_callbacks
):
    stops = start(make_route(org, n=1), django_capture_on_commit_callbacks)
    order = stops[0].order
    url = reverse("tracking:unsubscribe", args=[link_token(tracking_link_ensure(order=order))])

    page = client.get(url)
    assert page.status_code == 200 and b"Stop messages" in page.content
    assert not NotificationOptOut.objects.filter(order=order).exists()  # a link scanner opts nobody out

    done = client.post(url)
    assert b"no more messages" in done.content
    assert NotificationOptOut.objects.get(order=order).via == "link"
    assert set(Notification.objects.filter(order=order).values_list("status", flat=True)) == {N.SKIPPED}
    with django_capture_on_commit_callbacks(execute=True):
        deliver(stops[0])
    assert Notification.objects.get(order=order, event="delivered").status == N.SKIPPED
    assert FakeSms.calls == []


def test_unsubscribe_with_an_unknown_token_is_404(client, db):
    assert client.get(reverse("tracking:unsubscribe", args=["x" * 43])).status_code == 404


def test_stop_reply_opts_the_number_out(client, org, settings, queued, django_capture_on_commit_callbacks):
    settings.SMS_INBOUND_SECRET = "s3cret-shared-with-the-provider"
    settings.SMS_INBOUND_AUTH = "token"  # the signed default is in tests/tracking/test_webhooks.py
    stops = start(make_route(org, n=2), django_capture_on_commit_callbacks)
    send_all(channel="sms")
    phone = Notification.objects.get(order=stops[0].order, channel="sms").recipient
    url = reverse("tracking:sms_inbound")

    refused = client.post(url, {"from": phone, "body": "STOP"}, headers={"Authorization": "Bearer wrong"})
    assert refused.status_code == 403 and not NotificationOptOut.objects.exists()
    ok = client.post(
        url,
        json.dumps({"from": phone, "body": " stop "}),
        content_type="application/json",
        headers={"Authorization": "Bearer s3cret-shared-with-the-provider"},
    )
    assert ok.json() == {"opted_out": 1}
    assert list(NotificationOptOut.objects.values_list("order_id", "via")) == [(stops[0].order_id, "sms")]
    basic = base64.b64encode(b"provider:s3cret-shared-with-the-provider").decode()
    other = client.post(url, {"from": phone, "body": "Thanks!"}, headers={"Authorization": f"Basic {basic}"})
    assert other.json() == {"opted_out": 0}


def test_inbound_sms_is_off_without_a_secret(client, db, settings):
    settings.SMS_INBOUND_SECRET = ""
    response = client.post(reverse("tracking:sms_inbound"), {"from": "+491", "body": "STOP"})
    assert response.status_code == 404


# --- Failures, back-off, ambiguity --------------------------------------------------------------


def _one_sms_row(org, capture):
    TrackingSettings.objects.create(organization=org, channels={"out_for_delivery": ["sms"]})
    start(make_route(org, n=1), capture)
    return Notification.objects.get()


def test_definite_failures_back_off_then_fail_with_an_alert(
    org, queued, time_machine, django_capture_on_commit_callbacks
):
    row = _one_sms_row(org, django_capture_on_commit_callbacks)
    FakeSms.script = [SendError("connection refused", ambiguous=False)] * notify.MAX_ATTEMPTS
    now = at(10)
    for attempt, wait in enumerate(notify.BACKOFF, start=1):
        assert notify.notification_send(notification_id=row.pk, now=now) == N.PENDING
        row.refresh_from_db()
        assert (row.attempts, row.last_error) == (attempt, "connection refused")
        assert now + wait <= row.not_before <= now + wait * 1.25
        assert (
            notify.notification_send(notification_id=row.pk, now=row.not_before - dt.timedelta(seconds=1))
            == ""
        )
        now = row.not_before

    assert notify.notification_send(notification_id=row.pk, now=now) == N.FAILED
    row.refresh_from_db()
    assert (row.status, row.attempts) == (N.FAILED, notify.MAX_ATTEMPTS)
    assert len(FakeSms.calls) == notify.MAX_ATTEMPTS
    alert = Alert.objects.get(key=f"notification:{row.pk}")
    assert "could not be sent" in alert.message and alert.organization_id == org.pk


def test_a_definite_failure_then_success_sends_once_more(org, queued, django_capture_on_commit_callbacks):
    row = _one_sms_row(org, django_capture_on_commit_callbacks)
    FakeSms.script = [SendError("429 too many requests", ambiguous=False)]
    notify.notification_send(notification_id=row.pk, now=at(10))
    row.refresh_from_db()

    assert notify.notification_send(notification_id=row.pk, now=row.not_before) == N.SENT
    row.refresh_from_db()
    assert (row.status, row.attempts, row.provider_id) == (N.SENT, 2, "fake-2")


def test_an_ambiguous_failure_is_not_sent_again(org, queued, django_capture_on_commit_callbacks):
    row = _one_sms_row(org, django_capture_on_commit_callbacks)
    FakeSms.script = [SendError("timed out after sending", ambiguous=True)]

    assert notify.notification_send(notification_id=row.pk) == N.FAILED
    notify.notifications_sweep(now=at(12))
    assert notify.notification_send(notification_id=row.pk, now=at(12)) == ""

    row.refresh_from_db()
    assert row.status == N.FAILED and "Not sent again" in row.last_error
    assert len(FakeSms.calls) == 1
    assert Alert.objects.filter(key=f"notification:{row.pk}").exists()


def test_a_row_abandoned_mid_send_is_failed_not_resent(org, queued, django_capture_on_commit_callbacks):
    row = _one_sms_row(org, django_capture_on_commit_callbacks)
    # A worker claimed it and was killed before it could record the outcome.
    Notification.objects.filter(pk=row.pk).update(
        status=N.SENDING, attempts=1, not_before=at(10) + notify.SENDING_LEASE
    )

    assert notify.notifications_sweep(now=at(10, 4))["abandoned"] == 0
    assert notify.notifications_sweep(now=at(10, 6))["abandoned"] == 1

    row.refresh_from_db()
    assert row.status == N.FAILED and "may have gone out" in row.last_error
    assert FakeSms.calls == []


# --- Arriving soon and delayed ---------------------------------------------------------------------


def test_arriving_soon_when_few_stops_or_minutes_away_once_per_stop(
    org, queued, django_capture_on_commit_callbacks
):
    TrackingSettings.objects.create(organization=org, arriving_soon_stops=1, arriving_soon_minutes=15)
    stops = start(make_route(org, n=4), django_capture_on_commit_callbacks)
    Stop.objects.filter(pk=stops[3].pk).update(eta=at(10, 10))  # the ETA engine says: 10 min

    notify.notifications_sweep(now=at(10))
    notify.notifications_sweep(now=at(10, 1))

    soon = Notification.objects.filter(event="arriving_soon")
    assert sorted(soon.values_list("stop__sequence", "channel")) == [(1, "sms"), (2, "sms"), (4, "sms")]
    assert soon.get(stop=stops[1]).payload["stops_before"] == 1


def test_delayed_only_past_the_threshold_and_at_most_once_per_interval(
    org, queued, django_capture_on_commit_callbacks
):
    TrackingSettings.objects.create(
        organization=org,
        arriving_soon_stops=0,
        arriving_soon_minutes=5,
        delay_minutes=15,
        delay_interval_minutes=30,
    )
    stops = start(make_route(org, n=2), django_capture_on_commit_callbacks)
    last = stops[1]  # planned 11:10, told 11:10 in "out for delivery"
    assert Notification.objects.get(stop=last, channel="email", event="out_for_delivery").payload["eta"]

    def sweep(eta, now):
        Stop.objects.filter(pk=last.pk).update(eta=eta)
        notify.notifications_sweep(now=now)
        return list(
            Notification.objects.filter(stop=last, event="delayed")
            .order_by("pk")
            .values_list("key", flat=True)
        )

    assert sweep(at(11, 20), at(10)) == []  # 10 min: under the threshold
    assert sweep(at(11, 30), at(10, 1)) == [f"order:{last.order_id}:delayed:email:stop:{last.pk}:1"]
    assert len(sweep(at(11, 50), at(10, 20))) == 1  # moved again, but within the interval
    assert len(sweep(at(11, 50), at(10, 40))) == 2  # 20 min from the last told (11:30)
    assert len(sweep(at(11, 55), at(11, 30))) == 2  # within 15 min of 11:50


# --- Channels: the HTTP SMS backend against a local server -------------------------------------------


class _Provider(http.server.BaseHTTPRequestHandler):
    answers: list[tuple[int, bytes, float]] = []
    seen: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        length = int(self.headers["Content-Length"])
        _Provider.seen.append({"headers": dict(self.headers), "body": json.loads(self.rfile.read(length))})
        status, body, delay = _Provider.answers.pop(0)
        time.sleep(delay)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def provider():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Provider)
    _Provider.answers, _Provider.seen = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/messages"
    server.shutdown()
    server.server_close()


def _backend(url, timeout=2.0):
    return HttpBackend(url=url, token="tok-123", sender="Doorstep", timeout=timeout)


def test_http_sms_backend_posts_json_with_the_token(provider):
    _Provider.answers = [(201, b'{"id": "msg-42"}', 0)]

    provider_id = _backend(provider).send(to="+4917000001", body="Hello & bye", reference="order:1:x:sms")

    assert provider_id == "msg-42"
    [request] = _Provider.seen
    assert request["body"] == {
        "from": "Doorstep",
        "to": "+4917000001",
        "body": "Hello & bye",
        "reference": "order:1:x:sms",
    }
    assert request["headers"]["Authorization"] == "Bearer tok-123"
    assert request["headers"]["Idempotency-Key"] == "order:1:x:sms"


@pytest.mark.parametrize(
    ("status", "ambiguous"), [(500, True), (503, True), (400, False), (401, False), (429, False)]
)
def test_http_sms_backend_classifies_provider_errors(provider, status, ambiguous):
    _Provider.answers = [(status, b'{"error": "nope"}', 0)]
    with pytest.raises(SendError) as error:
        _backend(provider).send(to="+491", body="x", reference="r")
    assert error.value.ambiguous is ambiguous and str(status) in str(error.value)


def test_http_sms_backend_timeout_after_sending_is_ambiguous(provider):
    _Provider.answers = [(200, b"{}", 1.0)]
    with pytest.raises(SendError) as error:
        _backend(provider, timeout=0.2).send(to="+491", body="x", reference="r")
    assert error.value.ambiguous is True and len(_Provider.seen) == 1


def test_http_sms_backend_connection_refused_is_definite(provider):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SendError) as error:
        _backend(f"http://127.0.0.1:{port}/").send(to="+491", body="x", reference="r")
    assert error.value.ambiguous is False


def test_an_sms_through_the_http_backend_ends_sent_with_the_providers_id(
    org, settings, provider, queued, django_capture_on_commit_callbacks
):
    settings.SMS_BACKEND, settings.SMS_HTTP_URL, settings.SMS_HTTP_TOKEN = "http", provider, "tok-123"
    row = _one_sms_row(org, django_capture_on_commit_callbacks)
    _Provider.answers = [(500, b"{}", 0)]

    assert notify.notification_send(notification_id=row.pk) == N.FAILED  # 5xx: ambiguous
    row.refresh_from_db()
    assert "500" in row.last_error and len(_Provider.seen) == 1


# --- The order page's message log ------------------------------------------------------------


def test_order_page_loads_the_message_log(
    client, org, dispatcher, queued, django_capture_on_commit_callbacks
):
    stops = start(make_route(org, n=1, recipient_phone="+49 170 5550123"), django_capture_on_commit_callbacks)
    order = stops[0].order
    FakeSms.script = [SendError("gateway said no", ambiguous=False)]
    send_all(channel="sms")
    client.force_login(dispatcher)

    page = client.get(order.get_absolute_url()).content.decode()
    url = reverse("tracking:order_messages", args=[order.pk])
    assert f'hx-get="{url}"' in page
    log = client.get(url, headers=HTMX).content.decode()
    assert "<html" not in log and "+491705550123" in log and "gateway said no" in log
    assert "c0@example.com" in log and "Pending" in log


def test_message_log_is_for_the_orders_organisation_only(client, org, other_dispatcher, driver):
    order = OrderFactory(organization=org)
    url = reverse("tracking:order_messages", args=[order.pk])
    client.force_login(other_dispatcher)
    assert client.get(url).status_code == 404
    client.force_login(driver.user)
    assert client.get(url).status_code == 403


def test_sweep_task_is_thin_and_safe_to_run_twice(org, queued):
    from tracking.tasks import send_notification, sweep_notifications

    assert sweep_notifications()["made"] == 0
    assert send_notification(123456) == ""
