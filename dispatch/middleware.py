from collections.abc import Callable

from django.contrib import auth
from django.contrib.auth import SESSION_KEY
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.functional import SimpleLazyObject

from dispatch.auth_backends import offering_member_row
from dispatch.selectors import membership_for


class OrganizationTimezoneMiddleware:
    """Read and show times in the signed-in user's organisation's zone (stored times are UTC)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        membership = membership_for(request.user)
        if membership is not None:
            timezone.activate(membership.organization.tzinfo)
        else:
            timezone.deactivate()
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()


def _user_with_offered_row(request: HttpRequest):
    """django.contrib.auth.middleware.get_user, with the member row read with the session
    offered to MemberBackend while Django looks the user up (dispatch.sessions)."""
    if not hasattr(request, "_cached_user"):
        request.session.get(SESSION_KEY)  # the session's read, which fetched its user's row too
        with offering_member_row(getattr(request.session, "member_row", None)):
            request._cached_user = auth.get_user(request)
    return request._cached_user


class MemberAuthenticationMiddleware(AuthenticationMiddleware):
    """Django's AuthenticationMiddleware whose request.user is found with the row that was read
    with the session: one query for a signed-in request's session and user. Django's own
    lookup still decides (the backend, the session's password hash, is_active)."""

    def process_request(self, request: HttpRequest) -> None:
        super().process_request(request)
        request.user = SimpleLazyObject(lambda: _user_with_offered_row(request))
