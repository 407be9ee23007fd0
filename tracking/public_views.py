"""The customer's tracking page, /t/<token>/: no login, the token is the only key.

Every answer is private to the customer's browser and never leaks the token: no referrer is
sent (the map tiles never learn it), the full page is not stored, and the polled partial is
only revalidated (ETag → 304). Requests per client address are rate-limited.
"""

import hashlib
import math
import mimetypes
import time

from django.conf import settings
from django.core.cache import cache
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.utils.cache import get_conditional_response, patch_cache_control, patch_vary_headers
from django.views.decorators.http import require_GET
from django_htmx.middleware import HtmxDetails

from pod.models import ProofOfDelivery, ProofPhoto
from pod.views import proof_file_response
from tracking.customer import page_context
from tracking.links import (
    settings_for,
    token_hash,
    tracking_link_lookup,
    tracking_link_seen,
    tracking_link_still_open,
)
from tracking.selectors import customer_fingerprint, customer_view


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def client_address(request: HttpRequest) -> str:
    # The same rule as the login lockout: X-Forwarded-For only behind a configured proxy.
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if forwarded and getattr(settings, "AXES_IPWARE_PROXY_COUNT", None):
        return forwarded.split(",")[0].strip()
    return request.META.get("REMOTE_ADDR", "")


