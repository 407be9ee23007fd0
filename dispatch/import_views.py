from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from dispatch.permissions import portal_view


@portal_view
def order_import(request: HttpRequest) -> HttpResponse:
    return render(request, "dispatch/order_import.html", {"nav": "orders"})
