"""Who may use which surface. Portal pages: admins and dispatchers. Drivers: /driver/ only.

REST API, who reaches what:

- session (the portal's log-in) and per-user tokens (``Authorization: Token …``) act as their
  user; organisation API keys (``Authorization: Bearer dsk_…``, dispatch.api_auth) act as an
  ``ApiKeyPrincipal`` whose membership is a *dispatcher* of the key's organisation.
- integration endpoints use :class:`IsPortalUser`: admins, dispatchers and API keys pass;
  drivers' tokens get 403. Driver endpoints use ``tracking.api.IsDriver``: API keys get 403.
  The portal's HTML pages use Django sessions only, which an API key never opens.

The pattern for a new integration viewset (e.g. tracking's ``webhooks/``)::

    from dispatch.api import OrganizationTimezoneMixin
    from dispatch.api_auth import request_actor
    from dispatch.api_base import IntegrationAPIMixin
    from dispatch.permissions import IsPortalUser
    from dispatch.selectors import organization_for

    class WebhookEndpointViewSet(IntegrationAPIMixin, OrganizationTimezoneMixin, viewsets.ModelViewSet):
        permission_classes = [IsPortalUser]

        def get_queryset(self):  # another organisation's row is then a 404
            return WebhookEndpoint.objects.filter(
                organization=organization_for(self.request.user)
            ).order_by("pk")  # lists end on a unique key (stable pages)

        def create(self, request):
            ...  # services.webhook_endpoint_create(
            #     organization=organization_for(request.user), by=request_actor(request), ...)

``IntegrationAPIMixin`` (first in the bases) brings Idempotency-Key on POST, the per-key and
per-address rate limits and the bounded pages; the schema class documents their errors.
Pass ``by=request_actor(request)`` to services, never ``request.user``: an API key is not a
user, so the actor is None (a FK to a user cannot hold it).
"""

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
