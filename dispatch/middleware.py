from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils import timezone

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
