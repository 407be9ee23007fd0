"""JOB-6 on PostgreSQL: two workers racing over the same events and the same outbox rows make
each message once and send it once (real concurrent transactions; SQLite serialises writers)."""

import threading

import pytest
from django.db import connection

from dispatch import services
from dispatch.models import Route, StopEvent
from tests.factories import DepotFactory, OrderFactory, RouteFactory, StopFactory
from tests.tracking.test_notifications import FakeSms
from tracking import notifications as notify
from tracking.models import Notification, TrackingSettings

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL (DATABASE_URL)"),
]

ORDERS = 30


@pytest.fixture(autouse=True)
def _fake_sms(settings, monkeypatch):
    settings.SMS_BACKEND = "tests.tracking.test_notifications.FakeSms"
    FakeSms.calls, FakeSms.script = [], []
    # Sending is driven by the threads below, not by django-q2.
    monkeypatch.setattr(notify, "async_task", lambda *args, **kwargs: None)


def _race(target, workers=2):
    barrier = threading.Barrier(workers)
    errors: list[BaseException] = []

    def run():
        try:
            barrier.wait()
            target()
        except BaseException as exc:  # surfaced below: a thread's assert would be lost
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


def test_two_workers_make_and_send_each_message_exactly_once(org, monkeypatch):
    TrackingSettings.objects.create(
        organization=org, channels={"out_for_delivery": ["sms"], "arriving_soon": []}
    )
    # The signal must not get there first: both sweeps race for every event.
    monkeypatch.setattr("tracking.receivers.notifications_for_event", lambda **kwargs: [])
    route = RouteFactory(organization=org, depot=DepotFactory(organization=org))
    for n in range(ORDERS):
        StopFactory(route=route, sequence=n + 1, order=OrderFactory(organization=org))
    services.route_transition(route=route, to=Route.Status.PUBLISHED, by=None)
    services.route_transition(route=route, to=Route.Status.IN_PROGRESS, by=None)
    events = list(StopEvent.objects.filter(to_status="out_for_delivery").values_list("pk", flat=True))
    assert len(events) == ORDERS

    def claim_all():
        for event_id in events:
            notify.notifications_for_event(event_id=event_id)

    _race(claim_all)
    assert Notification.objects.count() == ORDERS

    ids = list(Notification.objects.values_list("pk", flat=True))

    def send_all():
        for pk in ids:
            notify.notification_send(notification_id=pk)

    _race(send_all, workers=3)
    assert set(Notification.objects.values_list("status", flat=True)) == {Notification.Status.SENT}
    assert len(FakeSms.calls) == ORDERS
    assert len({call["reference"] for call in FakeSms.calls}) == ORDERS
