"""AUTHZ-4: authorisation fuzzed from the OpenAPI schema, with two principals.

What runs, and why not schemathesis' own two-principal checks: in schemathesis 4.32,
`object_level_authorization` needs an `[auth.wfc]` document naming several users plus the
stateful run's pool of values (which peer made which object), and `use_after_free` needs the
stateful phase's links; in the in-process `as_strategy` loop (test_api_fuzz.py) both return
without checking anything, and a stateful CLI run against a live server takes minutes. So:

- every operation of /api/schema/ (drf-spectacular's generator, walked at collection: a new
  operation is a new test) is sent by the *other* principal at org A's objects: org B's API key
  for the integration endpoints, a driver of org B and another driver of org A for the driver
  endpoints. With an id in the path: a 404 exactly like an id that does not exist (no existence
  leak); without: nothing of A in the answer. Org A's rows never change. The owner then sends the
  same request and is not refused with 404 (the id was real: the test can fail);
- schemathesis' `ignored_auth` runs in-process on every operation that declares security: no
  credentials and invalid credentials are refused (401/403) where the right principal succeeds.
"""

import datetime as dt
import json
import re
import uuid

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given, settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from schemathesis.specs.openapi.checks import ignored_auth

from dispatch import services
from dispatch.models import Contact, Depot, Driver, Order, Plan, Route, Shift, Stop, StopEvent
from pod.models import ProofOfDelivery
from tests.factories import (
    ContactFactory,
    DepotFactory,
    DriverFactory,
    OrderFactory,
    PlanFactory,
    RouteFactory,
    ShiftFactory,
    StopFactory,
)
from tracking import webhook_http, webhooks
from tracking.models import DriverAction, LocationPing, Notification, WebhookEndpoint

NOW = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)  # 11:00 in Berlin on the factories' day
AT = "2026-11-24T10:55:00+01:00"
MARKER = "ALPHA-SECRET"  # in org A's names: it must never show in another principal's answer

pytestmark = [pytest.mark.django_db]

# Not a principal's to call: the log-in, the customer's public JSON (the token is the key) and
# the tracker protocol (a device key); each has its own tests.
PUBLIC = ("/api/v1/auth/", "/api/v1/track/", "/api/v1/tracker/")
# Which of org A's objects a path parameter names. An operation whose parameter is not here
# fails test_every_path_parameter_names_a_known_object: add its row.
RESOURCES = {
    r"^/api/v1/orders/\{id\}/": "order",
    r"^/api/v1/routes/\{id\}/": "route",
    r"^/api/v1/plans/\{id\}/": "plan",
    r"^/api/v1/drivers/\{id\}/": "driver",
    r"^/api/v1/shifts/\{id\}/": "shift",
    r"^/api/v1/depots/\{id\}/": "depot",
    r"^/api/v1/contacts/\{id\}/": "contact",
    r"^/api/v1/webhooks/\{id\}/": "webhook",
    r"^/api/v1/driver/stops/\{stop_id\}/": "stop",
    r"^/api/v1/driver/routes/\{route_id\}/": "route",
}
# Bodies the owner's request would succeed with, so a refusal is the authorisation's, not the
# validation's. `{delivery}` is org A's webhook delivery.
BODIES = {
    ("PATCH", "/api/v1/orders/{id}/"): {"recipient_name": "Hijacked"},
    ("POST", "/api/v1/orders/{id}/cancel/"): {"reason": "rival"},
    ("PATCH", "/api/v1/shifts/{id}/"): {"break_minutes": 30},
    ("PATCH", "/api/v1/depots/{id}/"): {"name": "Hijacked"},
    ("PATCH", "/api/v1/contacts/{id}/"): {"name": "Hijacked"},
    ("PUT", "/api/v1/webhooks/{id}/"): {"url": "https://hooks.example.com/hijack"},
    ("PATCH", "/api/v1/webhooks/{id}/"): {"url": "https://hooks.example.com/hijack"},
    ("POST", "/api/v1/webhooks/{id}/resend/"): {"delivery": "{delivery}"},
    ("POST", "/api/v1/driver/stops/{stop_id}/events/"): {"uuid": "{uuid}", "kind": "arrived", "at": AT},
    ("POST", "/api/v1/driver/routes/{route_id}/events/"): {"uuid": "{uuid}", "kind": "start", "at": AT},
    ("POST", "/api/v1/driver/stops/{stop_id}/pod/"): {
        "uuid": "{uuid}",
        "kind": "failed",
        "reason": "not_home",
        "at": AT,
    },  # fmt: skip
}
MULTIPART = {("POST", "/api/v1/driver/stops/{stop_id}/pod/")}


