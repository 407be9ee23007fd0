"""The portal's API key page: admins create (the key is shown once) and revoke; dispatchers see."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from dispatch import services
from dispatch.models import Membership
from dispatch.permissions import portal_view
from dispatch.selectors import api_keys_visible_to


def _require_admin(request: HttpRequest) -> None:
    if request.membership.role != Membership.Role.ADMIN:
        raise PermissionDenied("Only your organisation's admins create and revoke API keys.")


@require_http_methods(["GET", "POST"])
@portal_view
def api_key_list(request: HttpRequest) -> HttpResponse:
    """GET: the keys with their last use. POST name=…: a new key, whose text shows only now."""
    new_key, error, name = "", "", ""
    if request.method == "POST":
        _require_admin(request)
        name = request.POST.get("name", "")
        try:
            _key, new_key = services.api_key_create(
                organization=request.organization, name=name, by=request.user
            )
            name = ""
        except ValidationError as exc:
            error = " ".join(exc.messages)
    response = render(
        request,
        "dispatch/api_key_list.html",
        {
            "nav": "api_keys",
            "keys": api_keys_visible_to(request.user),
            "is_admin": request.membership.role == Membership.Role.ADMIN,
            "new_key": new_key,
            "error": error,
            "name": name,
        },
        status=400 if error else 200,
    )
    if new_key:
        response["Cache-Control"] = "no-store"  # the key's only showing must not be cached
    return response


@require_POST
@portal_view
def api_key_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    key = get_object_or_404(api_keys_visible_to(request.user), pk=pk)
    _require_admin(request)
    services.api_key_revoke(api_key=key)
    messages.success(request, f"The key “{key.name}” was revoked: it no longer works.")
    return redirect("dispatch:api_key_list")
