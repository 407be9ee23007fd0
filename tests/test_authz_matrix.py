"""AUTHZ-1: every URL pattern × every role has an expected outcome, checked against real objects.

EXPECTED is the table. A route added to the URLconf without a row here fails
`test_every_url_pattern_has_a_row_in_the_authz_table` with the name that lacks one. Each
(route × role) cell is its own test id: `test_get_cell[<url name>-<role>]`.

Roles: anonymous; driver of org A; dispatcher of org A; org admin of org A; dispatcher of org B
(another tenant); a staff superuser with no membership. Another tenant's object is a 404, never
a 403 (no existence leak), and its data never shows on a page that answers 200.

/admin/ is left out (covered by the admin tests), as are static/media patterns and DRF's
format-suffix duplicates (`orders.json`), which reach the same views as the rows below.
"""

import datetime as dt
import io
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone
from PIL import Image

from dispatch.models import Contact, Depot, Driver, Order, Plan, Route, Shift, Stop, StopEvent, Vehicle
from dispatch.services import api_key_create
from dispatch.timeutils import local_today
from pod import services as pod_services
from tests.factories import (
    ContactFactory,
    DepotFactory,
    DriverFactory,
    OrderFactory,
    PlanFactory,
    RouteFactory,
    ShiftFactory,
    StopFactory,
    UserFactory,
    VehicleFactory,
)
from tracking.links import link_token, tracking_link_ensure
from tracking.models import Alert, CustomerRequest, Notification, TrackerDevice, WebhookEndpoint
from tracking.services import tracker_device_create

ROLES = ["anonymous", "driver", "dispatcher_a", "org_admin_a", "dispatcher_b", "staff_no_org"]

# Outcomes that are not a bare status code.
LOGIN = "302 → login"
APP = "302 → /driver/"

# Distinctive text of org A's objects: none of it may appear in a page org B's dispatcher gets.
MARKERS = {
    "order": "Qxorderrecipient",
    "contact": "Qxcontactname",
    "driver": "Qxdrivername",
    "vehicle": "Qxvehiclename",
    "depot": "Qxdepotname",
}


@dataclass(frozen=True)
class Row:
    """Expected GET outcome per role, in ROLES order; `obj` names the org A object in the URL;
    `shows` names the org A object whose marker org A's dispatcher and admin must see."""

    anonymous: int | str
    driver: int | str
    dispatcher_a: int | str
    org_admin_a: int | str
    dispatcher_b: int | str
    staff_no_org: int | str
    obj: str | None
    shows: str | None


