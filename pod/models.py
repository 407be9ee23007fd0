"""Proof of delivery: what a driver captured at a stop, and each organisation's policy for it.

Rows are written by pod.services alone, in the transaction that closes the stop. Files live
under a private storage prefix with generated names and are served only through pod.views,
which checks who is looking; the capture position and time live here, never in the files.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class ProofPolicy(models.Model):
    """What an organisation requires before a delivery counts as done."""

    class Requires(models.TextChoices):
        NONE = "none", "Nothing"
        PHOTO = "photo", "A photo"
        SIGNATURE = "signature", "A signature"
        BOTH = "both", "A photo and a signature"

    organization = models.OneToOneField(
        "dispatch.Organization", on_delete=models.CASCADE, related_name="proof_policy"
    )
    requires = models.CharField(max_length=10, choices=Requires.choices, default=Requires.NONE)
    high_value_requires = models.CharField(
        max_length=10,
        choices=Requires.choices,
        default=Requires.BOTH,
        help_text="For orders flagged high value (never less than the rule above).",
    )
    require_pin = models.BooleanField(default=False, help_text="Every delivery needs the customer's PIN.")
    require_barcode = models.BooleanField(
        default=False, help_text="Every delivery needs a scan of one of the order's parcel codes."
    )

    class Meta:
        verbose_name_plural = "proof policies"

    def __str__(self) -> str:
        return f"Proof policy of {self.organization}"


class ProofOfDelivery(models.Model):
    """The evidence of one visit: a completed delivery or pickup, or a failed attempt."""

    class Outcome(models.TextChoices):
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed attempt"

    organization = models.ForeignKey("dispatch.Organization", on_delete=models.CASCADE, related_name="+")
    stop = models.OneToOneField("dispatch.Stop", on_delete=models.PROTECT, related_name="proof")
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # Made by the app per capture: a retried upload carries the same key and stores nothing new.
    client_key = models.UUIDField()
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    captured_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    recipient_name = models.CharField(max_length=200, blank=True)
    note = models.TextField(blank=True)
    signature = models.FileField(upload_to="pod/", blank=True, max_length=200)
    signature_sha256 = models.CharField(max_length=64, blank=True)
    lat = models.FloatField(null=True, blank=True)
    lng = models.FloatField(null=True, blank=True)
    accuracy_m = models.FloatField(null=True, blank=True)
    captured_at = models.DateTimeField(help_text="When the driver captured it (device clock, as sent).")
    received_at = models.DateTimeField(help_text="When the server stored it.")
    synced_late = models.BooleanField(default=False, help_text="Reached the server long after capture.")
    distance_from_address_m = models.PositiveIntegerField(null=True, blank=True)
    far_from_address = models.BooleanField(default=False, help_text="Captured far from the order's address.")
    pin_checked = models.BooleanField(default=False)
    scanned_code = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["-captured_at"]
        verbose_name_plural = "proofs of delivery"
        constraints = [
            models.UniqueConstraint(fields=["organization", "client_key"], name="proof_client_key_unique"),
            models.CheckConstraint(
                condition=Q(lat__isnull=True) | Q(lat__gte=-90, lat__lte=90), name="proof_lat_range"
            ),
            models.CheckConstraint(
                condition=Q(lng__isnull=True) | Q(lng__gte=-180, lng__lte=180), name="proof_lng_range"
            ),
        ]

    def __str__(self) -> str:
        return f"Proof for stop {self.stop_id} ({self.get_outcome_display().lower()})"


class ProofPhoto(models.Model):
    """One photo of a proof, re-encoded without metadata, with its thumbnail."""

    proof = models.ForeignKey(ProofOfDelivery, on_delete=models.CASCADE, related_name="photos")
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    position = models.PositiveSmallIntegerField()
    image = models.FileField(upload_to="pod/", max_length=200)
    image_sha256 = models.CharField(max_length=64)
    thumbnail = models.FileField(upload_to="pod/", max_length=200)
    thumbnail_sha256 = models.CharField(max_length=64)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    bytes = models.PositiveIntegerField()

    class Meta:
        ordering = ["proof", "position"]
        constraints = [
            models.UniqueConstraint(fields=["proof", "position"], name="proofphoto_position_unique"),
        ]

    def __str__(self) -> str:
        return f"Photo {self.position} of {self.proof}"
