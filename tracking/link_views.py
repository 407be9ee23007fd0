"""The dispatcher's side of an order's tracking link: see it, re-issue it, revoke it."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from dispatch.permissions import portal_view
from dispatch.selectors import orders_visible_to
from tracking.links import link_url, tracking_link_ensure, tracking_link_reissue, tracking_link_revoke
from tracking.models import TrackingLink


@require_http_methods(["GET", "POST"])
@portal_view
def order_tracking_link(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: the panel on the order page. POST action=reissue (the old link stops working, a new
    one is made) or action=revoke (no link works until one is re-issued)."""
    order = get_object_or_404(orders_visible_to(request.user), pk=pk)
    notice = ""
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "reissue":
            tracking_link_reissue(order=order, by=request.user)
            notice = "A new link was made; the old one no longer works."
        elif action == "revoke":
            live = TrackingLink.objects.filter(order=order, revoked_at=None).first()
            if live is not None:
                tracking_link_revoke(link=live)
            notice = "The link was revoked: it no longer works. Re-issue one to share the order again."
        if not request.htmx:
            if notice:
                messages.success(request, notice)
            return redirect("tracking:order_tracking_link", pk=order.pk)
    live = TrackingLink.objects.filter(order=order, revoked_at=None).first()
    if live is None and request.method == "GET" and not order.tracking_links.exists():
        live = tracking_link_ensure(order=order)  # orders from before links existed
    return render(
        request,
        "tracking/order_tracking_link.html" + ("#link-panel" if request.htmx else ""),
        {"order": order, "link": live, "url": link_url(live) if live else "", "notice": notice},
    )
