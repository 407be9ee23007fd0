"""The app's URLs plus /bench/bare/, the floor every live figure is divided by."""

from django.http import HttpRequest, HttpResponse
from django.urls import path

from config.urls import urlpatterns as app_urlpatterns


def bare(request: HttpRequest) -> HttpResponse:
    # Through the full middleware stack but no database, template or DRF: what Django itself costs.
    return HttpResponse(b"ok", content_type="text/plain")


urlpatterns = [path("bench/bare/", bare), *app_urlpatterns]
