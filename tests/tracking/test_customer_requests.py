"""The customer's self-service on the tracking page and the dispatcher's side (issue #6 item 3):
tracking.customer, tracking.customer_views, the dashboard, the order panel and the driver app."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ValidationError
from django.template.loader import render_to_string
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from dispatch.models import Order, Route, Stop, StopEvent
from dispatch.services import route_transition, stop_transition
from tests.factories import TODAY, OrderFactory, RouteFactory, StopFactory
from tracking import customer
from tracking.customer_forms import slot_value
from tracking.links import link_token, tracking_link_ensure
from tracking.models import Alert, CustomerRequest, TrackingLink, TrackingSettings

pytestmark = [pytest.mark.django_db]

BERLIN = ZoneInfo("Europe/Berlin")
HTMX = {"HX-Request": "true"}


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=BERLIN)


NOW = at(TODAY, 10)  # Tuesday 24 November 2026, 10:00 in Berlin
TOMORROW = TODAY + dt.timedelta(days=1)


@pytest.fixture(autouse=True)
def _clock(time_machine):
    time_machine.move_to(NOW, tick=False)


@pytest.fixture
def offering(org):
    return TrackingSettings.objects.create(
        organization=org,
        window_slots=["08:00-12:00", "12:00-16:00", "16:00-20:00", "junk"],
        slot_days_ahead=2,
    )


@pytest.fixture
def order(org, offering):
    return OrderFactory(organization=org, external_ref="SHOP-1", recipient_name="Ada Lovelace")


@pytest.fixture
def link(order):
    return tracking_link_ensure(order=order, now=NOW)


def url(link: TrackingLink, action: str) -> str:
    return f"/t/{link_token(link)}/{action}/"


def alerts_for(request: CustomerRequest) -> list[Alert]:
    return list(Alert.objects.filter(key=f"customer_request:{request.pk}"))


def deliver(order: Order) -> None:
    Order.objects.filter(pk=order.pk).update(status=Order.Status.DELIVERED)


def ask_for(link, start, end) -> CustomerRequest:
    return customer.customer_window_request(link=link, slot_start=start, slot_end=end, now=NOW)


# --- Instructions -----------------------------------------------------------------------------


def test_instructions_are_stored_on_the_order_with_a_note_and_an_alert(link, order):
    request = customer.customer_instructions_set(link=link, text="  Door code 4711, 2nd floor  ", now=NOW)
    order.refresh_from_db()
    assert order.customer_instructions == "Door code 4711, 2nd floor"
    assert (request.kind, request.status) == ("instructions", "noted")
    note = StopEvent.objects.get(order=order, kind=StopEvent.Kind.NOTE)
    assert "Door code 4711" in note.note
    [alert] = alerts_for(request)
    assert alert.kind == Alert.Kind.CUSTOMER_REQUEST and alert.resolved_at is None
    assert "SHOP-1" in alert.message and "Door code 4711" in alert.message


def test_new_instructions_replace_the_old_and_their_alert(link, order):
    first = customer.customer_instructions_set(link=link, text="Safe place: behind the bin", now=NOW)
    customer.customer_instructions_set(link=link, text="Leave it with no. 5", now=NOW)
    order.refresh_from_db()
    assert order.customer_instructions == "Leave it with no. 5"
    assert alerts_for(first)[0].resolved_at is not None


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("x" * 501, "Keep it to 500 characters (this has 501)"),
        ("code\x00 1234", "U+0000"),
        ("code \x1b[31m", "U+001B"),
        ("evil \u202e txt", "U+202E"),
    ],
)
def test_bad_instructions_are_refused_and_change_nothing(link, order, text, error):
    with pytest.raises(ValidationError) as exc:
        customer.customer_instructions_set(link=link, text=text, now=NOW)
    assert error in exc.value.message_dict["text"][0]
    order.refresh_from_db()
    assert order.customer_instructions == "" and not CustomerRequest.objects.exists()


def test_instructions_of_exactly_500_characters_with_line_breaks_are_accepted(link, order):
    text = "a" * 249 + "\r\n" + "b" * 250  # the browser's \r\n counts as one character
    customer.customer_instructions_set(link=link, text=text, now=NOW)
    order.refresh_from_db()
    assert len(order.customer_instructions) == 500 and "\n" in order.customer_instructions


def test_instructions_for_a_closed_order_are_refused(link, order):
    deliver(order)
    with pytest.raises(customer.RequestRefused, match="delivered"):
        customer.customer_instructions_set(link=link, text="Door code 1", now=NOW)


# --- Messages -----------------------------------------------------------------------------------


def test_a_message_is_capped_at_1000_characters_and_must_say_something(link):
    customer.customer_message(link=link, text="m" * 1000, now=NOW)
    with pytest.raises(ValidationError, match="1000 characters"):
        customer.customer_message(link=link, text="m" * 1001, now=NOW)
    with pytest.raises(ValidationError, match="Write something"):
        customer.customer_message(link=link, text="   \n ", now=NOW)
    assert CustomerRequest.objects.filter(kind="message").count() == 1


def test_a_message_raises_an_alert_with_its_text(link):
    request = customer.customer_message(link=link, text="Please ring twice", now=NOW)
    assert request.status == "open"
    assert "Please ring twice" in alerts_for(request)[0].message


# --- Ratings ----------------------------------------------------------------------------------------


def test_rating_is_refused_before_delivery_then_accepted_once(link, order):
    with pytest.raises(customer.RequestRefused, match="once it is done"):
        customer.customer_rating(link=link, rating=5, comment="", now=NOW)
    deliver(order)
    request = customer.customer_rating(link=link, rating=4, comment="Friendly driver", now=NOW)
    assert (request.rating, request.text) == (4, "Friendly driver")
    assert "4/5" in alerts_for(request)[0].message
    with pytest.raises(ValidationError, match="already rated"):
        customer.customer_rating(link=link, rating=5, comment="", now=NOW)
    assert CustomerRequest.objects.filter(kind="rating").count() == 1


@pytest.mark.parametrize("rating", [0, 6, True, "5"])
def test_a_rating_outside_1_to_5_is_refused(link, order, rating):
    deliver(order)
    with pytest.raises(ValidationError, match="1 to 5"):
        customer.customer_rating(link=link, rating=rating, comment="", now=NOW)


def test_a_rating_comment_is_capped_at_1000_characters(link, order):
    deliver(order)
    with pytest.raises(ValidationError, match="1000 characters"):
        customer.customer_rating(link=link, rating=3, comment="c" * 1001, now=NOW)


def test_a_picked_up_return_can_be_rated(link, order):
    Order.objects.filter(pk=order.pk).update(kind=Order.Kind.PICKUP, status=Order.Status.PICKED_UP)
    assert customer.customer_rating(link=link, rating=5, comment="", now=NOW).rating == 5


# --- Slots ------------------------------------------------------------------------------------------


def test_offered_slots_come_from_the_settings_within_the_horizon_and_in_the_future(order):
    order.window_start, order.window_end = at(TOMORROW, 12), at(TOMORROW, 16)
    order.save()
    slots = customer.offered_slots(order=order, now=NOW)
    day_after = TODAY + dt.timedelta(days=2)
    assert slots == [
        # today's 08:00–12:00 has begun; tomorrow's 12:00–16:00 is the current window
        (at(TODAY, 12), at(TODAY, 16)),
        (at(TODAY, 16), at(TODAY, 20)),
        (at(TOMORROW, 8), at(TOMORROW, 12)),
        (at(TOMORROW, 16), at(TOMORROW, 20)),
        (at(day_after, 8), at(day_after, 12)),
        (at(day_after, 12), at(day_after, 16)),
        (at(day_after, 16), at(day_after, 20)),
    ]
    assert all(start.tzinfo is not None and start.utcoffset() == dt.timedelta(hours=1) for start, _ in slots)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (at(TOMORROW, 9), at(TOMORROW, 11)),  # not a configured slot
        (at(TODAY, 8), at(TODAY, 12)),  # already begun
        (at(TODAY + dt.timedelta(days=3), 8), at(TODAY + dt.timedelta(days=3), 12)),  # beyond 2 days
    ],
)
def test_a_window_that_is_not_offered_is_refused(link, start, end):
    with pytest.raises(ValidationError) as exc:
        ask_for(link, start, end)
    assert "times offered" in exc.value.message_dict["slot"][0]
    assert not CustomerRequest.objects.exists() and not Alert.objects.exists()


def test_a_new_window_request_replaces_the_open_one(link):
    first = ask_for(link, at(TOMORROW, 8), at(TOMORROW, 12))
    second = ask_for(link, at(TOMORROW, 16), at(TOMORROW, 20))
    first.refresh_from_db()
    assert first.status == "declined" and "Replaced" in first.decision_note
    assert alerts_for(first)[0].resolved_at is not None
    assert list(CustomerRequest.objects.filter(status="open")) == [second]
    assert "Wednesday 25 November 16:00–20:00" in alerts_for(second)[0].message


# --- Deciding a window request ------------------------------------------------------------------


def test_accepting_moves_the_order_and_resolves_the_alert(link, order, dispatcher):
    request = ask_for(link, at(TOMORROW, 12), at(TOMORROW, 16))
    decided = customer.window_request_decide(request=request, accept=True, by=dispatcher, note="See you then")
    order.refresh_from_db()
    assert (order.service_date, order.window_start, order.window_end) == (
        TOMORROW, at(TOMORROW, 12), at(TOMORROW, 16),
    )  # fmt: skip
    assert (decided.status, decided.decided_by, decided.decision_note) == (
        "accepted",
        dispatcher,
        "See you then",
    )
    assert alerts_for(request)[0].resolved_at is not None
    with pytest.raises(ValidationError, match="already accepted"):
        customer.window_request_decide(request=request, accept=False, by=dispatcher)


def test_accepting_takes_a_planned_order_off_its_route(link, org, order, dispatcher):
    route = RouteFactory(organization=org, date=TODAY)
    stop = StopFactory(route=route, order=order, sequence=1)
    other = StopFactory(route=route, sequence=2)
    route_transition(route=route, to=Route.Status.PUBLISHED, by=None)
    request = ask_for(link, at(TOMORROW, 8), at(TOMORROW, 12))

    customer.window_request_decide(request=request, accept=True, by=dispatcher)

    order.refresh_from_db()
    assert order.status == Order.Status.NEW and order.service_date == TOMORROW
    assert not Stop.objects.filter(pk=stop.pk, status=Stop.Status.PENDING).exists()
    assert list(route.stops.filter(status=Stop.Status.PENDING)) == [other]


def test_accepting_is_refused_while_the_driver_is_on_the_way_and_changes_nothing(
    link, org, order, dispatcher
):
    route = RouteFactory(organization=org, date=TODAY)
    stop = StopFactory(route=route, order=order, sequence=1)
    route_transition(route=route, to=Route.Status.PUBLISHED, by=None)
    route_transition(route=route, to=Route.Status.IN_PROGRESS, by=None)
    stop_transition(stop=stop, to=Stop.Status.EN_ROUTE, by=None)
    request = ask_for(link, at(TOMORROW, 8), at(TOMORROW, 12))

    with pytest.raises(ValidationError, match="on the way"):
        customer.window_request_decide(request=request, accept=True, by=dispatcher)

    request.refresh_from_db()
    order.refresh_from_db()
    assert request.status == "open" and order.service_date == TODAY
    assert alerts_for(request)[0].resolved_at is None


def test_declining_keeps_the_order_and_tells_the_customer(link, order, dispatcher):
    request = ask_for(link, at(TOMORROW, 8), at(TOMORROW, 12))
    customer.window_request_decide(request=request, accept=False, by=dispatcher, note="Fully booked")
    order.refresh_from_db()
    assert order.service_date == TODAY
    assert alerts_for(request)[0].resolved_at is not None
    html = render_to_string("tracking/_track_requests.html", customer.page_context(link=link, now=NOW))
    assert "Declined: your delivery stays as planned" in html and "Fully booked" in html


def test_a_message_cannot_be_accepted(link, dispatcher):
    request = customer.customer_message(link=link, text="Hi", now=NOW)
    with pytest.raises(ValidationError, match="another window"):
        customer.window_request_decide(request=request, accept=True, by=dispatcher)


# --- The round trip through the pages -----------------------------------------------------------


def test_window_round_trip_customer_asks_dispatcher_accepts_customer_sees_it(client, link, order, dispatcher):
    value = slot_value(at(TOMORROW, 12), at(TOMORROW, 16))
    html = client.post(url(link, "window"), {"slot": value}, headers=HTMX).content.decode()
    assert 'id="track-requests"' in html and "Waiting for an answer" in html and "<html" not in html
    request = CustomerRequest.objects.get(kind="window")

    dispatcher_client = Client()
    dispatcher_client.force_login(dispatcher)
    dashboard = dispatcher_client.get("/").content.decode()
    assert f'action="/requests/{request.pk}/decide/"' in dashboard and 'value="accept"' in dashboard

    response = dispatcher_client.post(
        f"/requests/{request.pk}/decide/", {"decision": "accept", "back": "dashboard"}, headers=HTMX
    )
    assert response.status_code == 200 and 'id="live"' in response.content.decode()
    assert f"/requests/{request.pk}/decide/" not in response.content.decode()  # the alert is gone
    order.refresh_from_db()
    assert (order.service_date, order.window_start) == (TOMORROW, at(TOMORROW, 12))

    html = client.post(url(link, "message"), {"text": "Great, thanks"}, headers=HTMX).content.decode()
    assert "Accepted: your delivery is now on Wednesday 25 November 12:00–16:00." in html


def test_the_order_panel_lists_requests_and_declines(dispatcher_client, link, order):
    request = ask_for(link, at(TOMORROW, 8), at(TOMORROW, 12))
    panel = dispatcher_client.get(f"/orders/{order.pk}/requests/", headers=HTMX).content.decode()
    assert (
        'id="order-requests"' in panel
        and "Wednesday 25 November 08:00–12:00" in panel
        and "<html" not in panel
    )

    response = dispatcher_client.post(
        f"/requests/{request.pk}/decide/", {"decision": "decline", "back": "order"}, headers=HTMX
    )
    assert 'id="order-requests"' in response.content.decode() and "Declined" in response.content.decode()
    request.refresh_from_db()
    assert request.status == "declined"


def test_a_refused_acceptance_shows_why_in_the_panel(dispatcher_client, link, order):
    request = ask_for(link, at(TOMORROW, 8), at(TOMORROW, 12))
    Order.objects.filter(pk=order.pk).update(status=Order.Status.CANCELLED)
    response = dispatcher_client.post(
        f"/requests/{request.pk}/decide/", {"decision": "accept", "back": "order"}, headers=HTMX
    )
    assert response.status_code == 200 and "can no longer be moved" in response.content.decode()


def test_another_organisations_dispatcher_cannot_decide(client, link, other_dispatcher, driver):
    request = ask_for(link, at(TOMORROW, 8), at(TOMORROW, 12))
    client.force_login(other_dispatcher)
    assert client.post(f"/requests/{request.pk}/decide/", {"decision": "accept"}).status_code == 404
    assert client.get(f"/orders/{request.order_id}/requests/").status_code == 404
    client.force_login(driver.user)
    assert client.post(f"/requests/{request.pk}/decide/", {"decision": "accept"}).status_code == 403
    request.refresh_from_db()
    assert request.status == "open"


def test_acknowledging_a_message_alert_marks_it_read(dispatcher_client, link):
    request = customer.customer_message(link=link, text="Hello", now=NOW)
    [alert] = alerts_for(request)
    dashboard = dispatcher_client.get("/").content.decode()
    assert f"/alerts/{alert.pk}/acknowledge/" in dashboard  # not accept / decline
    dispatcher_client.post(f"/alerts/{alert.pk}/acknowledge/", headers=HTMX)
    request.refresh_from_db()
    assert request.status == "noted"


def test_customer_text_is_escaped_on_the_dashboard_and_the_order_panel(dispatcher_client, link, order):
    customer.customer_message(link=link, text="<script>alert('x')</script>", now=NOW)
    for page in ("/", f"/orders/{order.pk}/requests/"):
        html = dispatcher_client.get(page).content.decode()
        assert "&lt;script&gt;alert(" in html, page
        assert "<script>alert(" not in html, page


def test_customer_text_is_escaped_on_the_customers_own_section(client, link):
    html = client.post(url(link, "message"), {"text": "<b>bold</b>"}, headers=HTMX).content.decode()
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "<b>bold</b>" not in html


# --- The customer's endpoints -----------------------------------------------------------------------


def test_the_section_offers_slots_grouped_by_day_and_prefills_instructions(client, link, order):
    Order.objects.filter(pk=order.pk).update(customer_instructions="Ring at the back")
    html = render_to_string("tracking/_track_requests.html", customer.page_context(link=link, now=NOW))
    assert "Ring at the back</textarea>" in html
    assert "Tuesday 24 November" in html and "Thursday 26 November" in html
    assert html.count('type="radio" name="slot"') == 8
    assert 'name="rating"' not in html  # not delivered yet


def test_the_rating_form_appears_after_delivery_and_goes_once_rated(client, link, order):
    deliver(order)
    html = render_to_string("tracking/_track_requests.html", customer.page_context(link=link, now=NOW))
    assert html.count('name="rating"') == 5 and 'name="slot"' not in html
    html = client.post(url(link, "rating"), {"rating": "5", "comment": "Top"}, headers=HTMX).content.decode()
    assert "You rated it 5 out of 5" in html and 'name="rating"' not in html


def test_without_js_a_request_redirects_to_the_tracking_page(client, link):
    response = client.post(url(link, "message"), {"text": "Hi"})
    assert response.status_code == 302 and response["Location"] == f"/t/{link_token(link)}/"


def test_invalid_input_shows_field_errors_200_for_htmx_and_400_without(client, link):
    htmx = client.post(url(link, "instructions"), {"text": "x" * 501}, headers=HTMX)
    assert htmx.status_code == 200 and "Keep it to 500 characters" in htmx.content.decode()
    plain = client.post(url(link, "window"), {"slot": "yesterday"})
    assert plain.status_code == 400 and "Choose one of the times offered" in plain.content.decode()
    assert not CustomerRequest.objects.exists()


def test_unknown_and_expired_tokens_are_refused(client, link, order):
    assert client.post("/t/" + "x" * 43 + "/message/", {"text": "Hi"}).status_code == 404
    TrackingLink.objects.filter(pk=link.pk).update(expires_at=NOW - dt.timedelta(minutes=1))
    assert client.post(url(link, "message"), {"text": "Hi"}).status_code == 410
    link.refresh_from_db()
    with pytest.raises(customer.RequestRefused, match="no longer works"):
        customer.customer_message(link=link, text="Hi", now=NOW)
    assert not CustomerRequest.objects.exists()


def test_a_revoked_link_is_unknown(client, link):
    TrackingLink.objects.filter(pk=link.pk).update(revoked_at=NOW)
    assert client.post(url(link, "message"), {"text": "Hi"}).status_code == 404


def test_posts_need_the_csrf_token(link):
    strict = Client(enforce_csrf_checks=True)
    assert strict.post(url(link, "message"), {"text": "Hi"}).status_code == 403
    assert not CustomerRequest.objects.exists()


def test_requests_are_rate_limited_per_link(client, link, order):
    for n in range(customer.RATE_LIMIT):
        customer.customer_message(link=link, text=f"Message {n}", now=NOW)
    with pytest.raises(customer.RateLimited):
        customer.customer_message(link=link, text="One more", now=NOW)
    response = client.post(url(link, "message"), {"text": "One more"}, headers=HTMX)
    assert response.status_code == 200 and "requests in the last hour" in response.content.decode()
    assert client.post(url(link, "message"), {"text": "One more"}).status_code == 429
    assert CustomerRequest.objects.count() == customer.RATE_LIMIT
    # Another order's link has its own allowance; the next hour starts afresh.
    other = tracking_link_ensure(order=OrderFactory(organization=order.organization), now=NOW)
    customer.customer_message(link=other, text="Hi", now=NOW)
    customer.customer_message(link=link, text="Later", now=NOW + dt.timedelta(hours=1))


# --- The driver sees the instructions ---------------------------------------------------------------


def test_customer_instructions_reach_the_driver_app_and_api(client, link, org, order, driver):
    route = RouteFactory(organization=org, driver=driver, date=TODAY)
    StopFactory(route=route, order=order, sequence=1)
    route_transition(route=route, to=Route.Status.PUBLISHED, by=None)
    customer.customer_instructions_set(link=link, text="Key under the mat", now=NOW)

    client.force_login(driver.user)
    html = client.get("/driver/").content.decode()
    assert "From the customer:</strong> Key under the mat" in html

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=driver.user).key}")
    [stop] = api.get("/api/v1/driver/route/").json()["route"]["stops"]
    assert stop["order"]["customer_instructions"] == "Key under the mat"


def test_the_tracking_page_and_the_order_page_carry_the_sections(client, dispatcher_client, link, order):
    customer.customer_message(link=link, text="Ring twice", now=NOW)
    html = client.get(f"/t/{link_token(link)}/").content.decode()
    assert 'id="track-requests"' in html and "Ring twice" in html
    assert f'action="/t/{link_token(link)}/window/"' in html and "csrfmiddlewaretoken" in html
    page = dispatcher_client.get(f"/orders/{order.pk}/").content.decode()
    assert f'hx-get="/orders/{order.pk}/requests/"' in page