# fmt: off
EXPECTED: dict[str, Row] = {
    # 405 = the route takes POST only; its unsafe requests are tested further down.
    #                              anon   driver dispA adminA dispB staff object    shows
    # --- public / account -----------------------------------------------------------------
    "healthz":                 Row(200,   200,  200,  200,  200,  200,  None,     None),
    "login":                   Row(200,   200,  200,  200,  200,  200,  None,     None),
    "logout":                  Row(405,   405,  405,  405,  405,  405,  None,     None),
    "password_change":         Row(LOGIN, 200,  200,  200,  200,  200,  None,     None),
    "password_change_done":    Row(LOGIN, 200,  200,  200,  200,  200,  None,     None),
    "password_reset":          Row(200,   200,  200,  200,  200,  200,  None,     None),
    "password_reset_done":     Row(200,   200,  200,  200,  200,  200,  None,     None),
    "password_reset_confirm":  Row(200,   200,  200,  200,  200,  200,  "reset",  None),
    "password_reset_complete": Row(200,   200,  200,  200,  200,  200,  None,     None),
    # --- API ------------------------------------------------------------------------------
    "api_token":               Row(405,   405,  405,  405,  405,  405,  None,     None),
    "api-root":                Row(401,   200,  200,  200,  200,  200,  None,     None),
    "order-list":              Row(401,   403,  200,  200,  200,  403,  None,     "order"),
    "order-detail":            Row(401,   403,  200,  200,  404,  403,  "order",  "order"),
    "order-bulk":              Row(401,   403,  405,  405,  405,  403,  None,     None),
    "order-cancel":            Row(401,   403,  405,  405,  405,  403,  "order",  None),
    "driver_route":            Row(401,   200,  403,  403,  403,  403,  None,     None),
    "driver_route_events":     Row(401,   405,  403,  403,  403,  403,  "route_id", None),
    "driver_stop_events":      Row(401,   405,  403,  403,  403,  403,  "stop_id", None),
    "driver_locations":        Row(401,   405,  403,  403,  403,  403,  None,     None),
    "plan-list":               Row(401,   403,  200,  200,  200,  403,  None,     None),
    "plan-detail":             Row(401,   403,  200,  200,  404,  403,  "plan",   None),
    "plan-publish":            Row(401,   403,  405,  405,  405,  403,  "plan",   None),
    "order-events":            Row(401,   403,  200,  200,  404,  403,  "order",  None),
    "order_tracking":          Row(401,   403,  200,  200,  404,  403,  "order",  None),
    "route-list":              Row(401,   403,  200,  200,  200,  403,  None,     None),
    "route-detail":            Row(401,   403,  200,  200,  404,  403,  "route",  None),
    "driver-list":             Row(401,   403,  200,  200,  200,  403,  None,     "driver"),
    "driver-detail":           Row(401,   403,  200,  200,  404,  403,  "driver", "driver"),
    "shift-list":              Row(401,   403,  200,  200,  200,  403,  None,     None),
    "shift-detail":            Row(401,   403,  200,  200,  404,  403,  "shift",  None),
    "depot-list":              Row(401,   403,  200,  200,  200,  403,  None,     "depot"),
    "depot-detail":            Row(401,   403,  200,  200,  404,  403,  "depot",  "depot"),
    "contact-list":            Row(401,   403,  200,  200,  200,  403,  None,     "contact"),
    "contact-detail":          Row(401,   403,  200,  200,  404,  403,  "contact", "contact"),
    "schema":                  Row(200,   200,  200,  200,  200,  200,  None,     None),
    "api_docs":                Row(200,   200,  200,  200,  200,  200,  None,     None),
    # webhooks (tests/tracking/test_webhooks.py): POST actions answer GET with 405
    "webhook-list":            Row(401,   403,  200,  200,  200,  403,  None,     None),
    "webhook-detail":          Row(401,   403,  200,  200,  404,  403,  "webhook", None),
    "webhook-deliveries":      Row(401,   403,  200,  200,  404,  403,  "webhook", None),
    "webhook-rotate":          Row(401,   403,  405,  405,  405,  403,  "webhook", None),
    "webhook-test":            Row(401,   403,  405,  405,  405,  403,  "webhook", None),
    "webhook-resend":          Row(401,   403,  405,  405,  405,  403,  "webhook", None),
    # --- tracking -------------------------------------------------------------------------
    "tracking:dashboard":      Row(LOGIN, APP,  200,  200,  200,  403,  None,     "driver"),
    "tracking:dashboard_map":  Row(LOGIN, 403,  200,  200,  200,  403,  None,     "driver"),  # map.json
    "tracking:driver_home":    Row(LOGIN, 200,  403,  403,  403,  403,  None,     None),
    "tracking:alert_acknowledge": Row(405, 405,  405,  405,  405,  405,  "alert",  None),
    "tracking:driver_trackers": Row(LOGIN, 403,  200,  200,  404,  403,  "driver_id", "driver"),
    "tracking:driver_tracker_revoke": Row(405, 405, 405, 405, 405,  405,  "tracker", None),
    # the customer's requests: POST only, the token is the key (tests/tracking/test_customer_requests.py)
    "tracking:customer_instructions": Row(405, 405, 405, 405, 405,  405,  "token",  None),
    "tracking:customer_window": Row(405,  405,  405,  405,  405,  405,  "token",  None),
    "tracking:customer_message": Row(405, 405,  405,  405,  405,  405,  "token",  None),
    "tracking:customer_rating": Row(405,  405,  405,  405,  405,  405,  "token",  None),
    "tracking:order_requests": Row(LOGIN, 403,  200,  200,  404,  403,  "order",  None),
    "tracking:customer_request_decide": Row(405, 405, 405, 405, 405, 405, "customer_request", None),
    "tracker_osmand":          Row(401,   401,  401,  401,  401,  401,  None,     None),  # key, not log-in
    "driver_stop_pod":         Row(401,   405,  403,  403,  403,  403,  "stop_id", None),
    # --- the customer's tracking link: public, the token is the key (another token → 404) ----
    "tracking:track":          Row(200,   200,  200,  200,  200,  200,  "token",  None),
    "tracking:track_photo":    Row(200,   200,  200,  200,  200,  200,  "track_photo", None),
    "tracking:track_photo_small": Row(200, 200, 200,  200,  200,  200,  "track_photo", None),
    "tracking:track_signature": Row(200,  200,  200,  200,  200,  200,  "token",  None),
    "tracking:track_logo":     Row(404,   404,  404,  404,  404,  404,  "token",  None),  # none set
    "api_track":               Row(200,   200,  200,  200,  200,  200,  "token",  None),
    "tracking:order_tracking_link": Row(LOGIN, 403, 200, 200,  404,  403,  "order",  None),
    # customer messages (tests/tracking/test_notifications.py): the opt-out page is public by
    # token (POST opts out); the provider's STOP callback is POST-only with a shared secret.
    "tracking:unsubscribe":    Row(200,   200,  200,  200,  200,  200,  "token",  None),
    "tracking:sms_inbound":    Row(405,   405,  405,  405,  405,  405,  None,     None),
    "tracking:order_messages": Row(LOGIN, 403,  200,  200,  404,  403,  "order",  None),
    # webhook endpoints and their delivery logs (tests/tracking/test_webhooks.py)
    "tracking:webhook_list":   Row(LOGIN, 403,  200,  200,  200,  403,  None,     None),
    "tracking:webhook_settings": Row(405, 405,  405,  405,  405,  405,  None,     None),
    "tracking:webhook_detail": Row(LOGIN, 403,  200,  200,  404,  403,  "webhook", None),
    "tracking:webhook_delete": Row(405,   405,  405,  405,  405,  405,  "webhook", None),
    "tracking:webhook_rotate": Row(405,   405,  405,  405,  405,  405,  "webhook", None),
    "tracking:webhook_test":   Row(405,   405,  405,  405,  405,  405,  "webhook", None),
    "tracking:webhook_delivery": Row(LOGIN, 403, 200, 200,  404,  403,  "webhook_delivery", None),
    "tracking:webhook_resend": Row(405,   405,  405,  405,  405,  405,  "webhook_delivery", None),
    # --- proof of delivery (files: staff see them in Django admin) ---------------------------
    "pod:photo":               Row(LOGIN, 200,  200,  200,  404,  200,  "photo",  None),
    "pod:photo_thumbnail":     Row(LOGIN, 200,  200,  200,  404,  200,  "photo",  None),
    "pod:signature":           Row(LOGIN, 200,  200,  200,  404,  200,  "proof",  None),
    "pod:order_proof":         Row(LOGIN, 403,  200,  200,  404,  403,  "order",  "order"),
    # --- dispatcher portal ----------------------------------------------------------------
    "dispatch:order_list":     Row(LOGIN, 403,  200,  200,  200,  403,  None,     "order"),
    "dispatch:order_create":   Row(LOGIN, 403,  200,  200,  200,  403,  None,     "depot"),
    "dispatch:order_import":   Row(LOGIN, 403,  200,  200,  200,  403,  None,     None),
    "dispatch:order_detail":   Row(LOGIN, 403,  200,  200,  404,  403,  "order",  "order"),
    "dispatch:order_edit":     Row(LOGIN, 403,  200,  200,  404,  403,  "order",  "order"),
    "dispatch:order_cancel":   Row(405,   405,  405,  405,  405,  405,  "order",  None),
    "dispatch:contact_list":   Row(LOGIN, 403,  200,  200,  200,  403,  None,     "contact"),
    "dispatch:contact_create": Row(LOGIN, 403,  200,  200,  200,  403,  None,     None),
    "dispatch:contact_edit":   Row(LOGIN, 403,  200,  200,  404,  403,  "contact", "contact"),
    "dispatch:driver_list":    Row(LOGIN, 403,  200,  200,  200,  403,  None,     "driver"),
    "dispatch:driver_create":  Row(LOGIN, 403,  200,  200,  200,  403,  None,     "vehicle"),
    "dispatch:driver_edit":    Row(LOGIN, 403,  200,  200,  404,  403,  "driver", "driver"),
    "dispatch:shift_create":   Row(LOGIN, 403,  200,  200,  404,  403,  "driver", "vehicle"),
    "dispatch:shift_edit":     Row(LOGIN, 403,  200,  200,  404,  403,  "shift",  "driver"),
    "dispatch:shift_delete":   Row(405,   405,  405,  405,  405,  405,  "shift",  None),
    "dispatch:vehicle_list":   Row(LOGIN, 403,  200,  200,  200,  403,  None,     "vehicle"),
    "dispatch:vehicle_create": Row(LOGIN, 403,  200,  200,  200,  403,  None,     "depot"),
    "dispatch:vehicle_edit":   Row(LOGIN, 403,  200,  200,  404,  403,  "vehicle", "vehicle"),
    "dispatch:depot_list":     Row(LOGIN, 403,  200,  200,  200,  403,  None,     "depot"),
    "dispatch:depot_create":   Row(LOGIN, 403,  200,  200,  200,  403,  None,     None),
    "dispatch:depot_edit":     Row(LOGIN, 403,  200,  200,  404,  403,  "depot",  "depot"),
    "dispatch:plan_list":      Row(LOGIN, 403,  200,  200,  200,  403,  None,     "depot"),
    "dispatch:plan_detail":    Row(LOGIN, 403,  200,  200,  404,  403,  "plan",   None),
    "dispatch:plan_cancel":    Row(405,   405,  405,  405,  405,  405,  "plan",   None),
    "dispatch:plan_publish":   Row(405,   405,  405,  405,  405,  405,  "plan",   None),
    "dispatch:plan_apply":     Row(405,   405,  405,  405,  405,  405,  "plan",   None),
    "dispatch:plan_replan":    Row(405,   405,  405,  405,  405,  405,  None,     None),
    "dispatch:route_detail":   Row(LOGIN, 403,  200,  200,  404,  403,  "route",  "driver"),
    "dispatch:route_lock":     Row(405,   405,  405,  405,  405,  405,  "route",  None),
    "dispatch:route_swap":     Row(405,   405,  405,  405,  405,  405,  "route",  None),
    "dispatch:stop_move":      Row(405,   405,  405,  405,  405,  405,  "stop",   None),
    "dispatch:stop_remove":    Row(405,   405,  405,  405,  405,  405,  "stop",   None),
    "dispatch:report_list":    Row(LOGIN, 403,  200,  200,  200,  403,  None,     None),
    "dispatch:daily_summary":  Row(405,   405,  405,  405,  405,  405,  None,     None),
    # API keys: dispatchers see the list; only admins create and revoke (tests/dispatch/test_api_keys.py)
    "dispatch:api_key_list":   Row(LOGIN, 403,  200,  200,  200,  403,  None,     None),
    "dispatch:api_key_revoke": Row(405,   405,  405,  405,  405,  405,  "api_key", None),
}
# fmt: on


