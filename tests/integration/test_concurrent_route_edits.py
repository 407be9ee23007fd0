"""CON-1: two dispatchers move the same stop to different drivers at the same moment."""

import threading

import pytest
from django.db import connection

from dispatch import planning, services
from dispatch.models import Stop
from tests.factories import OrderFactory, RouteFactory, StopFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

ITERATIONS = 200 if connection.vendor == "postgresql" else 40


def test_one_of_two_simultaneous_moves_wins_and_the_other_is_refused(org, monkeypatch):
    # Times are beside the point here; skip the travel model so the race window stays tight.
    monkeypatch.setattr(planning, "route_recompute", lambda *, route: route)
    source = RouteFactory(organization=org)
    targets = [
        RouteFactory(organization=org, depot=source.depot),
        RouteFactory(organization=org, depot=source.depot),
    ]
    for n in range(ITERATIONS):
        stop = StopFactory(route=source, sequence=1000 + n, order=OrderFactory(organization=org))
        version = source.__class__.objects.get(pk=source.pk).version
        barrier = threading.Barrier(2)
        outcomes: list[str] = []

        def move(target, stop=stop, version=version, barrier=barrier, outcomes=outcomes):
            try:
                barrier.wait()
                planning.stop_move(
                    stop=stop, to_route=target, position=1, by=None,
                    expected_version=version, expected_route_id=source.pk,
                )  # fmt: skip
                outcomes.append("moved")
            except services.StaleEdit:
                outcomes.append("refused")
            finally:
                connection.close()

        threads = [threading.Thread(target=move, args=(t,)) for t in targets]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) == ["moved", "refused"], (n, outcomes)
        assert Stop.objects.filter(pk=stop.pk, route__in=targets).count() == 1
        assert Stop.objects.filter(order=stop.order).count() == 1
