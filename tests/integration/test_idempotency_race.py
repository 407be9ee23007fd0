"""Two requests with the same Idempotency-Key at the same moment: one runs, the other is told
so (409) or replays its answer; never two orders. Real threads, so real PostgreSQL only: on
SQLite the second writer would only wait for the first's lock."""

import threading
import time

import pytest
from django.db import connection
from rest_framework.test import APIClient

from dispatch import services
from dispatch.models import IdempotencyRecord, Order

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL (make test-postgres)")
def test_two_simultaneous_requests_with_one_key_create_one_order(org, monkeypatch):
    _key, raw = services.api_key_create(organization=org, name="Shop", by=None)
    real = services.order_create

    def slow_create(**kwargs):  # keep the first request in flight while the second arrives
        time.sleep(0.3)
        return real(**kwargs)

    monkeypatch.setattr(services, "order_create", slow_create)
    body = {"recipient_name": "Ada", "address": "Oranienstraße 1", "service_date": "2026-11-24"}
    for n in range(5):
        barrier, answers = threading.Barrier(2), []

        def send(n=n, barrier=barrier, answers=answers):
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
            try:
                barrier.wait()
                response = client.post(
                    "/api/v1/orders/", body, format="json", HTTP_IDEMPOTENCY_KEY=f"race-{n}"
                )
                answers.append((response.status_code, response.get("Idempotent-Replayed")))
            finally:
                connection.close()

        threads = [threading.Thread(target=send) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # The loser either came while the winner was in flight (409) or just after (a replay).
        assert sorted(answers, key=str) in (
            sorted([(201, None), (409, None)], key=str),
            sorted([(201, None), (201, "true")], key=str),
        ), answers
    assert Order.objects.filter(organization=org).count() == 5
    assert IdempotencyRecord.objects.filter(status_code=201).count() == 5
