from html.parser import HTMLParser

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from dispatch.models import Order, Route, Stop, StopEvent
from dispatch.services import order_cancel, route_create, route_transition, stop_transition
from tests.factories import (
    ContactFactory,
    DepotFactory,
    DriverFactory,
    MembershipFactory,
    OrderFactory,
    OrganizationFactory,
    PlanFactory,
    RouteFactory,
    ShiftFactory,
    StopEventFactory,
    StopFactory,
    VehicleFactory,
)

pytestmark = pytest.mark.django_db

# One row per registered model, with a value that only shows if the row is listed.
CHANGELIST_ROWS = {
    "organization": (OrganizationFactory, {"name": "Harbour Couriers"}, "Harbour Couriers"),
    "membership": (MembershipFactory, {"user__username": "memberzed"}, "memberzed"),
    "depot": (DepotFactory, {"name": "Spandau depot"}, "Spandau depot"),
    "vehicle": (VehicleFactory, {"registration": "B-DS-4711"}, "B-DS-4711"),
    "driver": (DriverFactory, {"phone": "+4915199887766"}, "+4915199887766"),
    "shift": (ShiftFactory, {"driver__user__first_name": "Shiftina"}, "Shiftina"),
    "contact": (ContactFactory, {"company": "Acme Widgets GmbH"}, "Acme Widgets GmbH"),
    "order": (OrderFactory, {"recipient_name": "Grace Hopper"}, "Grace Hopper"),
    "route": (RouteFactory, {"depot__name": "Route depot"}, "Route depot"),
    "stop": (StopFactory, {"order__external_ref": "STOP-REF-9"}, "STOP-REF-9"),
    "stopevent": (StopEventFactory, {"reason": "dog at the gate"}, "dog at the gate"),
    "plan": (PlanFactory, {"depot__name": "Planning depot"}, "Planning depot"),
}


def _changelist(model_name: str) -> str:
    return reverse(f"admin:dispatch_{model_name}_changelist")


class _FormValues(HTMLParser):
    """What a browser would submit from the admin's change form (inputs, selects, textareas)."""

    def __init__(self):
        super().__init__()
        self.data: dict[str, str] = {}
        self._select = self._textarea = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        name = attrs.get("name")
        if tag == "input" and name and attrs.get("type") not in ("submit", "button", "file"):
            if attrs.get("type") in ("checkbox", "radio") and "checked" not in attrs:
                return
            self.data[name] = attrs.get("value") or ""
        elif tag == "select" and name:
            self._select = name
            self.data.setdefault(name, "")
        elif tag == "option" and self._select and "selected" in attrs:
            self.data[self._select] = attrs.get("value") or ""
        elif tag == "textarea" and name:
            self._textarea = name
            self.data[name] = ""

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data):
        if self._textarea:
            self.data[self._textarea] += data.lstrip("\n")


def _form_data(html: str) -> dict[str, str]:
    parser = _FormValues()
    parser.feed(html)
    return parser.data


def test_every_dispatch_model_is_registered():
    from dispatch.models import UserSession

    dispatch_models = set(apps.get_app_config("dispatch").get_models())
    # Sessions are not: a session's key is its login cookie (users are signed out per user).
    assert dispatch_models - set(admin.site._registry) == {UserSession}


@pytest.mark.parametrize("model_name", sorted(CHANGELIST_ROWS))
def test_changelist_lists_the_row(admin_client, model_name):
    factory, fields, shown = CHANGELIST_ROWS[model_name]
    factory(**fields)
    response = admin_client.get(_changelist(model_name))
    assert response.status_code == 200
    assert shown in response.content.decode()


@pytest.mark.parametrize("model_name", sorted(CHANGELIST_ROWS))
def test_changelist_queries_do_not_grow_with_rows(admin_client, model_name):
    factory, fields, _ = CHANGELIST_ROWS[model_name]
    factory(**fields)
    admin_client.get(_changelist(model_name))  # warm the session and content-type caches
    with CaptureQueriesContext(connection) as one_row:
        admin_client.get(_changelist(model_name))
    factory.create_batch(3)
    with CaptureQueriesContext(connection) as four_rows:
        admin_client.get(_changelist(model_name))
    assert len(four_rows) == len(one_row)


