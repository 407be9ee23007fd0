"""The customer's requests on the tracking page (POST /t/<token>/…/, no login: the token is the
key) and the dispatcher's answers to them (portal). Thin: parse, call tracking.customer, render.

htmx gets the section it posted from (always 200, field errors inside: htmx 2 swaps no 4xx);
without JS a success redirects to /t/<token>/ and a refusal is a small page with the section
and a 400, 409 or 429.
"""

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.middleware import HtmxDetails

from dispatch.permissions import portal_view
from dispatch.selectors import orders_visible_to
from tracking import customer
from tracking.customer_forms import InstructionsForm, MessageForm, RatingForm, WindowForm
from tracking.links import tracking_link_lookup
from tracking.public_views import private as _private  # token in the URL: no referrer, no store
from tracking.views import _render_dashboard

PARTIAL = "tracking/_track_requests.html"
PAGE = "tracking/track_requests_page.html"


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def _submit(
    request: HtmxHttpRequest, token: str, name: str, form_class, call: Callable[..., Any], notice: str
) -> HttpResponse:
    now = timezone.now()
    link, state = tracking_link_lookup(token, now=now)
    if link is None:
        raise Http404("No such tracking link.")
    if state == "expired":
        return _private(render(request, PAGE, {"expired": True}, status=410))
    form = form_class(request.POST)
    status = 400
    if form.is_valid():
        try:
            call(link=link, now=now, **form.cleaned_data)
        except customer.RateLimited as exc:
            form.add_error(None, exc)
            status = 429
        except customer.RequestRefused as exc:
            form.add_error(None, exc)
            status = 409
        except ValidationError as exc:
            customer.errors_into(form, exc)
        else:
            if not request.htmx:
                return redirect("tracking:track", token=token)
            context = customer.page_context(link=link, now=now, notice=notice)
            return _private(render(request, PARTIAL, context))
    context = customer.page_context(link=link, now=now, forms={name: form})
    if request.htmx:
        return _private(render(request, PARTIAL, context))
    return _private(render(request, PAGE, {**context, "token": token}, status=status))


@require_POST
def customer_instructions(request: HtmxHttpRequest, token: str) -> HttpResponse:
    return _submit(
        request, token, "instructions", InstructionsForm,
        lambda *, link, now, text: customer.customer_instructions_set(link=link, text=text, now=now),
        "Thank you: your driver will see your instructions.",
    )  # fmt: skip


@require_POST
def customer_window(request: HtmxHttpRequest, token: str) -> HttpResponse:
    return _submit(
        request, token, "window", WindowForm,
        lambda *, link, now, slot: customer.customer_window_request(
            link=link, slot_start=slot[0], slot_end=slot[1], now=now
        ),
        "Thank you: we will let you know here whether the new time works.",
    )  # fmt: skip


@require_POST
def customer_message(request: HtmxHttpRequest, token: str) -> HttpResponse:
    return _submit(
        request, token, "message", MessageForm,
        lambda *, link, now, text: customer.customer_message(link=link, text=text, now=now),
        "Thank you: your message was sent to the team.",
    )  # fmt: skip


@require_POST
def customer_rating(request: HtmxHttpRequest, token: str) -> HttpResponse:
    return _submit(
        request, token, "rating", RatingForm,
        lambda *, link, now, rating, comment: customer.customer_rating(
            link=link, rating=rating, comment=comment, now=now
        ),
        "Thank you for your rating!",
    )  # fmt: skip


# --- The dispatcher's side ----------------------------------------------------------------------


def _order_panel(request: HtmxHttpRequest, order, *, error: str = "") -> HttpResponse:
    template = "tracking/order_requests.html" + ("#order-requests" if request.htmx else "")
    context = {
        "nav": "orders",
        "order": order,
        "requests": customer.order_customer_requests(order=order),
        "error": error,
    }
    return render(request, template, context)


@require_GET
@portal_view
@vary_on_headers("HX-Request")
def order_requests(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The customer's requests of one order; htmx loads the panel into the order page."""
    order = get_object_or_404(orders_visible_to(request.user).select_related("organization"), pk=pk)
    return _order_panel(request, order)


@require_POST
@portal_view
def customer_request_decide(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """decision=accept|decline (a window request) or read (a message or rating). `back` says which
    page asked: "dashboard" answers its #live partial, anything else the order's panel."""
    organization = request.organization
    customer_request = get_object_or_404(
        customer.customer_requests_visible_to(organization=organization).select_related(
            "order__organization"
        ),
        pk=pk,
    )
    decision = request.POST.get("decision", "")
    error = ""
    try:
        if decision in ("accept", "decline"):
            customer.window_request_decide(
                request=customer_request,
                accept=decision == "accept",
                by=request.user,
                note=request.POST.get("note", ""),
            )
        elif decision == "read":
            customer.customer_request_note(request=customer_request, by=request.user)
        else:
            raise ValidationError("Choose accept, decline or read.")
    except ValidationError as exc:
        error = " ".join(exc.messages)
    back_to_dashboard = request.POST.get("back") == "dashboard"
    if not request.htmx:
        if error:
            messages.error(request, error)
        if back_to_dashboard:
            return redirect("tracking:dashboard")
        return redirect(reverse("dispatch:order_detail", args=[customer_request.order_id]))
    if back_to_dashboard:
        failed = {"request": pk, "message": error} if error else None
        return _render_dashboard(request, organization, now=timezone.now(), partial=True, decide_error=failed)
    return _order_panel(request, customer_request.order, error=error)