# --- Walking the URLconf --------------------------------------------------------------------


def _walk(resolver: URLResolver, prefix: str = "", namespace: str | None = None):
    for pattern in resolver.url_patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            ns = pattern.namespace
            yield from _walk(pattern, route, f"{namespace}:{ns}" if namespace and ns else ns or namespace)
        elif isinstance(pattern, URLPattern):
            yield route, pattern, namespace


def _skipped(route: str, pattern: URLPattern) -> bool:
    bare = route.lstrip("^")
    if bare.startswith(("admin/", "static/", "media/")):
        return True
    # DRF's format_suffix_patterns duplicates (`orders.json`, `<drf_format_suffix:format>`).
    return "format" in pattern.pattern.regex.groupindex


def resolver_url_names() -> set[str]:
    names = set()
    for route, pattern, namespace in _walk(get_resolver()):
        if _skipped(route, pattern):
            continue
        if pattern.name is None:
            names.add(f"<unnamed pattern {route!r}>")
        else:
            names.add(f"{namespace}:{pattern.name}" if namespace else pattern.name)
    return names


def test_every_url_pattern_has_a_row_in_the_authz_table():
    names = resolver_url_names()
    missing = sorted(names - EXPECTED.keys())
    stale = sorted(EXPECTED.keys() - names)
    assert not missing, f"URL name(s) without a row in tests/test_authz_matrix.py EXPECTED: {missing}"
    assert not stale, f"EXPECTED has rows for URL names no longer in the URLconf: {stale}"


