"""The planner's pages: start a run, watch it, read and adjust its routes, publish them."""

import json
from datetime import date, datetime

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRefresh

from dispatch import planning, reports, services
from dispatch.forms import DateInput, NoColonLabels, add_service_errors
from dispatch.models import Depot, Order, Plan, Route, Shift, Stop
from dispatch.permissions import portal_view
from dispatch.selectors import plans_visible_to, route_stops_planned_vs_actual, routes_visible_to
from dispatch.timeutils import local_today

ROUTE_COLOURS = [
    "#1b9e77",
    "#d95f02",
    "#7570b3",
    "#e7298a",
    "#66a61e",
    "#e6ab02",
    "#a6761d",
    "#1f78b4",
    "#b2182b",
    "#4d4d4d",
]


class PlanForm(NoColonLabels, forms.Form):
    date = forms.DateField(widget=DateInput())
    depot = forms.ModelChoiceField(queryset=None, empty_label=None)
    objective = forms.ChoiceField(choices=Plan.Objective.choices, initial=Plan.Objective.TIME)
    time_budget_seconds = forms.IntegerField(
        label="Time budget (seconds)", min_value=1, max_value=planning.MAX_BUDGET_SECONDS, initial=10,
        help_text="Longer finds slightly better routes; 10 s is plenty for a day of a few hundred orders.",
    )  # fmt: skip
    balance = forms.BooleanField(required=False, label="Balance the work between drivers")
    drivers = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, help_text="Drivers with a shift that day."
    )
    orders = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Every open order of the day is ticked; untick any to leave it out of this run.",
    )

    def __init__(self, *args, organization, day: date, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["depot"].queryset = Depot.objects.filter(organization=organization, is_active=True)
        self.shifts = list(planning.shifts_on(organization=organization, day=day))
        self.fields["drivers"].choices = [
            (s.driver_id, f"{s.driver.name} · {s.starts_at.astimezone(organization.tzinfo):%H:%M}–"
             f"{s.ends_at.astimezone(organization.tzinfo):%H:%M} · {planning._vehicle_of(s) or 'no vehicle'}")
            for s in self.shifts
        ]  # fmt: skip
        self.fields["drivers"].initial = [s.driver_id for s in self.shifts]
        self.open_orders = list(
            planning.plannable_orders(organization=organization, day=day).select_related("depot")
        )
        self.fields["orders"].choices = [
            (o.pk, _order_label(o, organization.tzinfo)) for o in self.open_orders
        ]
        self.fields["orders"].initial = [o.pk for o in self.open_orders]


def _order_label(order: Order, tz) -> str:
    label = f"{order} · {order.address}"
    if order.window_start and order.window_end:
        label += f" · {order.window_start.astimezone(tz):%H:%M}–{order.window_end.astimezone(tz):%H:%M}"
    return label


def _day(request: HttpRequest) -> date:
    try:
        raw = request.GET.get("date") or request.POST.get("date") or request.POST.get("replan-date")
        return date.fromisoformat(raw or "")
    except ValueError:
        return local_today(request.organization.tzinfo)


@require_http_methods(["GET", "POST"])
@portal_view
@vary_on_headers("HX-Request")
def plan_list(request: HttpRequest) -> HttpResponse:
    org, day = request.organization, _day(request)
    if request.method == "POST":
        form = PlanForm(request.POST, organization=org, day=day)
        if form.is_valid():
            data = form.cleaned_data
            try:
                plan = planning.plan_create(
                    organization=org,
                    by=request.user,
                    day=data["date"],
                    depot=data["depot"],
                    driver_ids=[int(d) for d in data["drivers"]],
                    # The form lists every open order ticked: unticked ones stay out of this run.
                    order_ids=[int(o) for o in data["orders"]] if "orders-shown" in request.POST else None,
                    objective=data["objective"],
                    time_budget_seconds=data["time_budget_seconds"],
                    balance=data["balance"],
                )
            except ValidationError as exc:
                add_service_errors(form, exc)
            else:
                return redirect(plan)
    else:
        form = PlanForm(initial={"date": day}, organization=org, day=day)
    open_orders = planning.plannable_orders(organization=org, day=day).count()
    live_routes = (
        routes_visible_to(request.user).filter(date=day, status__in=planning.ACTIVE_ROUTE_STATUSES).count()
    )
    context = {
        "nav": "plans",
        "form": form,
        "day": day,
        "open_orders": open_orders,
        "live_routes": live_routes,
        "replan_form": ReplanForm(initial={"date": day}, organization=org, day=day, prefix="replan")
        if live_routes
        else None,
        "plans": plans_visible_to(request.user).defer("problem").select_related("created_by")[:30],
    }
    template = "dispatch/plan_list.html"
    if request.htmx and request.htmx.target == "plan-drivers":
        template += "#plan-drivers"
    return render(request, template, context)


def _plan_context(request: HttpRequest, plan: Plan) -> dict:
    routes = list(
        plan.routes.select_related("driver__user", "vehicle").prefetch_related("stops__order").order_by("pk")
    )
    unassigned_ids = [u["order"] for u in plan.result.get("unassigned", [])]
    orders = {o.pk: o for o in Order.objects.filter(pk__in=unassigned_ids)}
    previous = (
        plans_visible_to(request.user)
        .filter(
            date=plan.date, depot=plan.depot, status=Plan.Status.SUCCEEDED, created_at__lt=plan.created_at
        )
        .order_by("-created_at")
        .first()
    )
    shift_of = {s.driver_id: s for s in Shift.objects.filter(organization=plan.organization, date=plan.date)}
    cards = []
    for n, route in enumerate(routes):
        cards.append(
            {
                "route": route,
                "colour": ROUTE_COLOURS[n % len(ROUTE_COLOURS)],
                "shift": shift_of.get(route.driver_id),
                "timeline": planning.route_timeline(route),
            }
        )
    map_data = {
        "depot": [plan.depot.lat, plan.depot.lng],
        "routes": [
            {
                "colour": card["colour"],
                "driver": card["route"].driver.name,
                "stops": [
                    {
                        "lat": row["order"].lat,
                        "lng": row["order"].lng,
                        "n": row["stop"].sequence,
                        "label": str(row["order"]),
                    }
                    for row in card["timeline"]
                    if not row["order"].needs_location
                ],
            }
            for card in cards
        ],
    }
    return {
        "nav": "plans",
        "plan": plan,
        "cards": cards,
        "unassigned": [
            {"order": orders.get(u["order"]), "reason": u["reason"]}
            for u in plan.result.get("unassigned", [])
        ],
        "totals": plan.result.get("totals", {}),
        "previous": previous,
        "previous_totals": previous.result.get("totals", {}) if previous else {},
        "map_json": json.dumps(map_data),
        "drafts": any(r.status == Route.Status.DRAFT for r in routes),
        "cost": reports.routes_cost(organization=plan.organization, routes=plan.routes.all()),
    }


@require_GET
@portal_view
@vary_on_headers("HX-Request")
def plan_detail(request: HttpRequest, pk: int) -> HttpResponse:
    plan = get_object_or_404(
        plans_visible_to(request.user).defer("problem").select_related("organization", "created_by"), pk=pk
    )
    running = plan.status in (Plan.Status.QUEUED, Plan.Status.RUNNING)
    if request.htmx and request.htmx.target == "plan-routes":
        return render(request, "dispatch/plan_detail.html#plan-routes", _plan_context(request, plan))
    if request.htmx and request.htmx.target == "plan-progress":
        if not running:
            return HttpResponseClientRefresh()  # done: load the page with its result
        return render(request, "dispatch/plan_detail.html#plan-progress", {"plan": plan})
    context = _plan_context(request, plan) | {"running": running}
    if plan.options.get("mode") == "replan" and plan.result:
        context["eta_rows"] = [
            e | {"before": datetime.fromisoformat(e["before"]), "after": datetime.fromisoformat(e["after"])}
            for e in plan.result.get("changes", {}).get("eta", [])
        ]
        applied = plan.result.get("applied_at")
        context["applied_at"] = datetime.fromisoformat(applied) if applied else None
    return render(request, "dispatch/plan_detail.html", context)


@require_POST
@portal_view
def plan_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    plan = get_object_or_404(plans_visible_to(request.user), pk=pk)
    try:
        planning.plan_cancel(plan=plan, by=request.user)
    except services.IllegalTransition as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Plan cancelled; nothing was written.")
    if request.htmx:
        return HttpResponseClientRefresh()
    return redirect(plan)


class ReplanForm(NoColonLabels, forms.Form):
    date = forms.DateField(widget=forms.HiddenInput)
    depot = forms.ModelChoiceField(queryset=None, empty_label=None)
    time_budget_seconds = forms.IntegerField(
        label="Time budget (seconds)", min_value=1, max_value=planning.MAX_BUDGET_SECONDS, initial=10
    )
    drivers = forms.MultipleChoiceField(
        widget=forms.CheckboxSelectMultiple,
        label="Drivers still working",
        help_text="Untick a driver who dropped out: their remaining stops go to the others.",
    )

    def __init__(self, *args, organization, day: date, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["depot"].queryset = Depot.objects.filter(organization=organization, is_active=True)
        shifts = list(planning.shifts_on(organization=organization, day=day))
        self.fields["drivers"].choices = [(s.driver_id, s.driver.name) for s in shifts]
        self.fields["drivers"].initial = [s.driver_id for s in shifts]


@require_POST
@portal_view
def plan_replan(request: HttpRequest) -> HttpResponse:
    org, day = request.organization, _day(request)
    form = ReplanForm(request.POST, organization=org, day=day, prefix="replan")
    if form.is_valid():
        data = form.cleaned_data
        try:
            plan = planning.replan_create(
                organization=org,
                by=request.user,
                day=data["date"],
                depot=data["depot"],
                driver_ids=[int(d) for d in data["drivers"]],
                time_budget_seconds=data["time_budget_seconds"],
            )
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            return redirect(plan)
    else:
        messages.error(
            request, "Check the re-plan form: " + "; ".join(e for errs in form.errors.values() for e in errs)
        )
    return redirect(f"{reverse('dispatch:plan_list')}?date={day.isoformat()}")


@require_POST
@portal_view
def plan_apply(request: HttpRequest, pk: int) -> HttpResponse:
    plan = get_object_or_404(plans_visible_to(request.user), pk=pk)
    try:
        routes = planning.replan_apply(plan=plan, by=request.user)
    except (ValidationError, services.StaleEdit) as exc:
        messages.error(request, " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc))
    else:
        messages.success(request, f"Re-plan applied to {len(routes)} route{'s' if len(routes) != 1 else ''}.")
    return redirect(plan)


@require_POST
@portal_view
def plan_publish(request: HttpRequest, pk: int) -> HttpResponse:
    plan = get_object_or_404(plans_visible_to(request.user), pk=pk)
    try:
        routes = planning.plan_publish(plan=plan, by=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(
            request, f"Published {len(routes)} route{'s' if len(routes) != 1 else ''}: drivers see them now."
        )
    return redirect(plan)


# --- Manual changes --------------------------------------------------------------------------


def _back(request: HttpRequest, route: Route) -> HttpResponse:
    """After a change: the plan (or route) page again; HTMX gets just the routes section."""
    route = Route.objects.select_related("plan").get(pk=route.pk)
    if route.plan_id:
        plan = route.plan
        if request.htmx:
            context = _plan_context(request, plan) | {"partial_messages": True}
            return render(request, "dispatch/plan_detail.html#plan-routes", context)
        return redirect(f"{plan.get_absolute_url()}#route-{route.pk}")
    return redirect(route)


def _number(value: str | None) -> int:
    """A posted id; anything else matches nothing (a 404, not a 500)."""
    return int(value) if value and value.isdigit() else 0


def _stop(request: HttpRequest, pk: int) -> Stop:
    return get_object_or_404(
        Stop.objects.filter(route__in=routes_visible_to(request.user)).select_related("route"), pk=pk
    )


def _change(request: HttpRequest, route: Route, action) -> HttpResponse:
    from dispatch.planner.matrix import RoutingUnavailable

    try:
        action()
    except (ValidationError, services.IllegalTransition, services.StaleEdit, RoutingUnavailable) as exc:
        text = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        messages.error(request, text)
        response = _back(request, route)
        if isinstance(exc, services.StaleEdit):
            response.status_code = 409 if not request.htmx else 200
        return response
    return _back(request, route)


@require_POST
@portal_view
def stop_move(request: HttpRequest, pk: int) -> HttpResponse:
    stop = _stop(request, pk)
    target = stop.route
    if request.POST.get("route"):
        target = get_object_or_404(routes_visible_to(request.user), pk=_number(request.POST["route"]))
    direction = request.POST.get("direction")
    if request.POST.get("position", "").isdigit():
        position = int(request.POST["position"])
    elif direction in ("up", "down"):
        position = stop.sequence - 1 if direction == "up" else stop.sequence + 1
    elif target.pk == stop.route_id:
        messages.info(request, "Choose another driver's route to move the stop to.")
        return _back(request, stop.route)
    else:
        position = 10**6  # the end of the other route
    version, seen_route = request.POST.get("version"), request.POST.get("from_route")
    return _change(
        request,
        stop.route,
        lambda: planning.stop_move(
            stop=stop, to_route=target, position=position, by=request.user,
            expected_version=_number(version) if version else None,
            expected_route_id=_number(seen_route) if seen_route else None,
        ),
    )  # fmt: skip


@require_POST
@portal_view
def stop_remove(request: HttpRequest, pk: int) -> HttpResponse:
    stop = _stop(request, pk)
    return _change(request, stop.route, lambda: planning.stop_remove(stop=stop, by=request.user))


@require_POST
@portal_view
def route_lock(request: HttpRequest, pk: int) -> HttpResponse:
    route = get_object_or_404(routes_visible_to(request.user), pk=pk)
    locked = request.POST.get("locked") == "1"
    return _change(
        request, route, lambda: planning.route_set_locked(route=route, locked=locked, by=request.user)
    )


@require_POST
@portal_view
def route_swap(request: HttpRequest, pk: int) -> HttpResponse:
    route = get_object_or_404(routes_visible_to(request.user), pk=pk)
    other = get_object_or_404(routes_visible_to(request.user), pk=_number(request.POST.get("other")))
    return _change(
        request, route, lambda: planning.route_swap_drivers(route=route, other=other, by=request.user)
    )


@require_GET
@portal_view
def route_detail(request: HttpRequest, pk: int) -> HttpResponse:
    route = get_object_or_404(routes_visible_to(request.user), pk=pk)
    if route.plan_id and route.status == Route.Status.DRAFT:
        # A draft is edited on its plan's page; once published, the route has its own story.
        return redirect(f"{reverse('dispatch:plan_detail', args=[route.plan_id])}#route-{route.pk}")
    stops = list(route_stops_planned_vs_actual(route=route))
    located = [s for s in stops if not s.order.needs_location]
    map_data = {
        "depot": [route.depot.lat, route.depot.lng],
        "planned": [[s.order.lat, s.order.lng] for s in located],
        "stops": [
            {"lat": s.order.lat, "lng": s.order.lng, "n": s.sequence, "status": s.status} for s in located
        ],
        "travelled": route.travelled_path,
    }
    return render(
        request,
        "dispatch/route_detail.html",
        {
            "nav": "plans",
            "route": route,
            "stops": stops,
            "timeline": planning.route_timeline(route),
            "cost": reports.routes_cost(
                organization=request.organization, routes=Route.objects.filter(pk=route.pk)
            ),
            "actual_s": (route.completed_at - route.started_at).total_seconds()
            if route.started_at and route.completed_at
            else None,
            "planned_s": route.planned_duration_s
            or (
                (route.planned_end - route.planned_start).total_seconds()
                if route.planned_start and route.planned_end
                else None
            ),
            "map_json": json.dumps(map_data),
        },
    )
