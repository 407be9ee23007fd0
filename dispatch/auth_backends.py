"""The sign-in backend of the portal and the driver app's session, and the one-query user read
that the API's token authentication shares.

With a shared cache (Redis) the session's user row is also kept there for
SIGNED_IN_USER_CACHE_SECONDS, so a signed-in poll need not touch the database. Every save or
delete of a user, a membership or an organisation drops the copies it concerns, in every process
at once, and again when its transaction commits; only a write that bypasses the models' signals
(raw SQL, QuerySet.update) waits out the copy's lifetime. Signing out deletes the session itself.
While Redis is unreachable the row is read from the database, as Django's cached sessions do.
"""

import contextlib
import contextvars
import functools
import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from rest_framework.authtoken.models import Token

from dispatch.models import Driver, Membership, Organization
from dispatch.sqlrows import column, from_rows, select_list, table

logger = logging.getLogger(__name__)


def member_select() -> tuple[list[str], str]:
    """The columns of a member row (the user "u", his membership, its organisation) and the joins
    from "u" that fetch them: what MemberBackend.get_user builds the user from. Also read with the
    session row itself (dispatch.sessions), which then offers it here (offering_member_row)."""
    User = get_user_model()
    user_pk = column(User, User._meta.pk.name)
    selects = [select_list(User, "u"), select_list(Membership, "m"), select_list(Organization, "o")]
    joins = (
        f"LEFT JOIN {table(Membership)} m ON m.{column(Membership, 'user')} = u.{user_pk} "
        f"LEFT JOIN {table(Organization)} o ON o.{column(Organization, 'id')} = "
        f"m.{column(Membership, 'organization')}"
    )
    return selects, joins


@functools.cache
def _member_sql(*, by_token: bool) -> str:
    """The user with his membership and its organisation (and, for a token, the token and his
    driver profile), by user pk or by token key."""
    User = get_user_model()
    user_pk = column(User, User._meta.pk.name)
    selects, joins = member_select()
    if not by_token:
        return f"SELECT {', '.join(selects)} FROM {table(User)} u {joins} WHERE u.{user_pk} = %s"
    selects += [select_list(Driver, "d"), select_list(Token, "t")]
    return (
        f"SELECT {', '.join(selects)} FROM {table(Token)} t "
        f"INNER JOIN {table(User)} u ON u.{user_pk} = t.{column(Token, 'user')} {joins} "
        f"LEFT JOIN {table(Driver)} d ON d.{column(Driver, 'user')} = u.{user_pk} "
        f"WHERE t.{column(Token, 'key')} = %s"
    )


def _attach_membership(user, membership, organization) -> None:
    """Attach the row's membership (and its organisation) to `user`, where membership_for reads
    it; a missing one is remembered as None, so neither asks again."""
    if membership is not None:
        membership.organization = organization
        membership.user = user  # also fills user.membership
    user._doorstep_membership = membership


def member_for_token(key: str):
    """(user, token) for an API token key, with the user's membership, organisation and driver
    profile loaded (``user.driver`` raises Driver.DoesNotExist without a query if he has none);
    None for an unknown key."""
    with connection.cursor() as cursor:
        cursor.execute(_member_sql(by_token=True), [key])
        row = cursor.fetchone()
    if row is None:
        return None
    user, membership, organization, driver, token = from_rows(
        row, get_user_model(), Membership, Organization, Driver, Token
    )
    _attach_membership(user, membership, organization)
    if driver is None:
        get_user_model()._meta.get_field("driver").set_cached_value(user, None)
    else:
        driver.user = user  # also fills user.driver
    token.user = user
    return user, token


def _user_cache_key(pk) -> str:
    return f"signed-in-user:{pk}"


# The member row the request's session was read with, as (user pk, row or None), while
# MemberAuthenticationMiddleware asks Django for the request's user; None at any other time.
_offered_member_row: contextvars.ContextVar[tuple | None] = contextvars.ContextVar(
    "offered_member_row", default=None
)


@contextlib.contextmanager
def offering_member_row(offer: tuple | None):
    """While in this block, _member_row answers for the offered user pk with the offered row."""
    token = _offered_member_row.set(offer)
    try:
        yield
    finally:
        _offered_member_row.reset(token)


def _member_row(pk) -> tuple | None:
    """The row of _member_sql(by_token=False) for user `pk`: the one read with the session if it
    is for him, else from the cache when it is on, else from the database."""
    seconds = settings.SIGNED_IN_USER_CACHE_SECONDS
    offer = _offered_member_row.get()
    if offer is not None and offer[0] == pk:
        row = offer[1]  # read from the database with the session: kept as a read here would be
    else:
        if seconds:
            try:
                row = cache.get(_user_cache_key(pk))
            except Exception:  # Redis down or unreachable: the database still answers
                logger.warning("signed-in user cache unreachable; reading user %s from the database", pk)
                seconds, row = 0, None
            if row is not None:
                return row
        with connection.cursor() as cursor:
            cursor.execute(_member_sql(by_token=False), [pk])
            row = cursor.fetchone()
    if row is not None and seconds:
        row = tuple(row)
        try:
            cache.set(_user_cache_key(pk), row, seconds)
        except Exception:
            logger.warning("signed-in user cache unreachable; user %s not cached", pk)
    return row


def forget_signed_in_users(user_pks) -> None:
    """Drop the cached rows of these users now, and again once the current transaction commits:
    a request reading the database in between still saw the old row and may have cached it."""
    if not settings.SIGNED_IN_USER_CACHE_SECONDS:
        return
    keys = [_user_cache_key(pk) for pk in user_pks]
    if keys:
        _delete(keys)
        transaction.on_commit(lambda: _delete(keys))


def _delete(keys: list[str]) -> None:
    try:
        cache.delete_many(keys)
    except Exception:
        # Nobody reads the copies while Redis is unreachable; should it come back with its data,
        # they live out SIGNED_IN_USER_CACHE_SECONDS.
        logger.error("signed-in user cache unreachable; could not drop %s", ", ".join(keys))


def forget_on_change(sender, instance, **kwargs) -> None:
    """post_save / post_delete of User, Membership or Organization (connected in dispatch.apps)."""
    if not settings.SIGNED_IN_USER_CACHE_SECONDS:
        return
    if isinstance(instance, Organization):
        pks = list(Membership.objects.filter(organization=instance).values_list("user_id", flat=True))
    elif isinstance(instance, Membership):
        pks = [instance.user_id]
    else:
        pks = [instance.pk]
    forget_signed_in_users(pks)


class MemberBackend(ModelBackend):
    """Django's username and password sign-in, whose per-request user read also loads the
    membership and its organisation: every portal request needs them (the organisation's zone,
    the scope of every query), so one plain statement where Django's backend and
    ``membership_for`` made two ORM queries.
    """

    def get_user(self, user_id):
        User = get_user_model()
        try:
            pk = User._meta.pk.to_python(user_id)
        except ValidationError:  # a session naming no valid pk is a signed-out session
            return None
        row = _member_row(pk)
        if row is None:
            return None
        user, membership, organization = from_rows(row, User, Membership, Organization)
        if not self.user_can_authenticate(user):
            return None
        _attach_membership(user, membership, organization)
        return user