def test_table_walk_skips_only_admin_static_and_format_suffixes():
    # Guards the skip rule itself: it must not hide a real portal or API route.
    names = resolver_url_names()
    assert {"dispatch:order_detail", "order-detail", "tracking:dashboard", "healthz"} <= names
    assert not any(name.startswith("admin:") for name in names)


# --- The world: org A's objects and one user per role -----------------------------------------


@dataclass
class World:
    users: dict[str, Any]
    objects: dict[str, Any]


@pytest.fixture
def world(org, other_org, dispatcher, org_admin, other_dispatcher) -> World:
    depot = DepotFactory(organization=org, name=MARKERS["depot"])
    vehicle = VehicleFactory(organization=org, name=MARKERS["vehicle"], depot=depot)
    driver = DriverFactory(
        organization=org,
        user__username="driver-a1",
        user__first_name=MARKERS["driver"],
        user__last_name="Zq",
        default_vehicle=vehicle,
    )
    today = local_today(org.tzinfo)
    contact = ContactFactory(organization=org, name=MARKERS["contact"])
    objects = {
        "depot": depot,
        "vehicle": vehicle,
        "driver": driver,
        "contact": contact,
        "shift": ShiftFactory(driver=driver, date=today),
        "order": OrderFactory(
            organization=org,
            recipient_name=MARKERS["order"],
            external_ref="QX-REF-1",
            depot=depot,
            contact=contact,
        ),
        "plan": PlanFactory(organization=org, depot=depot),
        "route": RouteFactory(organization=org, depot=depot, driver=driver, vehicle=vehicle, date=today),
    }
    objects["stop"] = StopFactory(
        route=objects["route"], order=OrderFactory(organization=org, depot=depot), sequence=1
    )
    objects["alert"] = Alert.objects.create(
        organization=org, kind=Alert.Kind.FAILED, key="failed:stop:test", message="Stop 1 failed",
        route=objects["route"], stop=objects["stop"], driver=driver, raised_at=timezone.now(),
    )  # fmt: skip
    objects["tracker"], _key = tracker_device_create(driver=driver, name="Traccar", by=dispatcher)
    objects["webhook"] = WebhookEndpoint.objects.create(
        organization=org, url="https://hooks.example.com/a", secret="whsec_" + "A" * 44
    )
    objects["webhook_delivery"] = Notification.objects.create(
        organization=org, endpoint=objects["webhook"], channel="webhook", event="test", key="webhook:authz",
        subject="webhook.test", body="{}", created_at=timezone.now(),
    )  # fmt: skip
    objects["api_key"], _raw = api_key_create(organization=org, name="Shop", by=org_admin)
    slot_start = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(12), tzinfo=org.tzinfo)
    objects["customer_request"] = CustomerRequest.objects.create(
        organization=org, order=objects["order"], kind=CustomerRequest.Kind.WINDOW,
        window_start=slot_start, window_end=slot_start + dt.timedelta(hours=4), created_at=timezone.now(),
    )  # fmt: skip
    delivered = StopFactory(
        route=objects["route"], order=OrderFactory(organization=org, depot=depot), sequence=2,
        status=Stop.Status.COMPLETED,
    )  # fmt: skip
    objects["proof"] = _proof(delivered, driver)
    objects["photo"] = objects["proof"].photos.get()
    # The delivered order's customer link (its proof is what the public photo routes show).
    objects["token"] = link_token(tracking_link_ensure(order=delivered.order))
    # Org B has its own fleet too, so "B sees nothing of A" is not just "B sees nothing".
    DepotFactory(organization=other_org, name="Bravo depot")
    OrderFactory(organization=other_org, recipient_name="Bravo recipient")
    users = {
        "anonymous": None,
        "driver": driver.user,
        "dispatcher_a": dispatcher,
        "org_admin_a": org_admin,
        "dispatcher_b": other_dispatcher,
        "staff_no_org": UserFactory(username="root", is_staff=True, is_superuser=True),
    }
    return World(users=users, objects=objects)