def test_an_admin_signs_a_user_out_everywhere_and_sessions_have_no_page(
    admin_client, dispatcher_client, dispatcher, admin_user
):
    from dispatch.models import UserSession

    assert admin_client.get("/admin/dispatch/usersession/").status_code == 404  # keys are cookies
    response = admin_client.post(
        "/admin/auth/user/", {"action": "sign_out_everywhere", "_selected_action": [dispatcher.pk]}
    )
    assert response.status_code == 302
    assert "Ended 1 session." in [m.message for m in get_messages(response.wsgi_request)]
    assert dispatcher_client.get("/").status_code == 302  # signed out, with Redis too
    assert not UserSession.objects.filter(user=dispatcher).exists()
    assert UserSession.objects.filter(user=admin_user).exists()  # only the selected users


def test_order_changelist_shows_the_window_on_the_organisations_clock(admin_client, org):
    # The factory's window is 09:00–12:00 in Europe/Berlin, i.e. 08:00–11:00 UTC in November.
    OrderFactory(organization=org, external_ref="WIN-1")
    html = admin_client.get(_changelist("order")).content.decode()
    assert "09:00–12:00 CET" in html


def test_order_changelist_search_finds_by_external_ref(admin_client):
    OrderFactory(external_ref="SHOP-LOOKUP-42", recipient_name="Wanted Person")
    OrderFactory(external_ref="SHOP-OTHER-7", recipient_name="Someone Else")
    html = admin_client.get(_changelist("order"), {"q": "LOOKUP-42"}).content.decode()
    assert "Wanted Person" in html and "Someone Else" not in html


def test_order_changelist_filters_orders_that_need_a_location(admin_client):
    OrderFactory(recipient_name="Unplaced Person", lat=None, lng=None)
    OrderFactory(recipient_name="Placed Person")
    html = admin_client.get(_changelist("order"), {"needs_location": "yes"}).content.decode()
    assert "Unplaced Person" in html and "Placed Person" not in html


def test_route_change_page_lists_its_stops_in_sequence(admin_client):
    route = RouteFactory()
    StopFactory(route=route, sequence=2, order__external_ref="SECOND-STOP")
    StopFactory(route=route, sequence=1, order__external_ref="FIRST-STOP")
    StopFactory(order__external_ref="ELSEWHERE-STOP")
    html = admin_client.get(reverse("admin:dispatch_route_change", args=[route.pk])).content.decode()
    assert html.index("FIRST-STOP") < html.index("SECOND-STOP")
    assert "ELSEWHERE-STOP" not in html


@pytest.mark.parametrize(
    ("model_name", "factory"),
    [("order", OrderFactory), ("route", RouteFactory), ("stop", StopFactory)],
)
def test_status_is_not_editable_in_admin(admin_client, model_name, factory):
    obj = factory()
    url = reverse(f"admin:dispatch_{model_name}_change", args=[obj.pk])
    html = admin_client.get(url).content.decode()
    assert 'name="status"' not in html
    assert obj.get_status_display() in html


def test_status_posted_to_the_order_form_is_ignored(admin_client):
    order = OrderFactory()
    url = reverse("admin:dispatch_order_change", args=[order.pk])
    data = _form_data(admin_client.get(url).content.decode())
    response = admin_client.post(url, {**data, "status": Order.Status.DELIVERED})
    assert response.status_code == 302
    order.refresh_from_db()
    assert order.status == Order.Status.NEW


def test_order_edit_in_admin_goes_through_the_services(admin_client, admin_user):
    order = OrderFactory(recipient_name="Old Name")
    url = reverse("admin:dispatch_order_change", args=[order.pk])
    data = _form_data(admin_client.get(url).content.decode())
    response = admin_client.post(url, {**data, "recipient_name": "New Name"})
    assert response.status_code == 302
    order.refresh_from_db()
    assert (order.recipient_name, order.version) == ("New Name", 2)
    event = order.events.get()
    assert (event.kind, event.actor, event.note) == (
        StopEvent.Kind.UPDATED,
        admin_user,
        "Changed: recipient_name",
    )


def test_order_added_in_admin_has_its_created_event(admin_client, admin_user, org):
    url = reverse("admin:dispatch_order_add")
    data = _form_data(admin_client.get(url, {"organization": org.pk}).content.decode())
    data.update(
        recipient_name="Added Person",
        address="Skalitzer Straße 1, Berlin",
        service_date="2026-11-24",
        external_ref="ADMIN-NEW-1",
    )
    response = admin_client.post(url, data)
    assert response.status_code == 302
    order = Order.objects.get(external_ref="ADMIN-NEW-1")
    assert (order.organization, order.recipient_name) == (org, "Added Person")
    assert [(e.kind, e.actor) for e in order.events.all()] == [(StopEvent.Kind.CREATED, admin_user)]


