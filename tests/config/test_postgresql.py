"""config.postgresql: Django's PostgreSQL backend whose health check skips its SELECT 1 while
the connection is quiet, and still reconnects after the server dropped it. Against the real
PostgreSQL of DATABASE_URL (the PostgreSQL + Redis pass of CI)."""

import time

import pytest
from django.db import connection, connections

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL (make test-postgres)"),
]


@pytest.fixture
def persistent():
    """A connection of its own, with the production settings (CONN_MAX_AGE, health checks)."""
    wrapper = connections.create_connection("default")
    assert wrapper.settings_dict["CONN_HEALTH_CHECKS"] and wrapper.settings_dict["CONN_MAX_AGE"] > 0
    yield wrapper
    wrapper.close()


def _last_statement(pid: int) -> str | None:
    """The last statement the server ran for backend `pid`, or None once that backend is gone."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
    return row[0] if row else None


def _next_request(wrapper) -> int:
    """What Django does around a request on a persistent connection, then its first query."""
    wrapper.close_if_unusable_or_obsolete()  # at the request's start: the check is due again
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def test_the_health_check_of_a_quiet_connection_sends_nothing(persistent):
    with persistent.cursor() as cursor:
        cursor.execute("SELECT 'the last request'")
    pid = persistent.connection.info.backend_pid
    persistent.close_if_unusable_or_obsolete()
    persistent.close_if_health_check_failed()  # as the request's first cursor does
    assert persistent.health_check_done
    # Django's own backend would have run SELECT 1 on the server by now.
    assert _last_statement(pid) == "SELECT 'the last request'"
    assert _next_request(persistent) == pid


def test_a_connection_the_server_closed_is_replaced_before_the_requests_first_query(persistent):
    old_pid = _next_request(persistent)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [old_pid])
    deadline = time.monotonic() + 5
    while _last_statement(old_pid) is not None and time.monotonic() < deadline:
        time.sleep(0.05)  # until the server has closed its end
    new_pid = _next_request(persistent)
    assert new_pid != old_pid