def _proof(stop, driver):
    """A real proof with a photo and a signature, captured by the world's driver."""
    image = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(image, format="PNG")
    prepared = pod_services.proof_prepare(
        stop=stop, outcome="delivered", photos=[ContentFile(image.getvalue(), name="p.png")],
        signature=ContentFile(image.getvalue(), name="s.png"), recipient_name="Q",
    )  # fmt: skip
    return pod_services.proof_record(
        prepared=prepared, stop=stop, key=uuid.uuid4(), by=driver.user, captured_at=timezone.now()
    )


def _kwargs(obj: str | None, world: World) -> dict[str, Any]:
    if obj is None:
        return {}
    if obj == "reset":
        return {"uidb64": "MQ", "token": "not-a-valid-token"}
    if obj in ("route_id", "stop_id", "driver_id"):  # these routes name their id
        return {obj: world.objects[obj.removesuffix("_id")].pk}
    if obj in ("photo", "proof"):  # proof files are addressed by an unguessable id
        return {"public_id": world.objects[obj].public_id}
    if obj == "token":
        return {"token": world.objects["token"]}
    if obj == "track_photo":
        return {"token": world.objects["token"], "public_id": world.objects["photo"].public_id}
    return {"pk": world.objects[obj].pk}


def _client_as(client, world: World, role: str):
    user = world.users[role]
    if user is not None:
        client.force_login(user)
    return client


