"""What reports read, recorded on dispatch's models when it happens (issue #7): the customer's
rating (from tracking) and the proof's completeness (from pod)."""

import datetime as dt
import io

import pytest
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from PIL import Image

from dispatch.models import Order, Route, Stop
from dispatch.services import order_rating_record
from pod import services as pod_services
from pod.models import ProofPolicy
from tests.factories import OrderFactory, RouteFactory, StopFactory
from tracking import customer
from tracking.links import tracking_link_ensure

NOW = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)
pytestmark = [pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _frozen_now(time_machine):
    time_machine.move_to(NOW, tick=False)


def test_the_customers_rating_lands_on_the_order(org):
    order = OrderFactory(organization=org, status=Order.Status.DELIVERED)
    link = tracking_link_ensure(order=order, now=NOW)
    customer.customer_rating(link=link, rating=4, comment="Quick and kind", now=NOW)
    order.refresh_from_db()
    assert (order.rating, order.rating_comment, order.rated_at) == (4, "Quick and kind", NOW)


def test_a_refused_rating_leaves_the_order_unrated(org):
    order = OrderFactory(organization=org, status=Order.Status.OUT_FOR_DELIVERY)
    link = tracking_link_ensure(order=order, now=NOW)
    with pytest.raises(customer.RequestRefused):
        customer.customer_rating(link=link, rating=5, now=NOW)
    assert Order.objects.get(pk=order.pk).rating is None


def test_order_rating_record_refuses_a_rating_outside_1_to_5(org):
    order = OrderFactory(organization=org)
    with pytest.raises(ValidationError):
        order_rating_record(order=order, rating=6, at=NOW)
    assert Order.objects.get(pk=order.pk).version == order.version


def _image() -> ContentFile:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 120, 40)).save(buffer, format="PNG")
    return ContentFile(buffer.getvalue(), name="p.png")


def _record(stop, **capture):
    prepared = pod_services.proof_prepare(stop=stop, **capture)
    return pod_services.proof_record(prepared=prepared, stop=stop, key=__import__("uuid").uuid4(), by=None,
                                     captured_at=NOW - dt.timedelta(minutes=1), now=NOW)  # fmt: skip


@pytest.fixture
def stop(org):
    route = RouteFactory(organization=org, status=Route.Status.IN_PROGRESS)
    return StopFactory(route=route, sequence=1, status=Stop.Status.ARRIVED)


@pytest.mark.parametrize(
    ("capture", "complete"),
    [
        ({"photos": [1], "signature": True, "recipient_name": "Ada"}, True),
        ({"photos": [1], "signature": True, "recipient_name": ""}, False),  # who took it?
    ],
)
def test_a_proof_marks_the_stop_complete_only_with_a_name_and_every_requirement(org, stop, capture, complete):
    fields = {
        "outcome": "delivered",
        "photos": [_image() for _ in capture["photos"]],
        "signature": _image() if capture["signature"] else None,
        "recipient_name": capture["recipient_name"],
    }
    _record(stop, **fields)
    stop.refresh_from_db()
    assert (stop.proof_recorded_at, stop.proof_complete) == (NOW - dt.timedelta(minutes=1), complete)


def test_a_policy_requirement_counts_toward_completeness(org, stop):
    # Prepared before the policy changed: the record judges against the policy it now reads.
    prepared = pod_services.proof_prepare(stop=stop, outcome="delivered", recipient_name="Ada")
    ProofPolicy.objects.create(organization=org, requires=ProofPolicy.Requires.PHOTO)
    assert pod_services.proof_is_complete(prepared=prepared, order=stop.order) is False
    with_photo = pod_services.proof_prepare(
        stop=stop, outcome="delivered", recipient_name="Ada", photos=[_image()]
    )
    assert pod_services.proof_is_complete(prepared=with_photo, order=stop.order) is True


def test_a_failed_attempt_is_complete_with_a_photo_of_the_attempt(org, stop):
    _record(stop, outcome="failed", photos=[_image()])
    stop.refresh_from_db()
    assert stop.proof_complete is True
