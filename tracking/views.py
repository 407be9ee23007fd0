from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET

from dispatch.models import Membership, Order, Route
from dispatch.permissions import driver_view
from dispatch.selectors import membership_for, order_status_counts, routes_visible_to
from dispatch.timeutils import local_today


@require_GET
@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """The dispatcher's start page. Drivers land on their own app instead."""
    membership = membership_for(request.user)
    if membership is not None and membership.role == Membership.Role.DRIVER:
        return redirect("tracking:driver_home")
    if membership is None or not membership.uses_portal:
        raise PermissionDenied("Your account is not a member of any organisation.")
    today = local_today(membership.organization.tzinfo)
    counts = order_status_counts(user=request.user, day=today)
    routes = routes_visible_to(request.user).filter(date=today)
    return render(
        request,
        "tracking/dashboard.html",
        {
            "nav": "dashboard",
            "today": today,
            "counts": counts,
            "total": sum(counts.values()),
            "status_choices": Order.Status.choices,
            "routes": routes,
        },
    )


@require_GET
@driver_view
def driver_home(request: HttpRequest) -> HttpResponse:
    today = local_today(request.organization.tzinfo)
    routes = (
        Route.objects.filter(
            driver__user=request.user,
            date=today,
            status__in=[Route.Status.PUBLISHED, Route.Status.IN_PROGRESS],
        )
        .select_related("depot", "vehicle")
        .prefetch_related("stops__order")
    )
    return render(request, "tracking/driver_home.html", {"today": today, "routes": routes})
