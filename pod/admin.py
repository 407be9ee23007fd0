"""Django admin for proof of delivery: evidence, so read-only, with previews of the files
(served through pod.views, which checks the viewer)."""

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from dispatch.admin import ReadOnlyAdmin
from pod.models import ProofOfDelivery, ProofPhoto, ProofPolicy


@admin.register(ProofPolicy)
class ProofPolicyAdmin(admin.ModelAdmin):
    list_display = ["organization", "requires", "high_value_requires", "require_pin", "require_barcode"]
    list_filter = ["requires", "require_pin", "require_barcode"]
    search_fields = ["organization__name"]


class ProofPhotoInline(admin.TabularInline):
    model = ProofPhoto
    extra = 0
    can_delete = False
    fields = ["preview", "position", "width", "height", "bytes", "image_sha256"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description="photo")
    def preview(self, photo: ProofPhoto) -> str:
        return format_html(
            '<a href="{}" target="_blank"><img src="{}" alt="photo {}" width="120"></a>',
            reverse("pod:photo", args=[photo.public_id]),
            reverse("pod:photo_thumbnail", args=[photo.public_id]),
            photo.position,
        )


@admin.register(ProofOfDelivery)
class ProofOfDeliveryAdmin(ReadOnlyAdmin):
    list_display = [
        "stop", "outcome", "recipient_name", "captured_at", "received_at", "synced_late", "far_from_address",
    ]  # fmt: skip
    list_filter = ["outcome", "synced_late", "far_from_address", "pin_checked", "organization"]
    search_fields = [
        "recipient_name",
        "stop__order__external_ref",
        "stop__order__recipient_name",
        "client_key",
    ]
    date_hierarchy = "captured_at"
    list_select_related = ["stop__order", "stop__route__driver__user"]
    inlines = [ProofPhotoInline]
    exclude = ["signature"]
    readonly_fields = [
        "organization", "stop", "public_id", "client_key", "outcome", "captured_by", "recipient_name", "note",
        "signature_preview", "signature_sha256", "lat", "lng", "accuracy_m", "captured_at", "received_at",
        "synced_late", "distance_from_address_m", "far_from_address", "pin_checked", "scanned_code",
        "photo_hashes",
    ]  # fmt: skip
    show_full_result_count = False

    @admin.display(description="signature")
    def signature_preview(self, proof: ProofOfDelivery) -> str:
        if not proof.signature:
            return "—"
        return format_html(
            '<img src="{}" alt="signature" width="240">', reverse("pod:signature", args=[proof.public_id])
        )

    @admin.display(description="photo SHA-256")
    def photo_hashes(self, proof: ProofOfDelivery) -> str:
        return format_html_join(
            "", "<div>{}: {}</div>", ((p.position, p.image_sha256) for p in proof.photos.all())
        )
