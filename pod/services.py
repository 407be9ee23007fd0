"""Writes for proof of delivery. tracking's driver services call these inside the transaction
that closes the stop, so a stop is never completed without its proof, nor a proof kept for a
stop that did not change.

Two steps, so that nothing is written for a bad upload: `proof_prepare` checks the policy and
decodes every image in memory (raising ValidationError or ImageRejected), then `proof_record`
stores the files and rows. Files are written before the rows; if the transaction then fails,
`PreparedProof.discard()` deletes them, and `proof_orphans_purge` removes any a crash left.
"""

import uuid as uuid_lib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from dispatch.geo import distance_m
from dispatch.models import Order, Stop
from dispatch.services import stop_proof_record
from pod.images import EncodedImage, ImageRejected, ProcessedPhoto, process_photo, process_signature
from pod.models import ProofOfDelivery, ProofPhoto, ProofPolicy

POD_PREFIX = "pod"
_STRENGTH = {
    ProofPolicy.Requires.NONE: set(),
    ProofPolicy.Requires.PHOTO: {"photo"},
    ProofPolicy.Requires.SIGNATURE: {"signature"},
    ProofPolicy.Requires.BOTH: {"photo", "signature"},
}

__all__ = ["ImageRejected", "PreparedProof", "proof_prepare", "proof_record", "proof_requirements"]


def policy_for(organization_id: int) -> ProofPolicy:
    """The organisation's policy; one that never set one requires nothing."""
    return ProofPolicy.objects.filter(organization_id=organization_id).first() or ProofPolicy(
        organization_id=organization_id
    )


def proof_requirements(*, order: Order, policy: ProofPolicy | None = None) -> set[str]:
    """What completing this order's delivery needs: a subset of photo, signature, pin, barcode.

    A failed attempt needs none of them (a photo of the closed door is welcome, not required).
    """
    policy = policy or policy_for(order.organization_id)
    needs = set(_STRENGTH[policy.requires])
    if order.high_value:
        needs |= _STRENGTH[policy.high_value_requires]
    if policy.require_pin or order.require_pin:
        needs.add("pin")
    if policy.require_barcode and order.parcel_codes:
        needs.add("barcode")
    return needs


@dataclass
class PreparedProof:
    """Decoded, re-encoded images and checked fields, not yet stored."""

    outcome: str
    photos: list[ProcessedPhoto]
    signature: EncodedImage | None
    recipient_name: str
    pin_checked: bool
    scanned_code: str
    written: list[str] = field(default_factory=list)

    def discard(self) -> None:
        """Delete the files this proof wrote (its transaction failed)."""
        for name in self.written:
            default_storage.delete(name)
        self.written.clear()


def _normalise_code(code: str) -> str:
    return "".join(code.split()).upper()


def proof_prepare(
    *,
    stop: Stop,
    outcome: str,
    photos: list | None = None,
    signature=None,
    recipient_name: str = "",
    pin: str = "",
    scanned_code: str = "",
) -> PreparedProof:
    """Check a capture against the policy and decode its images; write nothing.

    Raises ValidationError naming every missing or wrong field (photo, signature,
    recipient_name, pin, scanned_code) or ImageRejected for an upload that is not a usable image.
    """
    if outcome not in ProofOfDelivery.Outcome.values:
        raise ValidationError({"kind": "A proof is for a delivered stop or a failed attempt."})
    photos = list(photos or [])
    recipient_name, pin, scanned_code = recipient_name.strip(), pin.strip(), scanned_code.strip()
    order = stop.order
    errors: dict[str, str] = {}
    if len(photos) > settings.POD_MAX_PHOTOS:
        errors["photos"] = f"At most {settings.POD_MAX_PHOTOS} photos per stop."
    if len(recipient_name) > 200:
        errors["recipient_name"] = "The recipient's name is longer than 200 characters."
    pin_checked = False
    if outcome == ProofOfDelivery.Outcome.DELIVERED:
        needs = proof_requirements(order=order)
        if "photo" in needs and not photos:
            errors["photos"] = "This delivery needs a photo of the parcel at the door."
        if "signature" in needs and signature is None:
            errors["signature"] = "This delivery needs the recipient's signature."
        if "signature" in needs and not recipient_name:
            errors["recipient_name"] = "Write the name of the person who signed."
        if "pin" in needs:
            if not pin:
                errors["pin"] = "Ask the customer for the 4-digit PIN from their message and type it in."
            elif not constant_time_compare(pin, order.handover_pin):
                errors["pin"] = "That PIN is not this order's; ask the customer to check their message."
            else:
                pin_checked = True
        if "barcode" in needs and not scanned_code:
            errors["scanned_code"] = "Scan the parcel's barcode (or type it)."
    if scanned_code:
        codes = {_normalise_code(code) for code in order.parcel_codes}
        if not codes:
            errors.setdefault("scanned_code", "This order has no parcel codes to scan against.")
        elif _normalise_code(scanned_code) not in codes:
            errors.setdefault("scanned_code", f"“{scanned_code[:40]}” is not a parcel of this order.")
    if errors:
        raise ValidationError(errors)
    # Decoding is the expensive part: only once the cheap checks have passed.
    processed = [process_photo(upload) for upload in photos]
    drawn = process_signature(signature) if signature is not None else None
    return PreparedProof(
        outcome=outcome,
        photos=processed,
        signature=drawn,
        recipient_name=recipient_name,
        pin_checked=pin_checked,
        scanned_code=scanned_code[:100],
    )


