"""Deployment configuration: check --deploy (CFG-1), security headers (CFG-2), CSRF (CFG-3),
login lockout (CFG-5), /healthz, and the django-q2 configuration guard (JOB-4)."""

import os
import re
import secrets
import subprocess
import sys

import pytest
from django.conf import settings
from django.db.utils import OperationalError
from django.test import Client
from django.urls import reverse

from config import health
from dispatch.models import Contact, Order
from tests.factories import OrderFactory

PASSWORD = "correct-horse-battery"  # tests.factories.UserFactory's password

# --- CFG-1: manage.py check --deploy -------------------------------------------------------------

# Variables settings.py reads that could weaken a production run; the test sets its own.
_SECURITY_ENV = {
    "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_PRELOAD", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "BEHIND_PROXY",
    "DJANGO_ALLOW_ASYNC_UNSAFE",
}  # fmt: skip


def _check_deploy(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in _SECURITY_ENV}
    clean.update(DJANGO_SETTINGS_MODULE="config.settings", **env)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=settings.BASE_DIR,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_passes_with_production_environment():
    result = _check_deploy(
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="doorstep.example.com",
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNINGS" not in output, output


def test_check_deploy_fails_on_the_development_secret_key():
    # Proves the check above can go red: without SECRET_KEY the insecure default is flagged.
    result = _check_deploy(DEBUG="false", ALLOWED_HOSTS="doorstep.example.com")

    assert result.returncode != 0
    assert "security.W009" in result.stdout + result.stderr


# --- CFG-2: security headers ---------------------------------------------------------------------


def _csp(response) -> dict[str, list[str]]:
    policy = {}
    for part in response["Content-Security-Policy"].split(";"):
        words = part.split()
        if words:
            policy[words[0]] = words[1:]
    return policy


@pytest.fixture
def responses(client, dispatcher):
    """A portal page, the login page and an API endpoint, as a browser would get them."""
    login_page = client.get(reverse("login"))
    client.force_login(dispatcher)
    return {
        "portal": client.get(reverse("dispatch:order_list")),
        "login": login_page,
        "api": client.get("/api/v1/orders/"),
    }


@pytest.mark.parametrize("page", ["portal", "login", "api"])
def test_csp_is_enforced_and_strict(responses, page):
    response = responses[page]
    assert response.status_code == 200
    assert "Content-Security-Policy-Report-Only" not in response
    policy = _csp(response)

    assert policy["default-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    for directive in ("script-src", "style-src"):
        sources = policy.get(directive, policy["default-src"])
        assert "'unsafe-inline'" not in sources and "'unsafe-eval'" not in sources, directive


@pytest.mark.parametrize("page", ["portal", "login", "api"])
def test_security_headers_are_set(responses, page):
    response = responses[page]

    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"


def test_portal_page_denies_geolocation_and_camera(responses):
    features = dict(
        item.strip().split("=", 1) for item in responses["portal"]["Permissions-Policy"].split(",")
    )

    assert features["geolocation"] == "()"
    assert features["camera"] == "()"


def test_https_responses_carry_hsts_for_a_year_with_subdomains(client):
    response = client.get(reverse("login"), secure=True)

    hsts = response["Strict-Transport-Security"]
    max_age = int(re.search(r"max-age=(\d+)", hsts).group(1))
    assert max_age >= 31536000
    assert "includeSubDomains" in hsts


# --- CFG-3: CSRF ---------------------------------------------------------------------------------


@pytest.fixture
def csrf_client(dispatcher):
    client = Client(enforce_csrf_checks=True)
    client.force_login(dispatcher)
    return client


def _form_token(client: Client, url: str) -> str:
    html = client.get(url).content.decode()
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)


def _order_form(**extra) -> dict:
    return {
        "kind": "delivery",
        "recipient_name": "CSRF Recipient",
        "address": "Skalitzer Straße 1, 10999 Berlin",
        "service_date": "2026-11-25",
        "service_minutes": 5,
        "parcels": 1,
        "priority": "normal",
        **extra,
    }


def test_order_create_without_csrf_token_is_403(csrf_client):
    response = csrf_client.post(reverse("dispatch:order_create"), _order_form())

    assert response.status_code == 403
    assert not Order.objects.exists()


def test_order_create_with_csrf_token_from_the_form_succeeds(csrf_client):
    token = _form_token(csrf_client, reverse("dispatch:order_create"))

    response = csrf_client.post(reverse("dispatch:order_create"), _order_form(csrfmiddlewaretoken=token))

    assert response.status_code == 302
    assert Order.objects.get().recipient_name == "CSRF Recipient"


def test_order_cancel_needs_csrf_token(csrf_client, org):
    order = OrderFactory(organization=org)
    url = reverse("dispatch:order_cancel", args=[order.pk])

    refused = csrf_client.post(url, {"reason": "no token"})
    order.refresh_from_db()
    assert (refused.status_code, order.status) == (403, Order.Status.NEW)

    token = _form_token(csrf_client, order.get_absolute_url())
    accepted = csrf_client.post(url, {"reason": "with token", "csrfmiddlewaretoken": token})
    order.refresh_from_db()
    assert (accepted.status_code, order.status) == (302, Order.Status.CANCELLED)


def test_contact_create_needs_csrf_token(csrf_client):
    url = reverse("dispatch:contact_create")
    data = {"name": "Ada", "address": "Adalbertstraße 1", "default_service_minutes": 5}

    refused = csrf_client.post(url, data)
    assert refused.status_code == 403
    assert not Contact.objects.exists()

    accepted = csrf_client.post(url, {**data, "csrfmiddlewaretoken": _form_token(csrf_client, url)})
    assert accepted.status_code == 302
    assert Contact.objects.get().name == "Ada"


def test_api_order_create_with_session_needs_csrf_token(csrf_client):
    payload = {"recipient_name": "API", "address": "Oranienstraße 9", "service_date": "2026-11-25"}

    refused = csrf_client.post("/api/v1/orders/", payload, content_type="application/json")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    assert not Order.objects.exists()

    csrf_client.get(reverse("dispatch:order_list"))  # a portal page sets the csrftoken cookie
    accepted = csrf_client.post(
        "/api/v1/orders/",
        payload,
        content_type="application/json",
        headers={"X-CSRFToken": csrf_client.cookies[settings.CSRF_COOKIE_NAME].value},
    )
    assert accepted.status_code == 201
    assert Order.objects.get().recipient_name == "API"


def test_portal_pages_hand_htmx_the_csrf_token(csrf_client):
    # htmx sends X-CSRFToken from <body hx-headers>; the cookie is HttpOnly.
    html = csrf_client.get(reverse("dispatch:order_list")).content.decode()

    assert re.search(r"<body hx-headers='\{\"X-CSRFToken\": \"[A-Za-z0-9]{64}\"\}'", html)


# --- CFG-5: login lockout (django-axes) ----------------------------------------------------------


def _login(client: Client, username: str, password: str):
    return client.post(reverse("login"), {"username": username, "password": password})


def _logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def test_five_failed_logins_lock_the_username_from_that_address(dispatcher):
    client = Client(REMOTE_ADDR="203.0.113.7")
    for _ in range(4):
        assert _login(client, "disp", "wrong").status_code == 200
    _login(client, "disp", "wrong")

    response = _login(client, "disp", PASSWORD)

    assert response.status_code == 429
    assert "Too many failed log-ins" in response.content.decode()
    assert not _logged_in(client)


def test_four_failed_logins_do_not_lock(dispatcher):
    client = Client(REMOTE_ADDR="203.0.113.7")
    for _ in range(4):
        _login(client, "disp", "wrong")

    response = _login(client, "disp", PASSWORD)

    assert response.status_code == 302
    assert _logged_in(client)


def test_lockout_does_not_lock_another_username_from_the_same_address(dispatcher, org_admin):
    attacker = Client(REMOTE_ADDR="203.0.113.7")
    for _ in range(6):
        _login(attacker, "disp", "wrong")

    response = _login(attacker, "orgadmin", PASSWORD)

    assert response.status_code == 302
    assert _logged_in(attacker)


def test_lockout_does_not_lock_the_same_username_from_another_address(dispatcher):
    attacker = Client(REMOTE_ADDR="203.0.113.7")
    for _ in range(6):
        _login(attacker, "disp", "wrong")
    owner = Client(REMOTE_ADDR="198.51.100.20")

    response = _login(owner, "disp", PASSWORD)

    assert response.status_code == 302
    assert _logged_in(owner)


def _token(client: Client, password: str):
    return client.post(
        "/api/v1/auth/token/",
        {"username": "disp", "password": password},
        content_type="application/json",
    )


def test_token_endpoint_failures_count_towards_the_lockout(dispatcher):
    client = Client(REMOTE_ADDR="203.0.113.8")
    for _ in range(4):
        assert _token(client, "wrong").status_code == 400
    _token(client, "wrong")  # the fifth failure locks

    response = _token(client, PASSWORD)

    assert "token" not in response.json()


def test_locked_out_token_request_is_told_it_is_locked_out(dispatcher):
    # A right password refused as "Unable to log in with provided credentials" sends the user
    # hunting for a typo; the portal says "too many attempts" with 429, so must the API.
    client = Client(REMOTE_ADDR="203.0.113.8")
    for _ in range(5):
        _token(client, "wrong")

    response = _token(client, PASSWORD)

    assert response.status_code == 429


# --- /healthz ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_healthz_reports_database_and_broker_ok(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["database"], body["task_broker"]) == ("ok", "ok", "ok")
    assert "no-cache" in response["Cache-Control"]


class _UnreachableConnection:
    def cursor(self):
        raise OperationalError("could not connect to server: Connection refused")


@pytest.mark.django_db
def test_healthz_is_503_naming_the_database_when_it_is_unreachable(client, monkeypatch):
    monkeypatch.setattr(health, "connection", _UnreachableConnection())

    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert "database" in body["down"]
    assert body["database"] == "down"


class _BrokenQueue:
    class objects:  # noqa: N801 - stands in for OrmQ.objects
        @staticmethod
        def count():
            raise OperationalError("no such table: django_q_ormq")


@pytest.mark.django_db
def test_healthz_is_503_naming_the_task_broker_when_it_fails(client, monkeypatch):
    monkeypatch.setattr(health, "OrmQ", _BrokenQueue)

    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["down"] == ["task broker"]
    assert (body["database"], body["task_broker"]) == ("ok", "down")


@pytest.mark.django_db
def test_healthz_is_exempt_from_the_https_redirect(client, settings):
    settings.SECURE_SSL_REDIRECT = True

    assert client.get("/healthz").status_code == 200
    assert client.get(reverse("login")).status_code == 301


# --- JOB-4: django-q2 configuration guard --------------------------------------------------------


def _clusters() -> list[tuple[str, dict]]:
    main = settings.Q_CLUSTER
    alt = main.get("ALT_CLUSTERS", {})
    return [("Q_CLUSTER", main)] + [(f"ALT_CLUSTERS[{name}]", {**main, **c}) for name, c in alt.items()]


@pytest.mark.parametrize(("name", "cluster"), _clusters(), ids=[name for name, _ in _clusters()])
def test_task_cluster_config_never_loses_or_doubles_tasks(name, cluster):
    # The ORM broker keeps a killed worker's task; Redis loses it (RELIABILITY JOB-4).
    assert cluster.get("orm") == "default", name
    assert not cluster.get("redis") and not cluster.get("broker_class"), name
    assert cluster.get("timeout"), f"{name}: timeout must be set"
    assert cluster["retry"] >= cluster["timeout"] + 30, f"{name}: retry must exceed timeout + 30 s"
    assert cluster.get("max_attempts", 0) >= 1, name
    assert cluster.get("catch_up") is False, name


def test_task_schedules_run_in_a_named_time_zone():
    # Daily jobs run once per local day (TZ-4), so the cluster's zone must be explicit.
    assert settings.Q_CLUSTER.get("time_zone")