def _operations() -> list[tuple[str, str]]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return [
        (method.upper(), path)
        for path, item in schema["paths"].items()
        if not path.startswith(PUBLIC)
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    ]


OPERATIONS = _operations()


def _resource(path: str) -> str | None:
    return next((name for pattern, name in RESOURCES.items() if re.match(pattern, path)), None)


@pytest.fixture(autouse=True)
def _frozen_now(time_machine):
    time_machine.move_to(NOW, tick=False)


@pytest.fixture
def world(org, other_org, monkeypatch):
    """Org A's objects (each named with MARKER), its driver A1 on today's published route, and
    the other principals: org B's key, a driver of org B, another driver (A2) of org A."""
    monkeypatch.setattr(webhook_http, "resolve", lambda host, port: ["93.184.215.14"])
    depot = DepotFactory(organization=org, name=f"{MARKER} depot")
    driver = DriverFactory(organization=org, depot=depot, user__first_name=MARKER)
    route = RouteFactory(organization=org, depot=depot, driver=driver, status=Route.Status.PUBLISHED)
    order = OrderFactory(
        organization=org, depot=depot, recipient_name=f"{MARKER} A", status=Order.Status.ASSIGNED
    )
    stop = StopFactory(route=route, sequence=1, order=order)
    webhook = webhooks.webhook_endpoint_create(
        organization=org, url="https://hooks.example.com/a", description=f"{MARKER} hook"
    )
    objects = {
        "order": OrderFactory(organization=org, depot=depot, recipient_name=f"{MARKER} B"),
        "route": route,
        "stop": stop,
        "plan": PlanFactory(organization=org, depot=depot),
        "driver": driver,
        "shift": ShiftFactory(driver=driver),
        "depot": depot,
        "contact": ContactFactory(organization=org, name=f"{MARKER} contact"),
        "webhook": webhook,
        "delivery": webhooks.webhook_test_send(endpoint=webhook),
    }
    DepotFactory(organization=other_org)  # B has rows of its own: a list of B's is not empty by accident
    return {
        "objects": objects,
        "owner_key": services.api_key_create(organization=org, name="A", by=None)[1],
        "other_key": services.api_key_create(organization=other_org, name="B", by=None)[1],
        "owner_driver": driver,
        "other_drivers": [
            DriverFactory(organization=other_org),
            DriverFactory(organization=org, depot=depot),
        ],
    }


def _client(*, key: str | None = None, driver: Driver | None = None) -> APIClient:
    client = APIClient()
    if key is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    else:
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=driver.user)[0].key}")
    return client


