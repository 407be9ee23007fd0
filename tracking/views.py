import hashlib

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.cache import get_conditional_response, patch_cache_control
from django.utils.functional import SimpleLazyObject
from django.utils.http import quote_etag
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.middleware import HtmxDetails

from dispatch.models import Membership, Order
from dispatch.selectors import membership_for, order_status_counts
from dispatch.timeutils import local_today
from tracking import alerts, customer
from tracking.selectors import (
    alerts_visible_to,
    dashboard_alerts,
    dashboard_fingerprint,
    dashboard_live,
    dashboard_map,
)


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def _portal_membership(request: HttpRequest):
    membership = membership_for(request.user)
    if membership is None or not membership.uses_portal:
        raise PermissionDenied("This page is for the dispatchers and admins of an organisation.")
    return membership


def _render_dashboard(
    request: HttpRequest,
    organization,
    *,
    now,
    partial: bool,
    decide_error: dict | None = None,
    fingerprint: str | None = None,
) -> HttpResponse:
    today = local_today(organization.tzinfo, now)
    if fingerprint is None:
        fingerprint = dashboard_fingerprint(organization=organization, day=today, now=now)
    # Read only if the template renders them. A poll's whole #live is one {% cache %} fragment
    # keyed by the fingerprint (see dashboard.html), shared by every dispatcher of the
    # organisation and every process, so a poll whose fingerprint was rendered before runs none
    # of these queries; on a miss, the stats and the routes may still come from their own
    # fragments. The full page's alerts carry CSRF tokens, and a decision's error is for the one
    # who made it: those are rendered every time.
    cache_live = partial and decide_error is None
    counts = SimpleLazyObject(lambda: order_status_counts(user=request.user, day=today))
    live = SimpleLazyObject(lambda: dashboard_live(organization=organization, day=today, now=now))
    alerts = SimpleLazyObject(lambda: dashboard_alerts(organization=organization))
    template = "tracking/dashboard.html" + ("#live" if partial else "")
    return render(
        request,
        template,
        {
            "nav": "dashboard",
            "today": today,
            "now": now,
            "fingerprint": fingerprint,
            "counts": counts,
            "total": SimpleLazyObject(lambda: sum(counts.values())),
            "status_choices": Order.Status.choices,
            "live": live,
            "alerts": alerts,
            "cache_live": cache_live,
            # Why accepting or declining a customer's request failed (tracking.customer_views).
            "decide_error": decide_error,
        },
    )


@require_GET
@login_required
@vary_on_headers("HX-Request")
def dashboard(request: HtmxHttpRequest) -> HttpResponse:
    """The dispatcher's live map. Drivers land on their own app instead.

    htmx polls the #live partial; it answers 304 while nothing it shows has changed.
    """
    membership = membership_for(request.user)
    if membership is not None and membership.role == Membership.Role.DRIVER:
        return redirect("tracking:driver_home")
    membership = _portal_membership(request)
    organization = membership.organization
    now = timezone.now()
    etag = fingerprint = None
    if request.htmx:
        # Only the partial: the full page carries a CSRF token that must not come from a cache.
        today = local_today(organization.tzinfo, now)
        fingerprint = dashboard_fingerprint(organization=organization, day=today, now=now)
        etag = quote_etag(hashlib.sha256(fingerprint.encode()).hexdigest()[:32])
        not_modified = get_conditional_response(request, etag=etag)
        if not_modified is not None:
            patch_cache_control(not_modified, private=True, no_cache=True)
            return not_modified
    response = _render_dashboard(
        request, organization, now=now, partial=bool(request.htmx), fingerprint=fingerprint
    )
    if etag:
        response.headers["ETag"] = etag
        patch_cache_control(response, private=True, no_cache=True)
    return response


@require_GET
@login_required
def dashboard_map_json(request: HttpRequest) -> HttpResponse:
    """The live map's geometry (route lines, stops, depots) for dashboard.js, which fetches it
    once and again when the #live partial's map_version changes. 304 while it is unchanged."""
    organization = _portal_membership(request).organization
    now = timezone.now()
    geometry = dashboard_map(organization=organization, day=local_today(organization.tzinfo, now), now=now)
    etag = quote_etag(geometry.etag)
    response = get_conditional_response(request, etag=etag)
    if response is None:
        response = JsonResponse(geometry.data())
        response.headers["ETag"] = etag
    patch_cache_control(response, private=True, no_cache=True)
    return response


@require_POST
@login_required
def alert_acknowledge(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """A dispatcher has seen an alert: it leaves the list (htmx gets the refreshed #live)."""
    organization = _portal_membership(request).organization
    alert = get_object_or_404(alerts_visible_to(organization=organization), pk=pk)
    alerts.alert_acknowledge(alert=alert, by=request.user)
    customer.customer_request_alert_acknowledged(alert=alert)
    if not request.htmx:
        return redirect("tracking:dashboard")
    return _render_dashboard(request, organization, now=timezone.now(), partial=True)
