"""The one-statement user reads: a signed-in session's (MemberBackend) and an API token's.

They build model instances from a plain SELECT, so they are checked against what the ORM loads,
field by field, on whichever database the suite runs on."""

import pytest
from django.contrib.auth import get_user_model
from django.shortcuts import resolve_url
from django.test import RequestFactory
from django.utils import timezone
from rest_framework.authtoken.models import Token

from dispatch.auth_backends import MemberBackend, member_for_token
from dispatch.models import Driver, Membership, Organization
from dispatch.selectors import membership_for
from dispatch.sqlrows import from_rows
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def fields(instance) -> dict:
    return {field.attname: getattr(instance, field.attname) for field in instance._meta.concrete_fields}


def test_the_session_user_is_the_orm_user_with_membership_and_organisation(dispatcher, org):
    org.refresh_from_db()  # the ORM's own reading, as the comparison
    user = MemberBackend().get_user(str(dispatcher.pk))  # the session stores the pk as text

    orm_user = get_user_model().objects.get(pk=dispatcher.pk)
    orm_membership = Membership.objects.get(user=dispatcher)
    assert fields(user) == fields(orm_user)
    assert user.last_login == orm_user.last_login and user.date_joined.tzinfo is not None
    assert user.check_password("correct-horse-battery")
    assert fields(membership_for(user)) == fields(orm_membership)
    assert fields(membership_for(user).organization) == fields(org)
    assert user.membership is membership_for(user)
    # Saved back, the instance writes what it read: nothing is lost or mangled.
    user.first_name = "Renamed"
    user.save()
    assert fields(get_user_model().objects.get(pk=user.pk)) == {**fields(orm_user), "first_name": "Renamed"}


def test_the_session_user_needs_no_further_query(dispatcher, django_assert_num_queries):
    with django_assert_num_queries(1):
        user = MemberBackend().get_user(dispatcher.pk)
        organization = membership_for(user).organization
        assert organization.tzinfo is not None and user.membership.role == Membership.Role.DISPATCHER


def test_a_user_without_membership_is_signed_in_with_none(django_assert_num_queries):
    staff = UserFactory(is_staff=True)
    with django_assert_num_queries(1):
        user = MemberBackend().get_user(staff.pk)
        assert user == staff and membership_for(user) is None


@pytest.mark.parametrize("user_id", [10**9, "not-a-number", None])
def test_an_unknown_or_malformed_user_id_is_signed_out(user_id):
    assert MemberBackend().get_user(user_id) is None


def test_an_inactive_user_is_signed_out(dispatcher):
    dispatcher.is_active = False
    dispatcher.save()
    assert MemberBackend().get_user(dispatcher.pk) is None


def test_a_token_loads_user_membership_and_driver_profile(driver, django_assert_num_queries):
    token = Token.objects.create(user=driver.user)
    with django_assert_num_queries(1):
        user, loaded = member_for_token(token.key)
        assert loaded.key == token.key and loaded.user is user
        assert user.driver.pk == driver.pk and user.driver.user is user
        assert membership_for(user).role == Membership.Role.DRIVER
        assert membership_for(user).organization.slug == driver.organization.slug
    assert fields(user.driver) == fields(Driver.objects.get(pk=driver.pk))
    assert fields(loaded) == fields(Token.objects.get(pk=token.pk))


def test_a_token_of_a_user_without_driver_profile_raises_without_a_query(
    dispatcher, django_assert_num_queries
):
    token = Token.objects.create(user=dispatcher)
    with django_assert_num_queries(1):
        user, _ = member_for_token(token.key)
        with pytest.raises(Driver.DoesNotExist):
            _ = user.driver


def test_an_unknown_token_is_none(driver):
    Token.objects.create(user=driver.user)
    assert member_for_token("0" * 40) is None


# --- The session row (dispatch.sessions) -------------------------------------------------------


def test_the_session_store_reads_the_row_the_orm_reads(dispatcher_client, dispatcher, settings):
    from importlib import import_module

    from dispatch.models import UserSession

    key = dispatcher_client.cookies[settings.SESSION_COOKIE_NAME].value
    store = import_module(settings.SESSION_ENGINE).SessionStore(key)
    row = store._get_session_from_db()
    assert fields(row) == fields(UserSession.objects.get(session_key=key))
    assert row.user_id == dispatcher.pk
    assert store.load() == UserSession.objects.get(session_key=key).get_decoded()
    # The member row read with it is the one MemberBackend would read on its own.
    offered_pk, offered_row = store.member_row
    user, membership, organization = from_rows(offered_row, get_user_model(), Membership, Organization)
    assert offered_pk == dispatcher.pk
    assert fields(user) == fields(get_user_model().objects.get(pk=dispatcher.pk))
    assert fields(membership) == fields(Membership.objects.get(user=dispatcher))
    assert fields(organization) == fields(Organization.objects.get(pk=membership.organization_id))


