import hashlib

from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.gzip import re_accepts_gzip
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.utils import timezone, translation
from django.utils.cache import get_conditional_response, patch_cache_control, patch_vary_headers
from django.utils.formats import number_format
from django.utils.functional import SimpleLazyObject
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import compress_string
from django.views.decorators.gzip import gzip_page
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
    # Read only if the template renders them: the stats may come from their fragment, keyed by
    # the fingerprint (see dashboard.html), the route rows from theirs (_route_rows_html). A
    # partial with no decision's error (that is for the one who made it) is the same for every
    # dispatcher of the organisation: its forms carry no CSRF token, so a poll can share it
    # (_live_poll).
    cache_live = partial and decide_error is None
    counts = SimpleLazyObject(lambda: order_status_counts(user=request.user, day=today))
    live = SimpleLazyObject(lambda: dashboard_live(organization=organization, day=today, now=now))
    route_rows = SimpleLazyObject(lambda: _route_rows_html(live["rows"]))
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
            "route_rows": route_rows,
            "alerts": alerts,
            "cache_live": cache_live,
            # Why accepting or declining a customer's request failed (tracking.customer_views).
            "decide_error": decide_error,
        },
    )


# What a route's row shows, but for what moves with every GPS fix (_row_live_tail).
ROW_FIELDS = (
    "pk",
    "colour",
    "name",
    "status",
    "status_label",
    "total",
    "done",
    "failed",
    "late",
    "vehicle__name",
    "depot__name",
    "projected_finish",
    "url",
)
ROW_LIVE_MARKER = "<!--live-->"


def _route_rows_html(rows: list[dict]) -> list[SafeString]:
    """The dashboard's route rows, each rendered once per content and kept in the cache.

    While drivers move, every poll brings new positions, and rendering 200 rows through the
    template took ~¾ of a poll (over 100 ms); a route's row itself changes only when its stops
    do. So a row is keyed by what it shows (and the timezone and language it is shown in), read
    with the others in one get_many, and only the rows that changed are rendered. Its position
    and travelled distance go in at the marker, for every row, on every poll.
    """
    shown_in = (timezone.get_current_timezone_name(), translation.get_language())
    keys = [
        "dash-row:" + hashlib.sha256(repr((shown_in, [row[f] for f in ROW_FIELDS])).encode()).hexdigest()[:32]
        for row in rows
    ]
    found = cache.get_many(keys)
    rendered = {}
    for key, row in zip(keys, rows, strict=True):
        if key not in found and key not in rendered:
            rendered[key] = render_to_string("tracking/dashboard.html#route-row", {"row": row})
    if rendered:
        # Content-addressed, so never wrong: the timeout only lets finished routes' rows go.
        cache.set_many(rendered, 3600)
    return [
        mark_safe(  # noqa: S308 - rendered by the template; the tail by format_html
            (found.get(key) or rendered[key]).replace(ROW_LIVE_MARKER, _row_live_tail(row), 1)
        )
        for key, row in zip(keys, rows, strict=True)
    ]


def _row_live_tail(row: dict) -> str:
    """A route row's travelled distance and the age of its driver's last position."""
    travelled = (
        format_html(" · travelled {} km", number_format(row["travelled_km"], 1)) if row["started_at"] else ""
    )
    live = row["live"]
    if live is None:
        return travelled + " · no position"
    return travelled + format_html(
        ' · <button type="button" class="link dash-focus{}" data-focus-driver="{}">position {}</button>'
        ' <span class="muted">{}</span>',
        " stale" if live["stale"] else "",
        row["driver_id"],
        live["age"],
        live["source_label"],
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
    if not request.htmx:
        # The full page carries a CSRF token: it never comes from a cache.
        return _render_dashboard(request, organization, now=now, partial=False)
    today = local_today(organization.tzinfo, now)
    fingerprint = dashboard_fingerprint(organization=organization, day=today, now=now)
    digest = hashlib.sha256(fingerprint.encode()).hexdigest()[:32]
    return _revalidated(
        request,
        digest,
        lambda: _live_poll(request, organization, now=now, fingerprint=fingerprint, digest=digest),
    )


def _revalidated(request: HttpRequest, digest: str, answer) -> HttpResponse:
    """304 when the browser already holds version `digest`, else answer()'s response; either way
    with its ETag, Vary and Cache-Control (a 304 carries what its 200 would: RFC 9110 15.4.5).
    The ETag is weak: the same body goes out plain or gzipped, a strong one names one encoding."""
    etag = f'W/"{digest}"'
    response = get_conditional_response(request, etag=etag)
    if response is None:
        response = answer()
    response.headers["ETag"] = etag
    patch_vary_headers(response, ["Accept-Encoding"])
    patch_cache_control(response, private=True, no_cache=True)
    return response


def _live_poll(request: HttpRequest, organization, *, now, fingerprint: str, digest: str) -> HttpResponse:
    """The #live partial of a poll, rendered once per fingerprint and kept in the cache, plain
    and gzipped, for every dispatcher of the organisation and every process: a repeated poll
    is one cache read, and a browser gets ~19 KiB instead of ~230 KiB with 200 routes. Nothing
    secret is in it (no CSRF token), so compressing it gives BREACH nothing to find."""
    encoding = "gzip" if re_accepts_gzip.search(request.headers.get("Accept-Encoding", "")) else "identity"
    key = f"dash-poll:{digest}:"
    body = cache.get(key + encoding)
    if body is None:
        rendered = _render_dashboard(request, organization, now=now, partial=True, fingerprint=fingerprint)
        plain = rendered.content
        packed = compress_string(plain)
        # The fingerprint holds the minute: after it, nobody asks for these again.
        cache.set_many({key + "identity": plain, key + "gzip": packed}, 60)
        body = packed if encoding == "gzip" else plain
    response = HttpResponse(body)
    if encoding == "gzip":
        response.headers["Content-Encoding"] = "gzip"
    return response


@require_GET
@login_required
@gzip_page
def dashboard_map_json(request: HttpRequest) -> HttpResponse:
    """The live map's geometry (route lines, stops, depots) for dashboard.js, which fetches it
    once and again when the #live partial's map_version changes. 304 while it is unchanged.
    Gzipped for a browser that accepts it (a fifth of the size; no secret in it for BREACH)."""
    organization = _portal_membership(request).organization
    now = timezone.now()
    geometry = dashboard_map(organization=organization, day=local_today(organization.tzinfo, now), now=now)
    return _revalidated(request, geometry.etag, lambda: JsonResponse(geometry.data()))


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
