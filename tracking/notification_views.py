"""Notification pages: the customer's unsubscribe link, the SMS provider's inbound callback
(STOP replies), and the message log on the dispatcher's order page. Thin: the writes are in
tracking.notifications."""

import base64
import binascii
import hmac
import json

from django.conf import settings
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.utils.cache import patch_cache_control
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.middleware import HtmxDetails

from dispatch.permissions import portal_view
from dispatch.selectors import orders_visible_to
from tracking import webhooks
from tracking.links import tracking_link_lookup
from tracking.models import NotificationOptOut
from tracking.notifications import notification_opt_out, order_notifications, sms_inbound_receive


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


@require_http_methods(["GET", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    """GET asks to confirm (a mail scanner following the link opts nobody out); POST opts out.
    An expired link still works: saying no must always be possible."""
    link, _state = tracking_link_lookup(token)
    if link is None:
        raise Http404("No such tracking link.")
    order = link.order
    done = NotificationOptOut.objects.filter(order=order).exists()
    if request.method == "POST" and not done:
        notification_opt_out(order=order, via="link")
        done = True
    response = render(
        request,
        "tracking/unsubscribe.html",
        {"organization": order.organization, "reference": order.external_ref or order.pk, "done": done},
    )
    # The URL is the customer's key: no Referer leaves the page, nothing is cached.
    response.headers["Referrer-Policy"] = "no-referrer"
    patch_cache_control(response, private=True, no_store=True)
    return response


def _inbound_authorised(request: HttpRequest, secret: str) -> bool:
    """Authorization: Bearer <secret>, or basic auth with the secret as password (providers
    that only let you put credentials in the callback URL). Compared in constant time."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    given = ""
    if scheme.lower() == "bearer":
        given = value.strip()
    elif scheme.lower() == "basic":
        try:
            given = base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            given = ""
    return hmac.compare_digest(given.encode(), secret.encode())


@csrf_exempt  # a server-to-server callback, authenticated by the shared secret instead
@require_POST
def sms_inbound(request: HttpRequest) -> HttpResponse:
    """The provider forwards a customer's reply: form or JSON with `from` and `body` (or `text`).
    Answers 200 with how many orders were opted out (0 for anything that is not STOP; a
    duplicate webhook-id changes nothing). SMS_INBOUND_AUTH says how the provider proves it is
    itself: a Standard Webhooks signature (default) or the shared secret as a token."""
    secret = settings.SMS_INBOUND_SECRET
    if not secret:
        raise Http404("Inbound SMS is not configured (SMS_INBOUND_SECRET).")
    event_id = ""
    if settings.SMS_INBOUND_AUTH == "token":
        if not _inbound_authorised(request, secret):
            return JsonResponse(
                {"detail": "Wrong or missing credentials for the inbound SMS callback."}, status=403
            )
    else:  # "signature" (WH-4): signed, fresh, each event acted on once
        try:
            event_id = webhooks.inbound_verify(
                secret=secret, headers=dict(request.headers), body=request.body, now=timezone.now()
            )
        except webhooks.InboundRefused as exc:
            return JsonResponse({"detail": str(exc)}, status=403)
    data = request.POST
    if request.content_type == "application/json":
        try:
            data = json.loads(request.body or b"{}")
        except ValueError:
            return JsonResponse({"detail": "The body is not valid JSON."}, status=400)
        if not isinstance(data, dict):
            return JsonResponse({"detail": "Send a JSON object with from and body."}, status=400)
    phone = str(data.get("from") or data.get("From") or "")
    text = str(data.get("body") or data.get("text") or data.get("Body") or "")
    if not phone:
        return JsonResponse({"detail": "from: the sender's number is missing."}, status=400)
    with transaction.atomic():
        if event_id and not webhooks.inbound_callback_first(
            source="sms", event_id=event_id, now=timezone.now()
        ):
            return JsonResponse({"opted_out": 0, "duplicate": True})
        return JsonResponse({"opted_out": sms_inbound_receive(phone=phone, text=text)})


@require_GET
@portal_view
def order_messages(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Every message of an order (the outbox log); with htmx, only the panel the order page shows."""
    order = get_object_or_404(orders_visible_to(request.user), pk=pk)
    template = "tracking/order_messages.html" + ("#message-log" if request.htmx else "")
    context = {"nav": "orders", "order": order, "notifications": order_notifications(order=order)}
    return render(request, template, context)
