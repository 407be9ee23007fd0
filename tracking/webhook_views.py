"""The portal's Webhooks pages: endpoints, their secrets, test events and delivery logs.
Thin: the writes are tracking.webhooks' services. Another organisation's endpoint or delivery
is a 404."""

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.middleware import HtmxDetails

from dispatch.models import Membership
from dispatch.permissions import portal_view
from tracking import webhooks
from tracking.models import TrackingSettings


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails
    organization: object
    membership: Membership


class WebhookEndpointForm(forms.Form):  # a forms.py of its own would hold only this
    url = forms.URLField(
        assume_scheme="https",
        max_length=2000,
        label="URL",
        help_text="Where Doorstep POSTs the events (https://…).",
    )
    description = forms.CharField(max_length=200, required=False, help_text="e.g. “Shop ERP”.")
    events = forms.MultipleChoiceField(
        choices=[(name, name) for name in webhooks.EVENT_TYPES if name != "webhook.test"],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every event.",
    )
    active = forms.BooleanField(required=False, initial=True)


def _apply_errors(form: forms.Form, exc: ValidationError) -> None:
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            for error in errors:
                form.add_error(field if field in form.fields else None, error)
    else:
        for error in exc.messages:
            form.add_error(None, error)


def _endpoint(request: HttpRequest, pk: int):
    return get_object_or_404(webhooks.endpoints_visible_to(organization=request.organization), pk=pk)


@require_http_methods(["GET", "POST"])
@portal_view
def webhook_list(request: HtmxHttpRequest) -> HttpResponse:
    """Every endpoint of the organisation; POST adds one."""
    form = WebhookEndpointForm(request.POST or None, initial={"active": True})
    if request.method == "POST" and form.is_valid():
        try:
            endpoint = webhooks.webhook_endpoint_create(
                organization=request.organization, by=request.user, **form.cleaned_data
            )
        except ValidationError as exc:
            _apply_errors(form, exc)
        else:
            messages.success(
                request, f"Added {endpoint.url}. Copy its secret to your receiver, then send a test event."
            )
            return redirect("tracking:webhook_detail", pk=endpoint.pk)
    options = TrackingSettings.objects.filter(organization=request.organization).first()
    context = {
        "nav": "webhooks",
        "endpoints": webhooks.endpoints_visible_to(organization=request.organization).order_by("pk"),
        "form": form,
        "allow_private": bool(options and options.webhooks_allow_private),
        "is_admin": request.membership.role == Membership.Role.ADMIN,
    }
    return render(request, "tracking/webhook_list.html", context)


@require_http_methods(["GET", "POST"])
@portal_view
def webhook_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """One endpoint: its secret, settings (POST saves them) and delivery log (the htmx partial
    refreshes alone)."""
    endpoint = _endpoint(request, pk)
    initial = {
        "url": endpoint.url,
        "description": endpoint.description,
        "events": endpoint.events,
        "active": endpoint.active,
    }
    form = WebhookEndpointForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            webhooks.webhook_endpoint_update(endpoint=endpoint, **form.cleaned_data)
        except ValidationError as exc:
            _apply_errors(form, exc)
            endpoint.refresh_from_db()
        else:
            messages.success(request, "Saved.")
            return redirect("tracking:webhook_detail", pk=endpoint.pk)
    template = "tracking/webhook_detail.html" + ("#delivery-log" if request.htmx else "")
    context = {
        "nav": "webhooks",
        "endpoint": endpoint,
        "form": form,
        "deliveries": webhooks.endpoint_deliveries(endpoint=endpoint),
    }
    return render(request, template, context)


@require_POST
@portal_view
def webhook_delete(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    endpoint = _endpoint(request, pk)
    webhooks.webhook_endpoint_delete(endpoint=endpoint)
    messages.success(request, f"Deleted {endpoint.url} and its delivery log.")
    return redirect("tracking:webhook_list")


@require_POST
@portal_view
def webhook_rotate(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    endpoint = webhooks.webhook_endpoint_rotate(endpoint=_endpoint(request, pk))
    until = f"{endpoint.previous_secret_until:%d %b %Y %H:%M} UTC"
    messages.success(request, f"New secret made. The previous one keeps signing too until {until}.")
    return redirect("tracking:webhook_detail", pk=endpoint.pk)


@require_POST
@portal_view
def webhook_test(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    endpoint = _endpoint(request, pk)
    try:
        webhooks.webhook_test_send(endpoint=endpoint)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, "Test event queued: it shows in the delivery log below within seconds.")
    return redirect("tracking:webhook_detail", pk=endpoint.pk)


@require_POST
@portal_view
def webhook_resend(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Send one delivery again (same body, same webhook-id)."""
    delivery = get_object_or_404(
        webhooks.deliveries_visible_to(organization=request.organization).select_related("endpoint"), pk=pk
    )
    try:
        webhooks.webhook_delivery_resend(delivery=delivery)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"Delivery {delivery.webhook_id} queued again.")
    return redirect("tracking:webhook_detail", pk=delivery.endpoint_id)


@require_GET
@portal_view
def webhook_delivery(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """One delivery: the body as signed, the last answer, every attempt."""
    delivery = get_object_or_404(
        webhooks.deliveries_visible_to(organization=request.organization).select_related("endpoint"), pk=pk
    )
    return render(request, "tracking/webhook_delivery.html", {"nav": "webhooks", "delivery": delivery})


@require_POST
@portal_view
def webhook_settings(request: HtmxHttpRequest) -> HttpResponse:
    """Admins only: allow endpoints on private addresses (WH-3)."""
    if request.membership.role != Membership.Role.ADMIN:
        raise PermissionDenied("Only an admin of the organisation may allow private addresses.")
    allow = request.POST.get("webhooks_allow_private") == "on"
    TrackingSettings.objects.update_or_create(
        organization=request.organization, defaults={"webhooks_allow_private": allow}
    )
    messages.success(
        request,
        "Webhooks may now call private and loopback addresses."
        if allow
        else "Private addresses are refused again.",
    )
    return redirect("tracking:webhook_list")
