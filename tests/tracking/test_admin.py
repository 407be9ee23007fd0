"""Django admin for live data and proof of delivery: every changelist renders, evidence is
read-only, and a proof's page previews its files through the checked views."""

import io
import uuid

import pytest
from django.contrib import admin
from django.core.files.base import ContentFile
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from pod import services as pod_services
from tests.factories import StopFactory

pytestmark = [pytest.mark.django_db]

MODELS = sorted(
    f"{model._meta.app_label}.{model._meta.model_name}"
    for model in admin.site._registry
    if model._meta.app_label in ("tracking", "pod")
)


@pytest.mark.parametrize("label", MODELS)
def test_every_changelist_renders(admin_client, label):
    app, model = label.split(".")
    assert admin_client.get(reverse(f"admin:{app}_{model}_changelist")).status_code == 200


def test_evidence_cannot_be_added_or_changed_in_admin(admin_client):
    for name in (
        "tracking_locationping",
        "tracking_notification",
        "tracking_trackinglink",
        "pod_proofofdelivery",
    ):
        assert admin_client.get(reverse(f"admin:{name}_add")).status_code == 403


def test_a_proof_page_previews_its_photo_and_signature(admin_client, org):
    image = io.BytesIO()
    Image.new("RGB", (80, 60), (0, 0, 200)).save(image, format="PNG")
    stop = StopFactory(route__organization=org, status="completed")
    prepared = pod_services.proof_prepare(
        stop=stop, outcome="delivered", photos=[ContentFile(image.getvalue(), name="p.png")],
        signature=ContentFile(image.getvalue(), name="s.png"), recipient_name="Ada",
    )  # fmt: skip
    proof = pod_services.proof_record(
        prepared=prepared, stop=stop, key=uuid.uuid4(), by=None, captured_at=timezone.now()
    )
    html = admin_client.get(reverse("admin:pod_proofofdelivery_change", args=[proof.pk])).content.decode()
    photo = proof.photos.get()
    assert reverse("pod:photo_thumbnail", args=[photo.public_id]) in html
    assert reverse("pod:signature", args=[proof.public_id]) in html and photo.image_sha256 in html
    assert admin_client.get(reverse("pod:signature", args=[proof.public_id])).status_code == 200
