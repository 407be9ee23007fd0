"""Django's PostgreSQL backend, whose per-request health check (CONN_HEALTH_CHECKS) costs no
round trip while the connection is quiet.

Django checks a persistent connection before a request's first query by running ``SELECT 1``:
on a dashboard poll or a GPS upload that was one statement in four. A connection that
PostgreSQL has closed (a restart, ``pg_terminate_backend``, an idle timeout) always has
something to read: the server's FATAL message and the end of the stream. So when the socket has
nothing to read, the connection is as good as the ``SELECT 1`` would have found it, and the
check is skipped; when it has, Django's own check runs and reconnects if it fails. A server
that vanished without closing the socket is caught by neither before the first query.
"""

import select

import psycopg
from django.db.backends.postgresql.base import DatabaseWrapper as PostgresDatabaseWrapper


class DatabaseWrapper(PostgresDatabaseWrapper):
    def close_if_health_check_failed(self):
        if (
            self.connection is not None
            and self.health_check_enabled
            and not self.health_check_done
            and _nothing_to_read(self.connection)
        ):
            self.health_check_done = True
            return
        super().close_if_health_check_failed()


def _nothing_to_read(connection) -> bool:
    """True when the psycopg connection is idle (outside any transaction) and its socket has no
    pending input, error or hang-up."""
    if connection.closed or connection.broken or not hasattr(select, "poll"):
        return False
    try:
        if connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            return False
        poller = select.poll()
        poller.register(connection.fileno(), select.POLLIN | select.POLLPRI)
        return not poller.poll(0)
    except (OSError, ValueError, psycopg.Error):  # no usable socket: let Django's check decide
        return False