def _store(prepared: PreparedProof, organization_id: int, image: EncodedImage, kind: str) -> str:
    # A generated name: nothing the client sent (file name, type) ever reaches the file system.
    name = f"{POD_PREFIX}/{organization_id}/{uuid_lib.uuid4().hex}-{kind}.{image.extension}"
    saved = default_storage.save(name, ContentFile(image.content))
    prepared.written.append(saved)
    return saved


def proof_record(
    *,
    prepared: PreparedProof,
    stop: Stop,
    key: uuid_lib.UUID,
    by: AbstractBaseUser | None,
    captured_at: datetime,
    lat: float | None = None,
    lng: float | None = None,
    accuracy_m: float | None = None,
    note: str = "",
    now: datetime | None = None,
) -> ProofOfDelivery:
    """Store a prepared proof for `stop`. Call inside the transaction that closes the stop, and
    call `prepared.discard()` if that transaction fails."""
    now = now or timezone.now()
    order = stop.order
    distance = None
    if lat is not None and lng is not None and order.lat is not None and order.lng is not None:
        distance = round(distance_m(lat, lng, order.lat, order.lng))
    signature_name = signature_hash = ""
    if prepared.signature is not None:
        signature_name = _store(prepared, stop.organization_id, prepared.signature, "signature")
        signature_hash = prepared.signature.sha256
    proof = ProofOfDelivery.objects.create(
        organization_id=stop.organization_id,
        stop=stop,
        client_key=key,
        outcome=prepared.outcome,
        captured_by=by,
        recipient_name=prepared.recipient_name,
        note=note.strip(),
        signature=signature_name,
        signature_sha256=signature_hash,
        lat=lat,
        lng=lng,
        accuracy_m=accuracy_m,
        captured_at=captured_at,
        received_at=now,
        synced_late=now - captured_at > timedelta(minutes=settings.POD_LATE_SYNC_MINUTES),
        distance_from_address_m=distance,
        far_from_address=distance is not None and distance > settings.POD_FAR_FROM_ADDRESS_M,
        pin_checked=prepared.pin_checked,
        scanned_code=prepared.scanned_code,
    )
    ProofPhoto.objects.bulk_create(
        [
            ProofPhoto(
                proof=proof,
                position=position,
                image=_store(prepared, stop.organization_id, photo.image, "photo"),
                image_sha256=photo.image.sha256,
                thumbnail=_store(prepared, stop.organization_id, photo.thumbnail, "thumb"),
                thumbnail_sha256=photo.thumbnail.sha256,
                width=photo.image.width,
                height=photo.image.height,
                bytes=len(photo.image.content),
            )
            for position, photo in enumerate(prepared.photos, start=1)
        ]
    )
    stop_proof_record(stop=stop, at=captured_at, complete=proof_is_complete(prepared=prepared, order=order))
    return proof


def proof_is_complete(*, prepared: PreparedProof, order: Order) -> bool:
    """Whether a proof holds everything reports call complete (docs/reports.md): for a
    delivery, the recipient's name and every requirement of the policy (photo, signature, PIN,
    parcel scan); for a failed attempt, a photo of the attempt."""
    if prepared.outcome != ProofOfDelivery.Outcome.DELIVERED:
        return bool(prepared.photos)
    needs = proof_requirements(order=order)
    met = {
        "photo": bool(prepared.photos),
        "signature": prepared.signature is not None,
        "pin": prepared.pin_checked,
        "barcode": bool(prepared.scanned_code),
    }
    return bool(prepared.recipient_name) and all(met[need] for need in needs)


def proof_orphans_purge(*, older_than: timedelta = timedelta(hours=1), now: datetime | None = None) -> int:
    """Delete proof files no row refers to (left by a process that died between writing the
    files and committing). Only files older than `older_than`, so a capture being saved right
    now is never touched. Safe to run twice; returns how many were deleted."""
    cutoff = (now or timezone.now()) - older_than
    known = set(ProofPhoto.objects.values_list("image", flat=True))
    known |= set(ProofPhoto.objects.values_list("thumbnail", flat=True))
    known |= set(ProofOfDelivery.objects.exclude(signature="").values_list("signature", flat=True))
    removed = 0
    try:
        folders, _files = default_storage.listdir(POD_PREFIX)
    except FileNotFoundError:
        return 0
    for folder in folders:
        _sub, files = default_storage.listdir(f"{POD_PREFIX}/{folder}")
        for name in files:
            path = f"{POD_PREFIX}/{folder}/{name}"
            if path not in known and default_storage.get_modified_time(path) < cutoff:
                default_storage.delete(path)
                removed += 1
    return removed


def requirements_list(needs: set[str]) -> str:
    """'a photo, a signature and the customer's PIN', in a fixed order."""
    words = {
        "photo": "a photo",
        "signature": "a signature",
        "pin": "the customer's PIN",
        "barcode": "a parcel scan",
    }
    listed = [words[n] for n in ("photo", "signature", "pin", "barcode") if n in needs]
    return listed[0] if len(listed) == 1 else ", ".join(listed[:-1]) + " and " + listed[-1]


def requirements_text(needs: set[str]) -> str:
    """'This delivery needs a photo and a signature: …' for a refusal message."""
    return f"This delivery needs {requirements_list(needs)}: complete it with proof of delivery."
