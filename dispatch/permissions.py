"""Who may use which surface. Portal pages: admins and dispatchers. Drivers: /driver/ only."""

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from rest_framework.permissions import BasePermission

from dispatch.models import Membership
from dispatch.selectors import membership_for


def portal_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Login required; then 403 unless the user is an admin or dispatcher of an organisation.

    Sets request.membership and request.organization for the view.
    """

    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        membership = membership_for(request.user)
        if membership is None or not membership.uses_portal:
            raise PermissionDenied("The dispatcher portal is for admins and dispatchers.")
        request.membership = membership
        request.organization = membership.organization
        return view(request, *args, **kwargs)

    return wrapper


def driver_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Login required; then 403 unless the user is a driver of an organisation."""

    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        membership = membership_for(request.user)
        if membership is None or membership.role != Membership.Role.DRIVER:
            raise PermissionDenied("The driver app is for drivers.")
        request.membership = membership
        request.organization = membership.organization
        return view(request, *args, **kwargs)

    return wrapper


class IsPortalUser(BasePermission):
    message = "This endpoint is for admins and dispatchers of an organisation."

    def has_permission(self, request, view) -> bool:
        membership = membership_for(request.user)
        return membership is not None and membership.uses_portal