def test_order_form_reads_times_on_the_organisations_clock(admin_client, org):
    order = OrderFactory(organization=org)
    url = reverse("admin:dispatch_order_change", args=[order.pk])
    data = _form_data(admin_client.get(url).content.decode())
    assert data["window_start_1"] == "09:00:00"  # 08:00 UTC, shown in Europe/Berlin
    admin_client.post(url, {**data, "window_end_1": "13:00:00"})
    order.refresh_from_db()
    assert order.window_end.astimezone(org.tzinfo).hour == 13


def test_order_admin_refuses_another_organisations_depot(admin_client, org, other_org):
    order = OrderFactory(organization=org)
    foreign_depot = DepotFactory(organization=other_org)
    url = reverse("admin:dispatch_order_change", args=[order.pk])
    data = _form_data(admin_client.get(url).content.decode())
    response = admin_client.post(url, {**data, "depot": str(foreign_depot.pk)})
    assert response.status_code == 200
    assert "belongs to another organisation" in response.content.decode()
    order.refresh_from_db()
    assert order.depot is None


def test_cancelled_order_cannot_be_edited_in_admin(admin_client):
    order = order_cancel(order=OrderFactory(recipient_name="Closed Person"), by=None)
    url = reverse("admin:dispatch_order_change", args=[order.pk])
    html = admin_client.get(url).content.decode()
    assert "Closed Person" in html and 'name="recipient_name"' not in html


def test_stop_event_change_page_is_read_only(admin_client):
    event = StopEventFactory(reason="left with neighbour")
    url = reverse("admin:dispatch_stopevent_change", args=[event.pk])
    response = admin_client.get(url)
    html = response.content.decode()
    assert response.status_code == 200
    assert "left with neighbour" in html and 'name="_save"' not in html
    assert admin_client.post(url, {"reason": "rewritten"}).status_code == 403
    event.refresh_from_db()
    assert event.reason == "left with neighbour"


def test_stop_events_cannot_be_added_or_deleted_in_admin(admin_client):
    event = StopEventFactory()
    add_url = reverse("admin:dispatch_stopevent_add")
    delete_url = reverse("admin:dispatch_stopevent_delete", args=[event.pk])
    assert admin_client.get(add_url).status_code == 403
    assert admin_client.post(add_url, {"kind": "note"}).status_code == 403
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    assert StopEvent.objects.count() == 1


def test_order_change_page_shows_its_history_read_only(admin_client):
    order = order_cancel(order=OrderFactory(), by=None, reason="customer moved away")
    html = admin_client.get(reverse("admin:dispatch_order_change", args=[order.pk])).content.decode()
    assert "customer moved away" in html and 'name="events-0-reason"' not in html


@pytest.mark.parametrize("url", ["/admin/", "/admin/dispatch/order/"])
def test_non_staff_dispatcher_is_sent_to_the_admin_login(client, dispatcher, url):
    client.force_login(dispatcher)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def _delivered_order(org, depot, driver) -> Order:
    order = OrderFactory(organization=org, external_ref="DONE-1")
    route = route_create(
        organization=org, driver=driver, depot=depot, date=order.service_date, orders=[order]
    )
    route_transition(route=route, to=Route.Status.PUBLISHED, by=None)
    route_transition(route=route, to=Route.Status.IN_PROGRESS, by=None)
    stop = route.stops.get()
    stop_transition(stop=stop, to=Stop.Status.ARRIVED, by=None)
    stop_transition(stop=stop, to=Stop.Status.COMPLETED, by=None)
    order.refresh_from_db()
    return order


def test_cancel_action_cancels_open_orders_and_reports_refused_ones(
    admin_client, admin_user, org, depot, driver
):
    delivered = _delivered_order(org, depot, driver)
    open_order = OrderFactory(organization=org, external_ref="OPEN-1")
    response = admin_client.post(
        _changelist("order"),
        {"action": "cancel_selected", "_selected_action": [open_order.pk, delivered.pk]},
        follow=True,
    )
    html = response.content.decode()
    open_order.refresh_from_db()
    delivered.refresh_from_db()
    assert (open_order.status, delivered.status) == (Order.Status.CANCELLED, Order.Status.DELIVERED)
    assert open_order.events.get(kind=StopEvent.Kind.CANCELLED).actor == admin_user
    assert "Cancelled 1 order." in html
    assert "Refused to cancel 1: DONE-1" in html