def _state(org) -> list:
    """Every row of org A that an API operation could change."""
    return [
        list(Order.objects.filter(organization=org).order_by("pk").values()),
        list(Stop.objects.filter(route__organization=org).order_by("pk").values()),
        list(StopEvent.objects.filter(organization=org).order_by("pk").values()),
        list(Route.objects.filter(organization=org).order_by("pk").values()),
        list(Plan.objects.filter(organization=org).order_by("pk").values()),
        list(Shift.objects.filter(driver__organization=org).order_by("pk").values()),
        list(Depot.objects.filter(organization=org).order_by("pk").values()),
        list(Contact.objects.filter(organization=org).order_by("pk").values()),
        list(WebhookEndpoint.objects.filter(organization=org).order_by("pk").values()),
        list(Notification.objects.filter(endpoint__organization=org).order_by("pk").values()),
        list(DriverAction.objects.filter(organization_id=org.pk).order_by("pk").values()),
        list(ProofOfDelivery.objects.order_by("pk").values()),
        list(LocationPing.objects.order_by("pk").values()),
    ]


def _send(client: APIClient, method: str, path: str, ids: dict, world: dict):
    url = path
    for name, value in ids.items():
        url = url.replace("{" + name + "}", str(value))
    body = BODIES.get((method, path), {})
    body = json.loads(
        json.dumps(body)
        .replace('"{delivery}"', str(world["objects"]["delivery"].pk))
        .replace("{uuid}", str(uuid.uuid4()))
    )
    fmt = "multipart" if (method, path) in MULTIPART else "json"
    return getattr(client, method.lower())(url, body if method != "GET" else None, format=fmt)


def test_every_path_parameter_names_a_known_object():
    unknown = [f"{m} {p}" for m, p in OPERATIONS if "{" in p and _resource(p) is None]
    assert not unknown, f"add these to RESOURCES in tests/test_authz_schema_walk.py: {unknown}"
    assert len(OPERATIONS) >= 40, OPERATIONS


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_another_principal_gets_nothing_of_org_a(world, org, method, path):
    objects, driver_endpoint = world["objects"], path.startswith("/api/v1/driver/")
    others = (
        [_client(driver=d) for d in world["other_drivers"]]
        if driver_endpoint
        else [_client(key=world["other_key"])]
    )
    params = re.findall(r"\{(\w+)\}", path)
    resource = _resource(path)
    before = _state(org)
    for other in others:
        if params:
            own = _send(other, method, path, dict.fromkeys(params, objects[resource].pk), world)
            unknown = _send(other, method, path, dict.fromkeys(params, 10**9), world)
            assert own.status_code == 404, (own.status_code, own.content)
            assert own.json() == unknown.json()  # the same answer as for nothing: no existence leak
        else:
            response = _send(other, method, path, {}, world)
            assert MARKER not in response.content.decode(), response.content
        assert _state(org) == before
    if params:  # the control: the owner reaches the very same object
        owner = _client(driver=world["owner_driver"]) if driver_endpoint else _client(key=world["owner_key"])
        response = _send(owner, method, path, dict.fromkeys(params, objects[resource].pk), world)
        assert response.status_code != 404 and response.status_code < 500, (
            response.status_code,
            response.content,
        )


@pytest.fixture
def wsgi_app():
    """As in tests/dispatch/test_api_fuzz.py: keep the test's connection (and transaction)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield get_wsgi_application()
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


def test_no_operation_ignores_missing_or_invalid_credentials(world, wsgi_app, settings_fast_throttle):
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", wsgi_app)
    key = {"Authorization": f"Bearer {world['owner_key']}"}
    token = {"Authorization": f"Token {Token.objects.get_or_create(user=world['owner_driver'].user)[0].key}"}
    failures, checked = [], 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.startswith(PUBLIC):
            continue
        checked += 1
        headers = token if operation.path.startswith("/api/v1/driver/") else key

        @given(case=operation.as_strategy())
        @settings(
            max_examples=3,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case):
            # Called within this iteration: `headers` is this operation's.
            case.call_and_validate(headers=headers, checks=[ignored_auth])  # noqa: B023

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(f"{operation.label}: {str(exc)[:800]}")
    assert checked >= 40
    assert not failures, "\n\n".join(failures)


@pytest.fixture
def settings_fast_throttle(settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "api_key": "9999/s", "api_ip": "9999/s",
        },
    }  # fmt: skip
