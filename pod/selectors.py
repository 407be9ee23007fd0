"""Reads for proof of delivery, scoped to who is looking."""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Prefetch, QuerySet
from django.urls import reverse

from dispatch.models import Membership, Order, Stop
from dispatch.selectors import membership_for
from pod.models import ProofOfDelivery, ProofPhoto


def proofs_visible_to(user: AbstractBaseUser) -> QuerySet[ProofOfDelivery]:
    """The organisation's proofs for its admins and dispatchers; a driver's own captures for a
    driver; all for platform staff (Django admin); nothing for anyone else (404s, not 403s)."""
    membership = membership_for(user) if user.is_authenticated else None
    proofs = ProofOfDelivery.objects.select_related("stop__order", "stop__route__driver__user")
    if user.is_authenticated and user.is_staff:
        return proofs  # platform staff see everything in Django admin, previews included
    if membership is None:
        return proofs.none()
    if membership.uses_portal:
        return proofs.filter(organization=membership.organization)
    if membership.role == Membership.Role.DRIVER:
        return proofs.filter(organization=membership.organization, captured_by=user)
    return proofs.none()


def photos_visible_to(user: AbstractBaseUser) -> QuerySet[ProofPhoto]:
    return ProofPhoto.objects.filter(proof__in=proofs_visible_to(user))


def order_proofs(*, order: Order) -> list[ProofOfDelivery]:
    """Every proof of the order's visits, newest first, photos in order (two queries)."""
    return list(
        ProofOfDelivery.objects.filter(stop__order=order)
        .select_related("stop__route__driver__user", "captured_by")
        .prefetch_related(Prefetch("photos", queryset=ProofPhoto.objects.order_by("position")))
        .order_by("-captured_at")
    )


def proof_summary(stop: Stop) -> dict[str, Any] | None:
    """The stop's proof as the driver API answers it, or None."""
    proof = ProofOfDelivery.objects.filter(stop=stop).prefetch_related("photos").first()
    if proof is None:
        return None
    return {
        "public_id": str(proof.public_id),
        "outcome": proof.outcome,
        "recipient_name": proof.recipient_name,
        "captured_at": proof.captured_at.isoformat(),
        "received_at": proof.received_at.isoformat(),
        "synced_late": proof.synced_late,
        "far_from_address": proof.far_from_address,
        "distance_from_address_m": proof.distance_from_address_m,
        "pin_checked": proof.pin_checked,
        "scanned_code": proof.scanned_code,
        "signature": (
            {"url": reverse("pod:signature", args=[proof.public_id]), "sha256": proof.signature_sha256}
            if proof.signature
            else None
        ),
        "photos": [
            {
                "url": reverse("pod:photo", args=[photo.public_id]),
                "thumbnail_url": reverse("pod:photo_thumbnail", args=[photo.public_id]),
                "sha256": photo.image_sha256,
                "width": photo.width,
                "height": photo.height,
            }
            for photo in proof.photos.all()
        ],
    }
