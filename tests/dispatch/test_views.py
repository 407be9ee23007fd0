import datetime as dt

import pytest
from django.urls import reverse

from dispatch.models import Contact, Driver, Order, Shift, Vehicle
from tests.factories import (
    ContactFactory,
    DepotFactory,
    DriverFactory,
    OrderFactory,
    RouteFactory,
    ShiftFactory,
    StopFactory,
    VehicleFactory,
)

DAY = dt.date(2026, 11, 24)


def html(response) -> str:
    return response.content.decode()


# --- Orders list: filters, HTMX partial, pagination -----------------------------------------


def test_order_list_filters_by_text_status_date_and_depot(dispatcher_client, org):
    north, south = (
        DepotFactory(organization=org, name="North"),
        DepotFactory(organization=org, name="South"),
    )
    OrderFactory(organization=org, recipient_name="Grace Hopper", depot=north)
    OrderFactory(organization=org, recipient_name="Alan Turing", depot=south, status="assigned")
    OrderFactory(organization=org, recipient_name="Edsger Dijkstra", service_date=DAY + dt.timedelta(days=1))
    url = reverse("dispatch:order_list")

    assert "Grace Hopper" in html(dispatcher_client.get(url, {"q": "hopper"}))
    assert "Alan Turing" not in html(dispatcher_client.get(url, {"q": "hopper"}))
    by_status = html(dispatcher_client.get(url, {"status": "assigned"}))
    assert "Alan Turing" in by_status and "Grace Hopper" not in by_status
    by_date = html(dispatcher_client.get(url, {"date": "2026-11-25"}))
    assert "Edsger Dijkstra" in by_date and "Grace Hopper" not in by_date
    by_depot = html(dispatcher_client.get(url, {"depot": north.pk}))
    assert "Grace Hopper" in by_depot and "Alan Turing" not in by_depot


def test_order_list_htmx_request_returns_only_the_table(dispatcher_client, org):
    OrderFactory(organization=org, recipient_name="Grace Hopper")
    response = dispatcher_client.get(
        reverse("dispatch:order_list"), {"q": "grace"}, headers={"HX-Request": "true"}
    )
    body = html(response)
    assert "Grace Hopper" in body and 'id="order-table"' in body
    assert "<html" not in body and "<form" not in body
    assert "HX-Request" in response["Vary"]


def test_order_list_paginates_with_plain_links_that_keep_the_filters(dispatcher_client, org):
    for n in range(55):
        OrderFactory(organization=org, external_ref=f"P-{n:03d}", recipient_name="Paged Person")
    page1 = html(dispatcher_client.get(reverse("dispatch:order_list"), {"q": "paged"}))
    assert "Page 1 of 2" in page1 and 'href="?q=paged&amp;page=2"' in page1
    page2 = html(dispatcher_client.get(reverse("dispatch:order_list"), {"q": "paged", "page": 2}))
    assert page2.count("Paged Person") == 5


def test_order_list_query_count_does_not_grow_with_orders(
    dispatcher_client, org, django_assert_max_num_queries
):
    depot = DepotFactory(organization=org)
    for _ in range(30):
        OrderFactory(organization=org, depot=depot)
    with django_assert_max_num_queries(8):
        dispatcher_client.get(reverse("dispatch:order_list"))


def test_needs_location_filter_lists_orders_without_coordinates(dispatcher_client, org):
    OrderFactory(organization=org, recipient_name="Lost Parcel", lat=None, lng=None)
    OrderFactory(organization=org, recipient_name="Found Parcel")
    body = html(dispatcher_client.get(reverse("dispatch:order_list"), {"status": "needs_location"}))
    assert "Lost Parcel" in body and "Found Parcel" not in body


# --- Orders: create, edit, cancel -------------------------------------------------------------


def order_post(**overrides):
    data = {
        "kind": "delivery",
        "recipient_name": "Katherine Johnson",
        "recipient_phone": "+49 30 1234567",
        "address": "Mariannenplatz 2, 10997 Berlin",
        "lat": "52.5035",
        "lng": "13.4245",
        "service_date": "2026-11-24",
        "window_from": "09:00",
        "window_to": "12:00",
        "service_minutes": "5",
        "parcels": "2",
        "priority": "normal",
    }
    return {**data, **overrides}


def test_creating_an_order_through_the_form(dispatcher_client, org):
    response = dispatcher_client.post(reverse("dispatch:order_create"), order_post(external_ref="WEB-1"))
    order = Order.objects.get(external_ref="WEB-1")
    assert response.status_code == 302 and response["Location"] == order.get_absolute_url()
    assert order.organization == org
    # 09:00 in Berlin in November is 08:00 UTC.
    assert order.window_start == dt.datetime(2026, 11, 24, 8, 0, tzinfo=dt.UTC)