def test_a_signed_in_request_reads_its_session_and_user_in_one_query(dispatcher_client, settings):
    from django.core.cache import cache
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from dispatch.models import UserSession

    cache.clear()  # with Redis: the session and the user from the database, not from copies
    with CaptureQueriesContext(connection) as queries:
        assert dispatcher_client.get("/orders/").status_code == 200
    users, sessions = get_user_model()._meta.db_table, UserSession._meta.db_table
    reading_users = [q["sql"] for q in queries if users in q["sql"]]
    assert len(reading_users) == 1 and sessions in reading_users[0]


def test_with_redis_the_user_read_with_the_session_is_kept_for_the_next_request(dispatcher_client, settings):
    from django.core.cache import cache
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    if not settings.SIGNED_IN_USER_CACHE_SECONDS:
        pytest.skip("the signed-in user cache is on with REDIS_URL only")
    cache.clear()
    assert dispatcher_client.get("/orders/").status_code == 200  # session and user from the database
    with CaptureQueriesContext(connection) as queries:
        assert dispatcher_client.get("/orders/").status_code == 200
    assert not [q for q in queries if get_user_model()._meta.db_table in q["sql"]]


def test_the_session_row_names_its_user_until_sign_out(client, dispatcher):
    from dispatch.models import UserSession

    assert client.login(request=RequestFactory().get("/"), username="disp", password="correct-horse-battery")
    session = UserSession.objects.get()
    assert session.user_id == dispatcher.pk
    client.post(resolve_url("logout"))
    assert not UserSession.objects.exists()


def test_deleting_a_user_deletes_his_sessions_and_signs_him_out(dispatcher_client, dispatcher, settings):
    from dispatch.models import UserSession

    other = UserSession.objects.create(session_key="s" * 32, session_data="", expire_date=timezone.now())
    dispatcher.delete()
    assert list(UserSession.objects.all()) == [other]
    response = dispatcher_client.get("/")
    assert response.status_code == 302 and response["Location"].startswith(resolve_url(settings.LOGIN_URL))


def test_a_session_naming_a_user_who_does_not_exist_is_signed_out(client, settings):
    from importlib import import_module

    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.core.cache import cache

    store = import_module(settings.SESSION_ENGINE).SessionStore()
    store.update({SESSION_KEY: str(10**9), BACKEND_SESSION_KEY: settings.AUTHENTICATION_BACKENDS[-1]})
    store[HASH_SESSION_KEY] = "x"
    store.create()  # no constraint on the user column: the row is written, naming nobody
    cache.clear()  # with Redis: read from the database, joined to no user
    client.cookies[settings.SESSION_COOKIE_NAME] = store.session_key
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith(resolve_url(settings.LOGIN_URL))
    cache.clear()
    fresh = import_module(settings.SESSION_ENGINE).SessionStore(store.session_key)
    fresh.load()
    assert fresh.member_row == (10**9, None)


def test_an_expired_session_is_signed_out(dispatcher_client, settings):
    from django.core.cache import cache

    from dispatch.models import UserSession

    assert dispatcher_client.get("/").status_code == 200
    key = dispatcher_client.cookies[settings.SESSION_COOKIE_NAME].value
    UserSession.objects.filter(session_key=key).update(
        expire_date=timezone.now() - timezone.timedelta(seconds=1)
    )
    cache.clear()  # with Redis the cached copy would otherwise live on until its own timeout
    response = dispatcher_client.get("/")
    assert response.status_code == 302 and response["Location"].startswith(resolve_url(settings.LOGIN_URL))


def test_an_unknown_session_key_is_signed_out(client, settings, dispatcher):
    client.cookies[settings.SESSION_COOKIE_NAME] = "x" * 32
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith(resolve_url(settings.LOGIN_URL))


def test_a_session_signed_in_before_the_upgrades_stays_signed_in(client, dispatcher, settings):
    """Migration 0011: sessions written by Django's ModelBackend name it; Django would sign them
    out once it is no longer listed, so it points them at MemberBackend. Migration 0013 then
    copies every session into UserSession with the user it names."""
    import importlib

    from django.apps import apps
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore as DjangosSessionStore

    old = DjangosSessionStore()  # Django's own table, as before both upgrades
    old.update(
        {
            SESSION_KEY: str(dispatcher.pk),
            BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend",
            HASH_SESSION_KEY: dispatcher.get_session_auth_hash(),
        }
    )
    old.create()
    client.cookies[settings.SESSION_COOKIE_NAME] = old.session_key
    from dispatch.models import UserSession

    assert not UserSession.objects.exists()  # the new code would not know this session yet

    importlib.import_module("dispatch.migrations.0011_sessions_member_backend").sessions_to_member_backend(
        apps, None
    )
    importlib.import_module("dispatch.migrations.0013_usersession").copy_sessions(apps, None)
    assert client.get("/").status_code == 200
    assert UserSession.objects.get(session_key=old.session_key).user_id == dispatcher.pk
    assert not DjangosSessionStore().exists(old.session_key)  # moved, not copied
