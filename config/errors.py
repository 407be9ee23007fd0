"""Error pages that know the REST API: under /api/ a 404 is JSON like every other API answer."""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    # An address no API route matches (e.g. /api/v1/orders/abc/): integrators parse JSON.
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found: no such endpoint or object."}, status=404)
    return page_not_found(request, exception)