def _assert_outcome(response, expected: int | str, url: str) -> None:
    if expected == LOGIN:
        assert response.status_code == 302, response.status_code
        assert response["Location"].startswith(reverse("login") + "?next="), response["Location"]
    elif expected == APP:
        assert response.status_code == 302, response.status_code
        assert response["Location"] == reverse("tracking:driver_home")
    else:
        assert response.status_code == expected, f"GET {url}: {response.status_code}, expected {expected}"


# --- The matrix: one test per (route × role) cell -----------------------------------------------

CELLS = [pytest.param(name, role, id=f"{name}-{role}") for name in EXPECTED for role in ROLES]


@pytest.mark.parametrize(("name", "role"), CELLS)
def test_get_cell(client, world, name, role):
    row = EXPECTED[name]
    expected = getattr(row, role)
    url = reverse(name, kwargs=_kwargs(row.obj, world))

    response = _client_as(client, world, role).get(url)

    _assert_outcome(response, expected, url)
    content = b"".join(response.streaming_content) if response.streaming else response.content
    body = content.decode(errors="replace")
    if role == "dispatcher_b" and response.status_code == 200:
        leaked = [marker for marker in MARKERS.values() if marker in body]
        assert not leaked, f"GET {url} as org B's dispatcher shows org A's {leaked}"
    if role in ("dispatcher_a", "org_admin_a") and row.shows:
        assert MARKERS[row.shows] in body, f"GET {url} does not show org A's {row.shows}"


# --- Unsafe methods on org A's objects ------------------------------------------------------------


def _snapshot() -> dict[str, list[dict]]:
    models = [
        Order, Contact, Driver, Shift, Vehicle, Depot, StopEvent, Plan, Route, Stop, Alert, TrackerDevice,
        CustomerRequest, get_user_model(),
    ]  # fmt: skip
    return {m.__name__: list(m.objects.order_by("pk").values()) for m in models}


def _order_form(world: World) -> dict[str, Any]:
    order = world.objects["order"]
    return {
        "kind": "delivery",
        "recipient_name": "Changed by someone",
        "address": "Somewhere else 1",
        "service_date": order.service_date.isoformat(),
        "service_minutes": 7,
        "parcels": 2,
        "priority": "normal",
        "version": order.version,
    }


