"""The dispatcher portal's pages for the core domain. Thin: parse, call a selector or service, render."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.middleware import HtmxDetails

from dispatch import services
from dispatch.forms import (
    ContactForm,
    DepotForm,
    DriverForm,
    OrderCancelForm,
    OrderFilterForm,
    OrderForm,
    ShiftForm,
    VehicleForm,
    add_service_errors,
)
from dispatch.permissions import portal_view
from dispatch.selectors import (
    contact_list as select_contacts,
)
from dispatch.selectors import (
    contacts_visible_to,
    depots_visible_to,
    drivers_visible_to,
    orders_visible_to,
    shifts_visible_to,
    vehicles_visible_to,
)
from dispatch.selectors import (
    driver_list as select_drivers,
)
from dispatch.selectors import (
    order_detail as select_order_detail,
)
from dispatch.selectors import (
    order_list as select_orders,
)
from dispatch.timeutils import local_today

PAGE_SIZE = 50


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def _page(request: HttpRequest, rows, size: int = PAGE_SIZE):
    return Paginator(rows, size).get_page(request.GET.get("page"))


def _querystring_without_page(request: HttpRequest) -> str:
    params = request.GET.copy()
    params.pop("page", None)
    return params.urlencode()


# --- Orders ---------------------------------------------------------------------------------


@require_GET
@portal_view
@vary_on_headers("HX-Request")
def order_list(request: HtmxHttpRequest) -> HttpResponse:
    form = OrderFilterForm(request.GET or None, organization=request.organization)
    filters = form.cleaned_data if form.is_valid() else {}
    orders = select_orders(
        user=request.user,
        service_date=filters.get("date"),
        status=filters.get("status", ""),
        depot=filters.get("depot"),
        text=filters.get("q", ""),
    )
    template = "dispatch/order_list.html"
    if request.htmx and not request.htmx.boosted:
        template += "#order-table"
    return render(
        request,
        template,
        {
            "nav": "orders",
            "form": form,
            "page": _page(request, orders),
            "query": _querystring_without_page(request),
        },
    )


@require_http_methods(["GET", "POST"])
@portal_view
def order_create(request: HttpRequest) -> HttpResponse:
    org = request.organization
    if request.method == "POST":
        form = OrderForm(request.POST, organization=org)
        if form.is_valid():
            try:
                order = services.order_create(organization=org, by=request.user, **form.service_fields())
            except ValidationError as exc:
                add_service_errors(form, exc)
            else:
                messages.success(request, f"Order {order} created.")
                return redirect(order)
    else:
        initial = {"service_date": local_today(org.tzinfo)}
        contact_id = request.GET.get("contact")
        if contact_id and contact_id.isdigit():
            contact = get_object_or_404(contacts_visible_to(request.user), pk=contact_id)
            initial = OrderForm.initial_from_contact(contact, initial["service_date"])
        form = OrderForm(initial=initial, organization=org)
    return render(request, "dispatch/order_form.html", _order_form_context(request, form, None))


def _order_form_context(request: HttpRequest, form: OrderForm, order) -> dict:
    # The map opens on the organisation's first depot when the order has no point yet.
    depot = depots_visible_to(request.user).filter(is_active=True).order_by("pk").first()
    return {
        "nav": "orders",
        "form": form,
        "order": order,
        "depot_lat": depot.lat if depot else None,
        "depot_lng": depot.lng if depot else None,
    }


@require_GET
@portal_view
def order_detail(request: HttpRequest, pk: int) -> HttpResponse:
    order = select_order_detail(user=request.user, pk=pk)
    if order is None:
        return render(request, "404.html", status=404)
    return render(
        request,
        "dispatch/order_detail.html",
        {"nav": "orders", "order": order, "cancel_form": OrderCancelForm()},
    )


@require_http_methods(["GET", "POST"])
@portal_view
def order_edit(request: HttpRequest, pk: int) -> HttpResponse:
    order = get_object_or_404(orders_visible_to(request.user), pk=pk)
    org = request.organization
    status = 200
    if request.method == "POST":
        form = OrderForm(request.POST, organization=org)
        if form.is_valid():
            try:
                order = services.order_update(
                    order=order,
                    by=request.user,
                    expected_version=form.cleaned_data.get("version"),
                    **form.service_fields(),
                )
            except ValidationError as exc:
                add_service_errors(form, exc)
            except services.StaleEdit as exc:
                form.add_error(None, str(exc))
                status = 409
            else:
                messages.success(request, f"Order {order} saved.")
                return redirect(order)
    else:
        form = OrderForm(initial=OrderForm.initial_from_order(order), organization=org)
    return render(
        request,
        "dispatch/order_form.html",
        _order_form_context(request, form, order),
        status=status,
    )


@require_POST
@portal_view
def order_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    order = get_object_or_404(orders_visible_to(request.user), pk=pk)
    form = OrderCancelForm(request.POST)
    reason = form.cleaned_data["reason"] if form.is_valid() else ""
    try:
        order = services.order_cancel(order=order, by=request.user, reason=reason)
    except services.IllegalTransition as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Order {order} cancelled.")
    return redirect(order)


# --- Contacts -------------------------------------------------------------------------------


@require_GET
@portal_view
@vary_on_headers("HX-Request")
def contact_list(request: HtmxHttpRequest) -> HttpResponse:
    text = request.GET.get("q", "")[:100]
    template = "dispatch/contact_list.html"
    if request.htmx and not request.htmx.boosted:
        template += "#contact-table"
    return render(
        request,
        template,
        {
            "nav": "contacts",
            "q": text,
            "page": _page(request, select_contacts(user=request.user, text=text)),
            "query": _querystring_without_page(request),
        },
    )


def _contact_form_page(request: HttpRequest, contact=None) -> HttpResponse:
    form = ContactForm(request.POST or None, instance=contact)
    if request.method == "POST" and form.is_valid():
        fields = {name: form.cleaned_data[name] for name in ContactForm.Meta.fields}
        try:
            if contact is None:
                contact = services.contact_create(organization=request.organization, **fields)
            else:
                contact = services.contact_update(contact=contact, **fields)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            messages.success(request, f"Saved {contact.name}.")
            return redirect("dispatch:contact_list")
    return render(
        request, "dispatch/contact_form.html", {"nav": "contacts", "form": form, "contact": contact}
    )


@require_http_methods(["GET", "POST"])
@portal_view
def contact_create(request: HttpRequest) -> HttpResponse:
    return _contact_form_page(request)


@require_http_methods(["GET", "POST"])
@portal_view
def contact_edit(request: HttpRequest, pk: int) -> HttpResponse:
    return _contact_form_page(request, get_object_or_404(contacts_visible_to(request.user), pk=pk))


# --- Drivers and shifts ---------------------------------------------------------------------


@require_GET
@portal_view
def driver_list(request: HttpRequest) -> HttpResponse:
    today = local_today(request.organization.tzinfo)
    return render(
        request,
        "dispatch/driver_list.html",
        {"nav": "drivers", "today": today, "drivers": select_drivers(user=request.user, day=today)},
    )


@require_http_methods(["GET", "POST"])
@portal_view
def driver_create(request: HttpRequest) -> HttpResponse:
    form = DriverForm(request.POST or None, organization=request.organization)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            driver = services.driver_create(
                organization=request.organization,
                username=data["username"],
                first_name=data["first_name"],
                last_name=data["last_name"],
                email=data["email"],
                password=data["password"],
                **form.driver_fields(),
            )
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            messages.success(request, f"Driver {driver} added. Add their shifts below.")
            return redirect(driver)
    return render(request, "dispatch/driver_form.html", {"nav": "drivers", "form": form, "driver": None})


@require_http_methods(["GET", "POST"])
@portal_view
def driver_edit(request: HttpRequest, pk: int) -> HttpResponse:
    driver = get_object_or_404(drivers_visible_to(request.user), pk=pk)
    org = request.organization
    if request.method == "POST":
        form = DriverForm(
            request.POST,
            organization=org,
            editing=True,
            initial=DriverForm.initial_from_driver(driver),
        )
        if form.is_valid():
            data = form.cleaned_data
            try:
                driver = services.driver_update(
                    driver=driver,
                    first_name=data["first_name"],
                    last_name=data["last_name"],
                    password=data["password"] or None,
                    email=data["email"],
                    **form.driver_fields(),
                )
            except ValidationError as exc:
                add_service_errors(form, exc)
            else:
                messages.success(request, f"Saved {driver}.")
                return redirect(driver)
    else:
        form = DriverForm(initial=DriverForm.initial_from_driver(driver), organization=org, editing=True)
    shifts = driver.shifts.filter(date__gte=local_today(org.tzinfo)).select_related("vehicle")[:60]
    return render(
        request,
        "dispatch/driver_form.html",
        {
            "nav": "drivers",
            "form": form,
            "driver": driver,
            "shifts": shifts,
            "shift_form": ShiftForm(organization=org, initial={"date": local_today(org.tzinfo)}),
        },
    )


@require_http_methods(["GET", "POST"])
@portal_view
def shift_create(request: HttpRequest, pk: int) -> HttpResponse:
    driver = get_object_or_404(drivers_visible_to(request.user), pk=pk)
    form = ShiftForm(request.POST or None, organization=request.organization)
    if request.method == "POST" and form.is_valid():
        try:
            services.shift_create(driver=driver, **form.shift_fields())
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            messages.success(request, f"Shift added for {driver} on {form.cleaned_data['date']:%d %b %Y}.")
            return redirect(driver)
    return render(
        request,
        "dispatch/shift_form.html",
        {"nav": "drivers", "form": form, "driver": driver, "shift": None},
    )


@require_http_methods(["GET", "POST"])
@portal_view
def shift_edit(request: HttpRequest, pk: int) -> HttpResponse:
    shift = get_object_or_404(shifts_visible_to(request.user).select_related("driver__user"), pk=pk)
    if request.method == "POST":
        form = ShiftForm(request.POST, organization=request.organization)
        if form.is_valid():
            try:
                services.shift_update(shift=shift, **form.shift_fields())
            except ValidationError as exc:
                add_service_errors(form, exc)
            else:
                messages.success(request, "Shift saved.")
                return redirect(shift.driver)
    else:
        form = ShiftForm(initial=ShiftForm.initial_from_shift(shift), organization=request.organization)
    return render(
        request,
        "dispatch/shift_form.html",
        {"nav": "drivers", "form": form, "driver": shift.driver, "shift": shift},
    )


@require_POST
@portal_view
def shift_delete(request: HttpRequest, pk: int) -> HttpResponse:
    shift = get_object_or_404(shifts_visible_to(request.user).select_related("driver"), pk=pk)
    driver = shift.driver
    services.shift_delete(shift=shift)
    messages.success(request, "Shift removed.")
    return redirect(driver)


# --- Vehicles and depots --------------------------------------------------------------------


@require_GET
@portal_view
def vehicle_list(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "dispatch/vehicle_list.html",
        {"nav": "vehicles", "vehicles": vehicles_visible_to(request.user)},
    )


def _vehicle_form_page(request: HttpRequest, vehicle=None) -> HttpResponse:
    form = VehicleForm(request.POST or None, instance=vehicle, organization=request.organization)
    if request.method == "POST" and form.is_valid():
        fields = {name: form.cleaned_data[name] for name in VehicleForm.Meta.fields}
        try:
            if vehicle is None:
                vehicle = services.vehicle_create(organization=request.organization, **fields)
            else:
                vehicle = services.vehicle_update(vehicle=vehicle, **fields)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            messages.success(request, f"Saved {vehicle}.")
            return redirect("dispatch:vehicle_list")
    return render(
        request, "dispatch/vehicle_form.html", {"nav": "vehicles", "form": form, "vehicle": vehicle}
    )


@require_http_methods(["GET", "POST"])
@portal_view
def vehicle_create(request: HttpRequest) -> HttpResponse:
    return _vehicle_form_page(request)


@require_http_methods(["GET", "POST"])
@portal_view
def vehicle_edit(request: HttpRequest, pk: int) -> HttpResponse:
    return _vehicle_form_page(request, get_object_or_404(vehicles_visible_to(request.user), pk=pk))


@require_GET
@portal_view
def depot_list(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "dispatch/depot_list.html",
        {"nav": "vehicles", "depots": depots_visible_to(request.user)},
    )


def _depot_form_page(request: HttpRequest, depot=None) -> HttpResponse:
    form = DepotForm(request.POST or None, instance=depot)
    if request.method == "POST" and form.is_valid():
        fields = {name: form.cleaned_data[name] for name in DepotForm.Meta.fields}
        try:
            if depot is None:
                depot = services.depot_create(organization=request.organization, **fields)
            else:
                depot = services.depot_update(depot=depot, **fields)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            messages.success(request, f"Saved {depot}.")
            return redirect("dispatch:depot_list")
    return render(request, "dispatch/depot_form.html", {"nav": "vehicles", "form": form, "depot": depot})


@require_http_methods(["GET", "POST"])
@portal_view
def depot_create(request: HttpRequest) -> HttpResponse:
    return _depot_form_page(request)


@require_http_methods(["GET", "POST"])
@portal_view
def depot_edit(request: HttpRequest, pk: int) -> HttpResponse:
    return _depot_form_page(request, get_object_or_404(depots_visible_to(request.user), pk=pk))
