"""JOB-1: the outbox row and its django-q2 task are written with the business change, in one
transaction. Rolled back, neither exists; committed, both do. Real commits (transaction=True),
the real ORM broker (django_q_ormq), on SQLite and on PostgreSQL."""

import pytest
from django.db import transaction
from django_q.models import OrmQ

from dispatch.models import Order
from tests.factories import OrderFactory
from tracking import notifications as notify
from tracking.models import Notification

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


class Boom(Exception):
    pass


def _out_for_delivery(order: Order) -> None:
    """The business change and its messages, as the route-start service makes them."""
    Order.objects.filter(pk=order.pk).update(status=Order.Status.OUT_FOR_DELIVERY)
    order.refresh_from_db()
    made = notify.notifications_create(order=order, event=Notification.Event.OUT_FOR_DELIVERY)
    assert [row.status for row in made] == ["pending", "pending"]  # e-mail and SMS


def test_a_rollback_leaves_no_outbox_row_and_no_queued_task(org):
    order = OrderFactory(organization=org, status="assigned", recipient_email="ada@example.com")
    OrmQ.objects.all().delete()

    with pytest.raises(Boom), transaction.atomic():
        _out_for_delivery(order)
        assert Notification.objects.count() == 2  # written, not yet committed
        raise Boom

    order.refresh_from_db()
    assert order.status == "assigned"
    assert Notification.objects.count() == 0
    assert OrmQ.objects.count() == 0

    # The same change committed: every row and its task are there (the test can see them).
    with transaction.atomic():
        _out_for_delivery(order)
    assert Notification.objects.filter(status="pending").count() == 2
    assert OrmQ.objects.count() == 2
