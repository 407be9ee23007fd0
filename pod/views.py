"""Proof files and pages. Files are never at a guessable public URL: each request is checked
against who is looking (pod.selectors), and another organisation's proof is a 404."""

from django.contrib.auth.decorators import login_required
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils.cache import patch_cache_control
from django.views.decorators.http import require_GET

from dispatch.permissions import portal_view
from dispatch.selectors import orders_visible_to
from pod.selectors import order_proofs, photos_visible_to, proofs_visible_to


def proof_file_response(name: str, *, download_name: str) -> FileResponse:
    """A stored proof file as a private, exactly typed response (callers check the viewer)."""
    if not name or not default_storage.exists(name):
        raise Http404("This proof file is missing.")
    content_type = "image/png" if name.endswith(".png") else "image/jpeg"
    response = FileResponse(
        default_storage.open(name, "rb"),
        content_type=content_type,
        as_attachment=False,
        filename=download_name,
    )
    # Private evidence: the browser may keep it, shared caches and proxies may not.
    patch_cache_control(response, private=True, max_age=3600)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@require_GET
@login_required
def photo(request: HttpRequest, public_id) -> FileResponse:
    item = get_object_or_404(photos_visible_to(request.user), public_id=public_id)
    return proof_file_response(item.image.name, download_name=f"proof-{item.public_id}.jpg")


@require_GET
@login_required
def photo_thumbnail(request: HttpRequest, public_id) -> FileResponse:
    item = get_object_or_404(photos_visible_to(request.user), public_id=public_id)
    return proof_file_response(item.thumbnail.name, download_name=f"proof-{item.public_id}-small.jpg")


@require_GET
@login_required
def signature(request: HttpRequest, public_id) -> FileResponse:
    proof = get_object_or_404(proofs_visible_to(request.user), public_id=public_id)
    return proof_file_response(proof.signature.name, download_name=f"signature-{proof.public_id}.png")


@require_GET
@portal_view
def order_proof(request: HttpRequest, pk: int) -> HttpResponse:
    """The printable proof-of-delivery receipt of an order (one A4 page); with htmx, only the
    panel the order page shows."""
    order = get_object_or_404(orders_visible_to(request.user).select_related("organization"), pk=pk)
    template = "pod/order_proof.html" + ("#proof-panel" if request.htmx else "")
    return render(request, template, {"nav": "orders", "order": order, "proofs": order_proofs(order=order)})