def test_invalid_order_form_shows_field_errors_and_saves_nothing(dispatcher_client):
    response = dispatcher_client.post(
        reverse("dispatch:order_create"),
        order_post(recipient_name="", window_from="12:00", window_to="09:00", lat="95"),
    )
    body = html(response)
    assert response.status_code == 200
    assert "This field is required." in body
    assert "The window must end after it starts." in body
    assert "less than or equal to 90" in body
    assert not Order.objects.exists()


def test_a_duplicate_external_reference_is_a_field_error(dispatcher_client, org):
    OrderFactory(organization=org, external_ref="DUP-1")
    body = html(dispatcher_client.post(reverse("dispatch:order_create"), order_post(external_ref="DUP-1")))
    assert "already exists" in body
    assert Order.objects.filter(external_ref="DUP-1").count() == 1


def test_new_order_from_contact_prefills_the_form(dispatcher_client, org):
    contact = ContactFactory(organization=org, name="Hedy Lamarr", address="Bergmannstraße 5, 10961 Berlin")
    body = html(dispatcher_client.get(reverse("dispatch:order_create"), {"contact": contact.pk}))
    assert 'value="Hedy Lamarr"' in body and "Bergmannstraße 5" in body


def test_editing_an_order_saves_changes_and_logs_them(dispatcher_client, org):
    order = OrderFactory(organization=org)
    response = dispatcher_client.post(
        reverse("dispatch:order_edit", args=[order.pk]),
        order_post(external_ref=order.external_ref, parcels="7", version="1"),
    )
    order.refresh_from_db()
    assert response.status_code == 302
    assert (order.parcels, order.version) == (7, 2)
    assert "parcels" in order.events.last().note


def test_saving_a_stale_edit_form_is_a_409_and_keeps_the_other_change(dispatcher_client, org):
    order = OrderFactory(organization=org, parcels=1)
    url = reverse("dispatch:order_edit", args=[order.pk])
    dispatcher_client.post(url, order_post(external_ref=order.external_ref, parcels="3", version="1"))
    response = dispatcher_client.post(
        url, order_post(external_ref=order.external_ref, parcels="9", version="1")
    )
    order.refresh_from_db()
    assert response.status_code == 409
    assert "changed by someone else" in html(response)
    assert order.parcels == 3


def test_placing_an_order_on_the_map_clears_needs_location(dispatcher_client, org):
    order = OrderFactory(organization=org, lat=None, lng=None)
    dispatcher_client.post(
        reverse("dispatch:order_edit", args=[order.pk]),
        order_post(external_ref=order.external_ref, lat="52.49", lng="13.41", version="1"),
    )
    order.refresh_from_db()
    assert (order.lat, order.lng) == (52.49, 13.41)


def test_order_edit_page_has_the_map_picker(dispatcher_client, org):
    order = OrderFactory(organization=org, lat=None, lng=None)
    body = html(dispatcher_client.get(reverse("dispatch:order_edit", args=[order.pk])))
    assert 'id="location-map"' in body and "vendor/leaflet/leaflet.js" in body


def test_cancelling_an_order_from_its_page(dispatcher_client, org):
    order = OrderFactory(organization=org)
    response = dispatcher_client.post(
        reverse("dispatch:order_cancel", args=[order.pk]), {"reason": "Shop asked"}
    )
    order.refresh_from_db()
    assert response.status_code == 302
    assert (order.status, order.cancel_reason) == ("cancelled", "Shop asked")
    page = html(dispatcher_client.get(order.get_absolute_url()))
    assert "Shop asked" in page and "Cancel order" not in page


def test_cancelling_a_delivered_order_says_why_not(dispatcher_client, org):
    order = OrderFactory(organization=org, status="delivered")
    response = dispatcher_client.post(reverse("dispatch:order_cancel", args=[order.pk]), follow=True)
    assert "cannot become cancelled" in html(response)
    order.refresh_from_db()
    assert order.status == "delivered"


def test_order_detail_shows_its_stops_and_history(dispatcher_client, org, dispatcher):
    from dispatch import services

    order = services.order_create(
        organization=org, by=dispatcher, recipient_name="Mary Jackson", address="Wrangelstraße 3",
        service_date=DAY, lat=52.5, lng=13.43,
    )  # fmt: skip
    StopFactory(route=RouteFactory(organization=org, driver__user__first_name="Rosa"), order=order)
    body = html(dispatcher_client.get(order.get_absolute_url()))
    assert "Mary Jackson" in body and "Rosa" in body and "Created" in body


# --- Contacts -------------------------------------------------------------------------------


