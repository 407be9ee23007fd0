"""The customer's tracking link and page (issue #6 items 1–2): tokens, expiry, revocation,
rate limit, what the page shows and never shows, 304 polling, the JSON twin, proof files."""

import datetime as dt
import io
import json
import re
import secrets
import uuid
from zoneinfo import ZoneInfo

import pytest
from django.core.files.base import ContentFile
from PIL import Image

from dispatch import services
from dispatch.models import Order, Route, Stop
from pod import services as pod_services
from tests.factories import DriverPositionFactory, OrderFactory, RouteFactory, StopFactory, VehicleFactory
from tracking.links import (
    TOKEN_LENGTH,
    link_path,
    link_token,
    tracking_link_ensure,
    tracking_link_reissue,
)
from tracking.models import TrackingLink, TrackingSettings

pytestmark = [pytest.mark.django_db]

BERLIN = ZoneInfo("Europe/Berlin")
DAY = dt.date(2026, 11, 24)
HTMX = {"HX-Request": "true"}


def at(hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(DAY, dt.time(hour, minute), tzinfo=BERLIN)


@pytest.fixture(autouse=True)
def _clock(time_machine):
    time_machine.move_to(at(10), tick=False)


def live_data(html: str) -> dict:
    match = re.search(r'<script id="track-data" type="application/json">(.*?)</script>', html, re.S)
    assert match, "no #track-data in the page"
    return json.loads(match.group(1))


@pytest.fixture
def route(org):
    """Five stops on a route in progress; the customer we follow is the last one."""
    van = VehicleFactory(organization=org, name="Van 7", registration="B-DS 77")
    route = RouteFactory(
        organization=org,
        date=DAY,
        vehicle=van,
        driver__user__first_name="Dana",
        driver__user__last_name="Secret",
    )
    for n in range(5):
        StopFactory(
            route=route,
            sequence=n + 1,
            planned_arrival=at(10, 10 * (n + 1)),
            order=OrderFactory(
                organization=org, recipient_name=f"Customer {n + 1}", address=f"Street {n + 1}",
                lat=52.49 + n / 1000, lng=13.42, status=Order.Status.ASSIGNED,
            ),
        )  # fmt: skip
    services.route_transition(route=route, to=Route.Status.PUBLISHED, by=None, at=at(8))
    services.route_transition(route=route, to=Route.Status.IN_PROGRESS, by=None, at=at(9))
    DriverPositionFactory(driver=route.driver, lat=52.4901, lng=13.4201, recorded_at=at(9, 59))
    return route


@pytest.fixture
def ours(route):
    stop = route.stops.get(sequence=5)
    return stop, tracking_link_ensure(order=stop.order)


def complete(stop, minute):
    services.stop_transition(stop=stop, to=Stop.Status.ARRIVED, by=None, at=at(10, minute))
    return services.stop_transition(stop=stop, to=Stop.Status.COMPLETED, by=None, at=at(10, minute))


# --- Tokens ------------------------------------------------------------------------------------


def test_tokens_are_long_random_and_never_stored(org, settings):
    order = OrderFactory(organization=org)
    tokens = set()
    for _ in range(300):
        link = tracking_link_reissue(order=order)
        token = link_token(link)
        assert len(token) == TOKEN_LENGTH and re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
        tokens.add(token)
    assert len(tokens) == 300
    rows = list(TrackingLink.objects.values_list("salt", "token_hash"))
    assert not tokens & {value for row in rows for value in row}  # a dump holds no token
    link = TrackingLink.objects.get(order=order, revoked_at=None)
    before = link_token(link)
    settings.SECRET_KEY = "another-secret-key-" + "x" * 40
    assert link_token(link) != before  # the dump's salt is useless without the secret key


def test_a_link_is_made_with_the_order(org, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        order = services.order_create(
            organization=org, by=None, recipient_name="Ada", address="Wiener Str. 1", service_date=DAY
        )
    link = TrackingLink.objects.get(order=order)
    assert link.revoked_at is None and link.expires_at is None


def test_unknown_and_revoked_tokens_are_the_same_plain_404(client, ours, settings):
    settings.TRACKING_RATE_PER_MINUTE = 10_000  # TOK-4: many guesses, one identical answer
    _stop, link = ours
    guesses = [secrets.token_urlsafe(32) for _ in range(500)]
    answers = [client.get(f"/t/{guess}/") for guess in guesses]
    assert {response.status_code for response in answers} == {404}
    bodies = {response.content for response in answers}
    bodies.add(client.get("/t/short/").content)
    old = link_path(link)
    tracking_link_reissue(order=link.order)
    response = client.get(old)
    assert response.status_code == 404
    bodies.add(response.content)
    assert len(bodies) == 1 and b"does not work" in bodies.pop()


def test_a_reissued_link_works_and_the_views_are_counted(client, ours):
    _stop, link = ours
    new = tracking_link_reissue(order=link.order)
    for _ in range(3):
        assert client.get(link_path(new)).status_code == 200
    new.refresh_from_db()
    assert new.views == 3 and new.first_seen_at == at(10) and new.last_seen_at == at(10)


def test_a_link_expires_days_after_its_order_ends_and_then_says_whom_to_contact(
    client, org, ours, time_machine, django_capture_on_commit_callbacks
):
    TrackingSettings.objects.create(organization=org, link_expiry_days=2, contact_text="030 1234567")
    stop, link = ours
    with django_capture_on_commit_callbacks(execute=True):
        for earlier in stop.route.stops.filter(sequence__lt=5):
            complete(earlier, 1)
        complete(stop, 30)
    link.refresh_from_db()
    assert link.expires_at == at(10) + dt.timedelta(days=2)
    time_machine.move_to(at(10) + dt.timedelta(days=2, minutes=1), tick=False)
    response = client.get(link_path(link))
    assert response.status_code == 410
    assert "expired" in response.content.decode() and "030 1234567" in response.content.decode()


def test_too_many_requests_from_one_address_get_429_with_retry_after(client, ours, settings):
    settings.TRACKING_RATE_PER_MINUTE = 3
    _stop, link = ours
    assert [client.get(link_path(link)).status_code for _ in range(3)] == [200] * 3
    refused = client.get(link_path(link))
    assert refused.status_code == 429 and 1 <= int(refused["Retry-After"]) <= 60
    assert client.get(f"/api/v1/track/{link_token(link)}/").status_code == 429


# --- What the page shows, and never shows ------------------------------------------------------


def test_the_page_shows_status_eta_stops_before_and_the_driver_first_name(client, ours):
    stop, link = ours
    Stop.objects.filter(pk=stop.pk).update(eta=at(10, 52), eta_updated_at=at(9, 58))
    response = client.get(link_path(link))
    html = response.content.decode()
    assert response["Referrer-Policy"] == "no-referrer" and "no-store" in response["Cache-Control"]
    assert "Expected <strong>10:35–11:10</strong>" in html
    # The time of the update; the browser counts the minutes (track.js, the e2e test sees it).
    assert 'updated <time class="js-ago" datetime="2026-11-24T09:58:00+01:00">at 09:58</time>' in html
    assert "<strong>4</strong> stops before yours" in html
    assert "Dana" in html and "Van 7" in html
    data = live_data(html)
    assert data["stops_before"] == 4 and data["eta"]["live"] is True


def test_the_driver_is_shown_only_when_close_and_never_after_completion(client, ours):
    stop, link = ours
    others = list(stop.route.stops.filter(sequence__lt=5).order_by("sequence"))
    assert live_data(client.get(link_path(link)).content.decode())["driver"]["position"] is None  # 4 before
    complete(others[0], 5)
    data = live_data(client.get(link_path(link)).content.decode())
    assert data["stops_before"] == 3 and data["driver"]["position"] == {
        "lat": 52.4901, "lng": 13.4201, "recorded_at": at(9, 59).isoformat(),
    }  # fmt: skip
    for other in others[1:]:
        complete(other, 10)
    complete(stop, 20)
    data = live_data(client.get(link_path(link)).content.decode())
    assert data["driver"] is None and data["final"] is True and data["eta"] is None


def test_no_other_customer_nor_the_drivers_full_name_ever_appears(client, ours):
    stop, link = ours
    complete(stop.route.stops.get(sequence=1), 5)
    for url in (link_path(link), f"/api/v1/track/{link_token(link)}/"):
        body = client.get(url).content.decode()
        assert "Customer 5" in body and "Street 5" in body
        for n in range(1, 5):
            assert f"Customer {n}" not in body and f"Street {n}" not in body
        assert "Secret" not in body and stop.route.driver.phone not in body


def test_polling_answers_304_until_something_changes_and_stops_after_delivery(client, ours):
    stop, link = ours
    first = client.get(link_path(link), headers=HTMX)
    assert first.status_code == 200 and 'id="track-live"' in first.content.decode()
    assert "no-cache" in first["Cache-Control"] and "<html" not in first.content.decode()
    same = client.get(link_path(link), headers={**HTMX, "If-None-Match": first["ETag"]})
    assert same.status_code == 304
    # Page and partial share the URL: a browser's cache must keep them apart (the back button).
    page = client.get(link_path(link))
    assert all("HX-Request" in r["Vary"] for r in (first, same, page))
    for other in stop.route.stops.filter(sequence__lt=5):
        complete(other, 5)
    complete(stop, 15)
    done = client.get(link_path(link), headers={**HTMX, "If-None-Match": first["ETag"]})
    assert done.status_code == 200 and 'hx-trigger="every' not in done.content.decode()


def _poll(client, link, etag: str | None = None):
    headers = {**HTMX, "If-None-Match": etag} if etag else HTMX
    return client.get(link_path(link), headers=headers)


def test_the_poll_etag_changes_whenever_what_the_partial_shows_changes(client, ours, org, time_machine):
    """The 304 comes from customer_fingerprint, not from the data: every change customer_view
    would show must change the ETag (TRK-2); the clock alone must not (the page shows when the
    ETA was updated and the browser counts the minutes), so an open page is not re-sent every
    minute."""
    stop, link = ours
    order, route = stop.order, stop.route
    first = _poll(client, link)
    state = {"etag": first["ETag"], "data": live_data(first.content.decode())}

    def changed(why: str, expect_new_data: bool = True) -> None:
        answer = _poll(client, link, state["etag"])
        fresh = _poll(client, link)
        data = live_data(fresh.content.decode())
        if expect_new_data:
            assert data != state["data"], f"{why}: the test changed nothing the page shows"
        if data != state["data"]:
            assert answer.status_code == 200 and fresh["ETag"] != state["etag"], f"{why}: stale 304"
        state.update(etag=fresh["ETag"], data=data)

    StopFactory._meta.model.objects.filter(pk=stop.pk).update(eta=at(11, 30), eta_updated_at=at(10))
    changed("a new ETA")
    time_machine.move_to(at(10, 3), tick=False)
    assert _poll(client, link, state["etag"]).status_code == 304, "the clock alone re-sent the page"
    assert live_data(_poll(client, link).content.decode()) == state["data"]
    Order.objects.filter(pk=order.pk).update(customer_instructions="Door code 1234")
    changed("the customer's instructions (no version bump)")
    Order.objects.filter(pk=order.pk).update(window_start=at(11), window_end=at(13))
    changed("a moved window")
    Order.objects.filter(pk=order.pk).update(address="Street 5a", recipient_name="Customer Five")
    changed("the address and name")
    complete(route.stops.get(sequence=1), 4)
    changed("an earlier stop done: fewer stops before yours, a new timeline")
    TrackingSettings.objects.update_or_create(organization=org, defaults={"contact_text": "030 1234"})
    changed("the organisation's contact line")
    org.name = "Parcel Heroes"
    org.save()
    changed("the organisation's name")
    route.driver.user.first_name = "Dora"
    route.driver.user.save()
    changed("the driver's first name")
    route.vehicle.registration = "B-DS 78"
    route.vehicle.save()
    changed("the vehicle")

    # Still three stops ahead with show_driver_within_stops=1: the van's moves are not shown...
    TrackingSettings.objects.filter(organization=org).update(show_driver_within_stops=1)
    changed("the driver is hidden beyond the configured stops")
    assert state["data"]["driver"]["position"] is None
    DriverPositionFactory._meta.model.objects.filter(driver=route.driver).update(
        lat=52.4911, recorded_at=at(10, 3)
    )
    assert _poll(client, link, state["etag"]).status_code == 304  # ...and cost this page nothing
    for n in (2, 3, 4):
        complete(route.stops.get(sequence=n), 5)
    changed("next in line: the driver appears")
    assert state["data"]["driver"]["position"] is not None
    DriverPositionFactory._meta.model.objects.filter(driver=route.driver).update(
        lat=52.4921, recorded_at=at(10, 4)
    )
    changed("the driver moved")
    complete(stop, 6)
    changed("delivered")
    assert state["data"]["final"] is True


def test_an_unchanged_poll_is_one_query(client, ours, django_assert_num_queries, time_machine):
    _stop, link = ours
    etag = _poll(client, link)["ETag"]
    with django_assert_num_queries(1):
        assert _poll(client, link, etag).status_code == 304
    time_machine.move_to(at(10, 2), tick=False)  # a minute on: last seen moves, once
    etag = _poll(client, link)["ETag"]
    time_machine.move_to(
        at(
            10,
            2,
        )
        + dt.timedelta(seconds=20),
        tick=False,
    )
    with django_assert_num_queries(1):
        assert _poll(client, link, etag).status_code == 304


def test_a_poll_of_a_revoked_or_expired_link_is_its_404_or_410(client, ours):
    stop, link = ours
    etag = _poll(client, link)["ETag"]
    TrackingLink.objects.filter(pk=link.pk).update(expires_at=at(9))
    assert _poll(client, link, etag).status_code == 410
    TrackingLink.objects.filter(pk=link.pk).update(revoked_at=at(9, 30))
    assert _poll(client, link, etag).status_code == 404


def test_the_json_api_gives_the_same_data(client, ours):
    _stop, link = ours
    api = client.get(f"/api/v1/track/{link_token(link)}/").json()
    page = live_data(client.get(link_path(link)).content.decode())
    # The same facts; the JSON also counts the minutes since the ETA was updated, which the
    # page leaves to the browser.
    assert api["eta"].pop("updated_minutes_ago") is None
    assert api == page
    assert client.get(f"/api/v1/track/{'a' * 43}/").status_code == 404


# --- The proof, after delivery -----------------------------------------------------------------


def _deliver_with_proof(stop):
    image = io.BytesIO()
    Image.new("RGB", (300, 200), (10, 120, 10)).save(image, format="JPEG")
    prepared = pod_services.proof_prepare(
        stop=stop, outcome="delivered", photos=[ContentFile(image.getvalue(), name="a.jpg")],
        signature=ContentFile(image.getvalue(), name="s.jpg"), recipient_name="Ada",
    )  # fmt: skip
    complete(stop, 30)
    return pod_services.proof_record(
        prepared=prepared, stop=stop, key=uuid.uuid4(), by=None, captured_at=at(10, 30)
    )


def test_after_delivery_the_customer_sees_the_proof_and_only_their_own(client, ours, route):
    stop, link = ours
    proof = _deliver_with_proof(stop)
    photo = proof.photos.get()
    html = client.get(link_path(link)).content.decode()
    assert "Received by Ada" in html and f"/photos/{photo.public_id}/small/" in html
    token = link_token(link)
    for url in (f"/t/{token}/photos/{photo.public_id}/", f"/t/{token}/photos/{photo.public_id}/small/",
                f"/t/{token}/signature/"):  # fmt: skip
        response = client.get(url)
        assert response.status_code == 200 and response["Referrer-Policy"] == "no-referrer", url
    # Another customer's link cannot fetch this photo.
    other = tracking_link_ensure(order=route.stops.get(sequence=1).order)
    assert client.get(f"/t/{link_token(other)}/photos/{photo.public_id}/").status_code == 404


# --- The dispatcher's side ---------------------------------------------------------------------


def test_the_dispatcher_can_reissue_and_revoke_a_link(dispatcher_client, client, ours):
    stop, link = ours
    panel = dispatcher_client.get(f"/orders/{stop.order_id}/tracking-link/", headers=HTMX).content.decode()
    assert link_path(link) in panel
    dispatcher_client.post(f"/orders/{stop.order_id}/tracking-link/", {"action": "reissue"}, headers=HTMX)
    assert client.get(link_path(link)).status_code == 404
    new = TrackingLink.objects.get(order=stop.order, revoked_at=None)
    assert client.get(link_path(new)).status_code == 200
    dispatcher_client.post(f"/orders/{stop.order_id}/tracking-link/", {"action": "revoke"}, headers=HTMX)
    assert client.get(link_path(new)).status_code == 404
    assert not TrackingLink.objects.filter(order=stop.order, revoked_at=None).exists()


def test_another_organisation_cannot_see_or_change_the_link(client, other_dispatcher, ours):
    stop, link = ours
    client.force_login(other_dispatcher)
    assert client.get(f"/orders/{stop.order_id}/tracking-link/").status_code == 404
    assert client.post(f"/orders/{stop.order_id}/tracking-link/", {"action": "revoke"}).status_code == 404
    link.refresh_from_db()
    assert link.revoked_at is None


def test_tokens_never_reach_the_logs(client, ours, caplog):
    _stop, link = ours
    token = link_token(link)
    client.get(f"/t/{token[:-1]}x/")  # a 404 is logged by Django with its path
    client.get(link_path(link))
    from config.logging import RedactTrackingTokens

    handler_filter = RedactTrackingTokens()
    for record in caplog.records:
        handler_filter.filter(record)
        assert token[:-1] not in record.getMessage() and token not in record.getMessage()
    assert any("/t/<token>" in record.getMessage() for record in caplog.records)
    # The filter sits on the one handler everything is logged through.
    from django.conf import settings

    assert settings.LOGGING["handlers"]["console"]["filters"] == ["redact_tokens"]


def test_polls_of_an_open_page_are_not_views_but_keep_last_seen(client, ours, time_machine):
    _stop, link = ours
    client.get(link_path(link))
    for _ in range(5):
        client.get(link_path(link), headers=HTMX)
    link.refresh_from_db()
    assert (link.views, link.last_seen_at) == (1, at(10))
    time_machine.move_to(at(10, 2), tick=False)
    client.get(link_path(link), headers=HTMX)
    link.refresh_from_db()
    assert (link.views, link.last_seen_at) == (1, at(10, 2))


def test_the_sweep_gives_a_link_to_an_order_whose_signal_was_missed(org):
    from tracking.tasks import ensure_tracking_links

    order = services.order_create(  # on_commit never runs inside the test transaction
        organization=org, by=None, recipient_name="Ada", address="Wiener Str. 1", service_date=DAY
    )
    assert not TrackingLink.objects.filter(order=order).exists()
    assert ensure_tracking_links() == 1
    assert TrackingLink.objects.filter(order=order, revoked_at=None).count() == 1
    assert ensure_tracking_links() == 0