# (url name, object, method, form/JSON data); every one of these changes org A's data when
# org A's dispatcher sends it (see test_unsafe_request_by_owner_changes_data).
PORTAL = ("dispatch:", "tracking:")  # HTML pages (the rest of UNSAFE is the API)
UNSAFE = {
    "dispatch:order_edit": ("order", "post", _order_form),
    "dispatch:order_cancel": ("order", "post", lambda w: {"reason": "rival"}),
    "dispatch:contact_edit": (
        "contact",
        "post",
        lambda w: {"name": "Changed", "address": "Elsewhere 2", "default_service_minutes": 5},
    ),
    "dispatch:driver_edit": (
        "driver",
        "post",
        lambda w: {"first_name": "Changed", "is_active": "on"},
    ),
    "dispatch:shift_create": (
        "driver",
        "post",
        # A day without a shift yet: the world's driver already has one today.
        lambda w: {
            "date": (w.objects["shift"].date + dt.timedelta(days=30)).isoformat(),
            "start": "08:00",
            "end": "16:00",
            "break_minutes": 0,
        },
    ),
    "dispatch:shift_edit": (
        "shift",
        "post",
        lambda w: {
            "date": w.objects["shift"].date.isoformat(),
            "start": "10:00",
            "end": "19:00",
            "break_minutes": 0,
        },
    ),
    "dispatch:shift_delete": ("shift", "post", lambda w: {}),
    "dispatch:vehicle_edit": (
        "vehicle",
        "post",
        lambda w: {"name": "Changed van", "capacity": 12, "is_active": "on"},
    ),
    "dispatch:depot_edit": (
        "depot",
        "post",
        lambda w: {"name": "Changed depot", "address": "Elsewhere 3", "lat": 52.5, "lng": 13.4},
    ),
    "dispatch:plan_cancel": ("plan", "post", lambda w: {}),
    "dispatch:route_lock": ("route", "post", lambda w: {"locked": "1"}),
    "dispatch:stop_move": ("stop", "post", lambda w: {"direction": "down"}),
    "dispatch:stop_remove": ("stop", "post", lambda w: {}),
    "tracking:alert_acknowledge": ("alert", "post", lambda w: {}),
    "tracking:driver_tracker_revoke": ("tracker", "post", lambda w: {}),
    "tracking:customer_request_decide": ("customer_request", "post", lambda w: {"decision": "decline"}),
    "order-detail": ("order", "patch", lambda w: {"recipient_name": "Changed by API"}),
    "order-cancel": ("order", "post", lambda w: {"reason": "rival"}),
    "depot-detail": ("depot", "patch", lambda w: {"name": "Changed by API"}),
    "contact-detail": ("contact", "patch", lambda w: {"notes": "Changed by API"}),
    "shift-detail": ("shift", "patch", lambda w: {"break_minutes": 15}),
}

# What each non-owner gets for an unsafe request to org A's object.
UNSAFE_EXPECTED = {
    "dispatcher_b": {"html": 404, "api": 404},
    "driver": {"html": 403, "api": 403},
    "staff_no_org": {"html": 403, "api": 403},
    "anonymous": {"html": LOGIN, "api": 401},
}

UNSAFE_CELLS = [pytest.param(name, role, id=f"{name}-{role}") for name in UNSAFE for role in UNSAFE_EXPECTED]


def _send_unsafe(client, world: World, name: str):
    obj, method, data = UNSAFE[name]
    url = reverse(name, kwargs={"pk": world.objects[obj].pk})
    if name.startswith(PORTAL):
        return getattr(client, method)(url, data(world)), url
    return getattr(client, method)(url, data(world), content_type="application/json"), url


@pytest.mark.parametrize(("name", "role"), UNSAFE_CELLS)
def test_unsafe_request_by_non_owner_is_refused_and_changes_nothing(client, world, name, role):
    kind = "html" if name.startswith(PORTAL) else "api"
    client = _client_as(client, world, role)  # logging in writes last_login: do it first
    before = _snapshot()

    response, url = _send_unsafe(client, world, name)

    _assert_outcome(response, UNSAFE_EXPECTED[role][kind], url)
    assert _snapshot() == before


@pytest.mark.parametrize("name", list(UNSAFE))
def test_unsafe_request_by_owner_changes_data(client, world, name):
    # The positive control: proves the refusals above are about who asks, not about bad input.
    client = _client_as(client, world, "dispatcher_a")
    before = _snapshot()

    response, _ = _send_unsafe(client, world, name)

    assert response.status_code in (200, 302), response.content[:2000]
    assert _snapshot() != before