def retry_after(request: HttpRequest) -> int | None:
    """Seconds to wait once an address has made TRACKING_RATE_PER_MINUTE requests in the
    current minute (counters in the cache: Redis when REDIS_URL is set), else None."""
    now = time.time()
    window = int(now // 60)
    key = f"track-rate:{hashlib.sha256(client_address(request).encode()).hexdigest()[:32]}:{window}"
    cache.add(key, 0, timeout=90)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr: count this one as the first
        cache.set(key, 1, timeout=90)
        count = 1
    if count <= settings.TRACKING_RATE_PER_MINUTE:
        return None
    return max(1, math.ceil((window + 1) * 60 - now))


def rate_limited(request: HttpRequest) -> HttpResponse | None:
    """The tracking page's 429 (with Retry-After) for an address over its rate, else None."""
    wait = retry_after(request)
    if wait is None:
        return None
    response = render(request, "tracking/track_slow_down.html", {"retry_after": wait}, status=429)
    response.headers["Retry-After"] = str(wait)
    return response


def private(response: HttpResponse, *, revalidate: bool = False) -> HttpResponse:
    response.headers["Referrer-Policy"] = "no-referrer"
    if revalidate:
        patch_cache_control(response, private=True, no_cache=True)
    else:
        patch_cache_control(response, private=True, no_store=True)
    return response


def resolve(request: HttpRequest, token: str):
    """(link, None) for a working link, else (None, the 404 or 410 page)."""
    link, state = tracking_link_lookup(token)
    if link is None:
        # One body for every unknown, malformed or revoked token: nothing to tell them apart.
        return None, private(render(request, "tracking/track_unknown.html", status=404))
    if state == "expired":
        contact = settings_for(link.organization_id).contact_text
        page = render(
            request,
            "tracking/track_expired.html",
            {"organization": link.order.organization, "contact": contact},
            status=410,
        )
        return None, private(page)
    return link, None


@require_GET
def track(request: HtmxHttpRequest, token: str) -> HttpResponse:
    refused = rate_limited(request)
    if refused is not None:
        return refused
    # The page and its polled partial share this URL: a browser must not answer one with the
    # other from its cache (the back button showing a bare partial).
    response = _poll(request, token) if request.htmx else _page(request, token)
    patch_vary_headers(response, ("HX-Request",))
    return response


def _page(request: HtmxHttpRequest, token: str) -> HttpResponse:
    link, refusal = resolve(request, token)
    if refusal is not None:
        return refusal
    now = timezone.now()
    tracking_link_seen(link=link, now=now)
    options = settings_for(link.organization_id)  # read once, used by every part of the page
    context = _live_context(link, token, now, options) | {
        "has_logo": bool(options.logo),
        "server_now": now.isoformat(),
    }
    # The customer's own requests: instructions, another window, a message, the rating.
    context |= page_context(link=link, now=now, options=options)
    return private(render(request, "tracking/track.html", context))


def _live_context(link, token: str, now, options) -> dict:
    data = customer_view(link=link, now=now, options=options)
    return {"token": token, "data": _as_shown(data), "link": link, "organization": link.order.organization}


def _as_shown(data: dict) -> dict:
    """The page's data without what only the clock changes: the page says when the ETA was
    updated and the browser counts the minutes since, so the bytes of a partial are fixed by
    its ETag (which leaves the clock out) and an open page is not re-sent every minute."""
    if data["eta"] is None:
        return data
    return {**data, "eta": {k: v for k, v in data["eta"].items() if k != "updated_minutes_ago"}}


def _poll(request: HtmxHttpRequest, token: str) -> HttpResponse:
    """The open page's poll every 15 s: the #track-live partial, or a 304 when the customer
    already has what it would show. One query decides (customer_fingerprint); a changed page
    is built from the same row, plus its timeline (and its proof once delivered)."""
    now = timezone.now()
    digest = token_hash(token)
    fingerprint = customer_fingerprint(token_hash=digest, now=now) if digest else None
    if fingerprint is None or (fingerprint.expires_at is not None and fingerprint.expires_at <= now):
        link, refusal = resolve(request, token)  # the same 404 / 410 as the full page
        if refusal is not None:
            return refusal
        data = _as_shown(customer_view(link=link, now=now))  # it came back between the two reads
        return private(render(request, "tracking/track.html#track-live", {"token": token, "data": data}))
    tracking_link_still_open(link_id=fingerprint.link_id, last_seen_at=fingerprint.last_seen_at, now=now)
    not_modified = get_conditional_response(request, etag=fingerprint.etag)
    if not_modified is not None:
        return private(not_modified, revalidate=True)
    data = _as_shown(customer_view(link=None, now=now, row=fingerprint.row))
    response = render(request, "tracking/track.html#track-live", {"token": token, "data": data})
    response.headers["ETag"] = fingerprint.etag
    return private(response, revalidate=True)


def _proof_for(link) -> ProofOfDelivery:
    proof = (
        ProofOfDelivery.objects.filter(stop__order=link.order, outcome=ProofOfDelivery.Outcome.DELIVERED)
        .order_by("-captured_at")
        .first()
    )
    if proof is None:
        raise Http404("No proof of delivery for this order.")
    return proof


@require_GET
def track_photo(request: HttpRequest, token: str, public_id, small: bool = False) -> HttpResponse:
    """A proof photo of this link's own delivery (another order's photo is a 404)."""
    link, refusal = resolve(request, token)
    if refusal is not None:
        return refusal
    photo = get_object_or_404(ProofPhoto, proof=_proof_for(link), public_id=public_id)
    name = photo.thumbnail.name if small else photo.image.name
    return private(proof_file_response(name, download_name=f"delivery-{photo.public_id}.jpg"))


@require_GET
def track_signature(request: HttpRequest, token: str) -> HttpResponse:
    link, refusal = resolve(request, token)
    if refusal is not None:
        return refusal
    proof = _proof_for(link)
    if not proof.signature:
        raise Http404("This delivery has no signature.")
    return private(proof_file_response(proof.signature.name, download_name="signature.png"))


@require_GET
def track_logo(request: HttpRequest, token: str) -> HttpResponse:
    link, refusal = resolve(request, token)
    if refusal is not None:
        return refusal
    logo = settings_for(link.organization_id).logo
    if not logo or not default_storage.exists(logo.name):
        raise Http404("No logo.")
    content_type = mimetypes.guess_type(logo.name)[0] or "application/octet-stream"
    response = FileResponse(default_storage.open(logo.name, "rb"), content_type=content_type)
    response.headers["X-Content-Type-Options"] = "nosniff"
    patch_cache_control(response, private=True, max_age=3600)
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
