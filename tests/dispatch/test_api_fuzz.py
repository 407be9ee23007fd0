"""API-1: schemathesis fuzzes every operation of /api/schema/ in-process with an API key.

No 5xx and no answer that breaks the schema (status code, content type, headers, body). It
runs in both CI phases (SQLite, PostgreSQL); examples per operation are bounded so the whole
test stays under a minute on two cores: raise FUZZ_EXAMPLES locally for a deeper run.
"""

import datetime as dt
import os

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi import checks

from dispatch import services
from dispatch.models import Contact, Depot, Driver, Order, Plan, Route, Shift
from tests.factories import (
    ContactFactory,
    DepotFactory,
    DriverFactory,
    OrderFactory,
    PlanFactory,
    RouteFactory,
    ShiftFactory,
    StopFactory,
    VehicleFactory,
)
from tracking import webhook_http, webhooks
from tracking.models import WebhookEndpoint

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "8"))
# Not the key's to call: the token log-in (its own throttle and lockout), the customer's public
# JSON (a token, no key) and the tracker protocol (a device key); the driver endpoints are
# covered once each by test_api_keys (a key gets 403 there).
SKIPPED = ("/api/v1/auth/", "/api/v1/track/", "/api/v1/tracker/", "/api/v1/driver/")
# Not about the schema holding: whether business rules refuse schema-valid input (an unknown
# depot id, a plan for a day without shifts) or a lenient parser accepts a malformed query.
EXCLUDED_CHECKS = [checks.positive_data_acceptance, checks.negative_data_rejection]


@pytest.fixture
def fuzz_world(org, settings, monkeypatch):
    # Webhook URLs are resolved to refuse private addresses: no real DNS for fuzzed host names.
    monkeypatch.setattr(webhook_http, "resolve", lambda host, port: ["93.184.215.14"])
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "api_key": "9999/s", "api_ip": "9999/s",
        },
    }  # fmt: skip
    depot = DepotFactory(organization=org)
    vehicle = VehicleFactory(organization=org, depot=depot)
    driver = DriverFactory(organization=org, depot=depot, default_vehicle=vehicle)
    ShiftFactory(driver=driver)
    route = RouteFactory(organization=org, depot=depot, driver=driver, vehicle=vehicle)
    for n in range(3):
        StopFactory(route=route, order=OrderFactory(organization=org, depot=depot), sequence=n + 1)
    OrderFactory(organization=org, depot=depot, window_start=None, window_end=None)
    PlanFactory(organization=org, depot=depot)
    ContactFactory(organization=org)
    endpoint = webhooks.webhook_endpoint_create(organization=org, url="https://hooks.example.com/doorstep")
    webhooks.webhook_test_send(endpoint=endpoint)  # a delivery in its log, for resend
    return services.api_key_create(organization=org, name="Fuzzer", by=None)[1]


def _existing_ids(org) -> dict[str, int]:
    """An id of the world's own row per collection: half the examples aim at a real object
    (a random id is almost always a 404, and never exercises what answers a found one)."""
    rows = {
        "orders": Order, "routes": Route, "plans": Plan, "drivers": Driver, "shifts": Shift,
        "depots": Depot, "contacts": Contact, "webhooks": WebhookEndpoint,
    }  # fmt: skip
    scoped = {"shifts": {"driver__organization": org}}
    return {
        f"/api/v1/{name}/": model.objects.filter(**scoped.get(name, {"organization": org})).earliest("pk").pk
        for name, model in rows.items()
    }


def _operations(schema):
    for result in schema.get_all_operations():
        operation = result.ok()
        if not operation.path.startswith(SKIPPED):
            yield operation


@pytest.fixture
def wsgi_app():
    """A handler made now, so its middleware sees the test settings (no HTTPS redirect). Like
    Django's test client, keep the test's connection open across requests: it holds the
    test's transaction (and, on SQLite, its in-memory data)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield get_wsgi_application()
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.mark.django_db
def test_every_operation_answers_within_its_schema(fuzz_world, wsgi_app, org):
    started = dt.datetime.now()
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", wsgi_app)
    headers = {"Authorization": f"Bearer {fuzz_world}"}
    ids = _existing_ids(org)
    failures, covered = [], []
    # DELETEs last: one aimed at a world row would leave the later operations nothing to find.
    for operation in sorted(_operations(schema), key=lambda op: op.method.upper() == "DELETE"):
        covered.append(operation.label)
        existing_id = ids.get(operation.path.split("{")[0])
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode), aim=st.booleans())
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def run(case, aim):
                # run() is called within this iteration, so the loop variable is the right one.
                if aim and existing_id is not None and "id" in (case.path_parameters or {}):  # noqa: B023
                    case.path_parameters["id"] = existing_id  # noqa: B023
                case.call_and_validate(headers=headers, excluded_checks=EXCLUDED_CHECKS)

            try:
                run()
            except (Exception, BaseExceptionGroup) as exc:  # collect every finding, report them all
                failures.append(f"{operation.label} [{mode.value}]: {str(exc)[:1500]}")
    assert len(covered) >= 20, covered
    assert not failures, "\n\n".join(failures)
    # Keep CI bounded (two runs on two cores): a slower fuzz run needs fewer examples.
    assert dt.datetime.now() - started < dt.timedelta(seconds=120)
