"""Django's database sessions (``dispatch.sessions.db``) and cached database sessions
(``dispatch.sessions.cached_db``, with Redis), stored as dispatch.models.UserSession: the
session row also holds the signed-in user's id, so one plain statement reads the session and,
joined to it, the user with his membership and organisation. Every signed-in request needs
both; Django read them in two queries, each of which the ORM took longer to build and compile
than the database took to answer. Writing, expiry and clearing are Django's own.

The member row read with the session is offered to MemberBackend by
MemberAuthenticationMiddleware (dispatch.middleware), only while it asks Django for the
request's user, and only for the user the session names.
"""

import functools
import logging

from django.conf import settings
from django.contrib.auth import SESSION_KEY, get_user_model
from django.core.cache import caches
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from dispatch.sqlrows import column, from_rows, select_list, table

logger = logging.getLogger(__name__)


@functools.cache
def _session_sql() -> str:
    from dispatch.auth_backends import member_select
    from dispatch.models import UserSession

    User = get_user_model()
    member_columns, member_joins = member_select()
    user_pk, session_user = column(User, User._meta.pk.name), column(UserSession, "user")
    return (
        f"SELECT {select_list(UserSession, 's')}, {', '.join(member_columns)} FROM {table(UserSession)} s "
        f"LEFT JOIN {table(User)} u ON u.{user_pk} = s.{session_user} {member_joins} "
        f"WHERE s.{column(UserSession, 'session_key')} = %s AND s.{column(UserSession, 'expire_date')} > %s"
    )


def _user_pk(data: dict):
    """The pk of the user the session data names (Django's SESSION_KEY), or None."""
    value = data.get(SESSION_KEY)
    if value is None:
        return None
    try:
        return get_user_model()._meta.pk.to_python(value)
    except ValidationError:
        return None


class MemberSessionStore:
    """Mixed into Django's db and cached_db SessionStore, same answers: the model is UserSession,
    each save writes the user's id beside the data, and a read from the database keeps the
    member row it fetched with the session in `member_row`, as (user pk, row or None)."""

    member_row: tuple | None = None

    @classmethod
    def get_model_class(cls):
        from dispatch.models import UserSession

        return UserSession

    def create_model_instance(self, data):
        instance = super().create_model_instance(data)
        instance.user_id = _user_pk(data)
        return instance

    async def acreate_model_instance(self, data):  # Django's builds the row itself
        instance = await super().acreate_model_instance(data)
        instance.user_id = _user_pk(data)
        return instance

    def _get_session_from_db(self):
        from dispatch.models import UserSession

        self.member_row = None
        with connection.cursor() as cursor:
            now = connection.ops.adapt_datetimefield_value(timezone.now())
            cursor.execute(_session_sql(), [self.session_key, now])
            row = cursor.fetchone()
        if row is None:
            self._session_key = None
            return None
        width = len(UserSession._meta.concrete_fields)
        session = from_rows(row[:width], UserSession)[0]
        if session.user_id is not None:
            member = tuple(row[width:])
            User = get_user_model()
            pk_index = [f.column for f in User._meta.concrete_fields].index(User._meta.pk.column)
            found = member[pk_index] is not None  # NULL: the user is gone
            self.member_row = (session.user_id, member if found else None)
        return session


def forget_cached_copy(sender, instance, **kwargs) -> None:
    """post_delete of a UserSession (connected in dispatch.apps): a session deleted as a row (by
    an admin, with its user, by the hourly purge) is not served on from its cached_db copy in
    Redis. Dropped now and again at commit, when a request that read the row before may have
    cached it again."""
    if not settings.SESSION_ENGINE.endswith("cached_db") or instance.expire_date <= timezone.now():
        return  # no copy, or one that timed out with the session (the hourly purge's rows)
    from django.contrib.sessions.backends.cached_db import KEY_PREFIX

    cache, key = caches[settings.SESSION_CACHE_ALIAS], KEY_PREFIX + instance.session_key

    def drop() -> None:
        try:
            cache.delete(key)
        except Exception:  # Redis unreachable: nothing is served from it meanwhile either
            logger.error("session cache unreachable; could not drop the copy of a deleted session")

    drop()
    transaction.on_commit(drop)
