"""Django's database sessions (``dispatch.sessions.db``) and cached database sessions
(``dispatch.sessions.cached_db``, with Redis), reading the session row in one plain statement:
every signed-in request reads it, and the ORM took longer to build and compile that query than
the database took to answer it. Writing, expiry and clearing are Django's own."""

import functools

from django.contrib.sessions.models import Session
from django.db import connection
from django.utils import timezone

from dispatch.sqlrows import column, from_rows, select_list, table


@functools.cache
def _session_sql() -> str:
    return (
        f"SELECT {select_list(Session, 's')} FROM {table(Session)} s "
        f"WHERE s.{column(Session, 'session_key')} = %s AND s.{column(Session, 'expire_date')} > %s"
    )


class PlainSessionRead:
    """Replaces django.contrib.sessions.backends.db.SessionStore's ORM read, same answers: the
    unexpired row, or None and the key forgotten (a new session is made if one is saved)."""

    def _get_session_from_db(self):
        with connection.cursor() as cursor:
            now = connection.ops.adapt_datetimefield_value(timezone.now())
            cursor.execute(_session_sql(), [self.session_key, now])
            row = cursor.fetchone()
        if row is None:
            self._session_key = None
            return None
        return from_rows(row, Session)[0]