def test_contacts_search_and_create(dispatcher_client, org):
    ContactFactory(organization=org, name="Barbara Liskov", company="MIT")
    ContactFactory(organization=org, name="Donald Knuth")
    body = html(dispatcher_client.get(reverse("dispatch:contact_list"), {"q": "mit"}))
    assert "Barbara Liskov" in body and "Donald Knuth" not in body
    response = dispatcher_client.post(
        reverse("dispatch:contact_create"),
        {
            "name": "Frances Allen",
            "address": "Torstraße 1, Berlin",
            "lat": "52.53",
            "lng": "13.40",
            "default_service_minutes": "4",
        },
    )
    assert response.status_code == 302
    assert Contact.objects.get(name="Frances Allen").organization == org


def test_contact_with_only_latitude_is_refused(dispatcher_client):
    body = html(dispatcher_client.post(
        reverse("dispatch:contact_create"),
        {"name": "Half", "address": "Somewhere", "lat": "52.5", "default_service_minutes": "5"},
    ))  # fmt: skip
    assert "Give both latitude and longitude" in body
    assert not Contact.objects.exists()


# --- Drivers, shifts, vehicles, depots ------------------------------------------------------------


def test_adding_a_driver_with_a_login(dispatcher_client, org):
    response = dispatcher_client.post(
        reverse("dispatch:driver_create"),
        {
            "first_name": "Lena",
            "last_name": "Kraft",
            "username": "lena",
            "password": "long-enough-1",
            "is_active": "on",
        },
    )
    driver = Driver.objects.get(user__username="lena")
    assert response.status_code == 302 and driver.organization == org
    dispatcher_client.logout()
    login = dispatcher_client.post(reverse("login"), {"username": "lena", "password": "long-enough-1"})
    assert login.status_code == 302


def test_driver_list_shows_todays_shift(dispatcher_client, org, time_machine):
    time_machine.move_to(dt.datetime(2026, 11, 24, 9, tzinfo=dt.UTC))
    ShiftFactory(driver__organization=org, driver__user__first_name="Otto")
    body = html(dispatcher_client.get(reverse("dispatch:driver_list")))
    assert "Otto" in body and "08:00–17:00" in body


def test_adding_a_night_shift_runs_past_midnight(dispatcher_client, org):
    driver = DriverFactory(organization=org)
    response = dispatcher_client.post(
        reverse("dispatch:shift_create", args=[driver.pk]),
        {"date": "2026-11-24", "start": "20:00", "end": "04:00", "break_minutes": "30"},
    )
    shift = Shift.objects.get(driver=driver)
    assert response.status_code == 302
    assert shift.ends_at - shift.starts_at == dt.timedelta(hours=8)


def test_a_second_shift_on_the_same_day_is_refused(dispatcher_client, org):
    shift = ShiftFactory(driver__organization=org)
    body = html(dispatcher_client.post(
        reverse("dispatch:shift_create", args=[shift.driver.pk]),
        {"date": "2026-11-24", "start": "18:00", "end": "20:00", "break_minutes": "0"},
    ))  # fmt: skip
    assert "already exists" in body
    assert Shift.objects.count() == 1


def test_vehicle_capacity_cannot_be_negative(dispatcher_client):
    body = html(
        dispatcher_client.post(reverse("dispatch:vehicle_create"), {"name": "Van X", "capacity": "-1"})
    )
    assert "greater than or equal to 0" in body
    assert not Vehicle.objects.exists()


def test_editing_a_vehicle(dispatcher_client, org):
    vehicle = VehicleFactory(organization=org, name="Van 1", capacity=50)
    dispatcher_client.post(
        reverse("dispatch:vehicle_edit", args=[vehicle.pk]),
        {"name": "Van 1", "capacity": "90", "is_active": "on"},
    )
    vehicle.refresh_from_db()
    assert vehicle.capacity == 90


def test_creating_a_depot(dispatcher_client, org):
    dispatcher_client.post(
        reverse("dispatch:depot_create"),
        {
            "name": "Tempelhof hub",
            "address": "Columbiadamm 10",
            "lat": "52.4800",
            "lng": "13.3900",
            "is_active": "on",
        },
    )
    assert org.depots.get().name == "Tempelhof hub"


@pytest.mark.parametrize(
    "name",
    ["dispatch:plan_list", "dispatch:report_list", "dispatch:vehicle_list", "dispatch:depot_list"],
)
def test_portal_pages_render_inside_the_layout(dispatcher_client, name):
    body = html(dispatcher_client.get(reverse(name)))
    assert 'class="mainnav"' in body and 'aria-current="page"' in body


def test_a_driver_is_sent_to_the_driver_app_after_login(client, driver):
    response = client.post(
        reverse("login"), {"username": "driver1", "password": "correct-horse-battery"}, follow=True
    )
    assert response.redirect_chain[-1][0] == reverse("tracking:driver_home")
    assert client.get(reverse("dispatch:order_list")).status_code == 403
