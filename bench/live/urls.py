"""The app's URLs plus the floors every live figure is compared with."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.urls import path

from config.urls import urlpatterns as app_urlpatterns
from dispatch.selectors import membership_for


def bare(request: HttpRequest) -> HttpResponse:
    # Through the full middleware stack but no database, template or DRF: what Django itself costs.
    return HttpResponse(b"ok", content_type="text/plain")


@login_required
def signed_in(request: HttpRequest) -> HttpResponse:
    # A dispatcher's request that does nothing: the session, the user and the membership (read by
    # dispatch's timezone middleware) are what any portal page costs before its own work.
    return HttpResponse(f"ok {membership_for(request.user).organization_id}", content_type="text/plain")


urlpatterns = [path("bench/bare/", bare), path("bench/signed-in/", signed_in), *app_urlpatterns]
