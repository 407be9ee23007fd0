"""The one-statement user reads: a signed-in session's (MemberBackend) and an API token's.

They build model instances from a plain SELECT, so they are checked against what the ORM loads,
field by field, on whichever database the suite runs on."""

import pytest
from django.contrib.auth import get_user_model
from django.shortcuts import resolve_url
from rest_framework.authtoken.models import Token

from dispatch.auth_backends import MemberBackend, member_for_token
from dispatch.models import Driver, Membership
from dispatch.selectors import membership_for
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


def test_the_session_store_reads_the_row_the_orm_reads(dispatcher_client, settings):
    from importlib import import_module

    from django.contrib.sessions.models import Session

    key = dispatcher_client.cookies[settings.SESSION_COOKIE_NAME].value
    store = import_module(settings.SESSION_ENGINE).SessionStore(key)
    row = store._get_session_from_db()
    assert fields(row) == fields(Session.objects.get(session_key=key))
    assert store.load() == Session.objects.get(session_key=key).get_decoded()


def test_an_expired_session_is_signed_out(dispatcher_client, settings):
    from django.contrib.sessions.models import Session
    from django.core.cache import cache
    from django.utils import timezone

    assert dispatcher_client.get("/").status_code == 200
    key = dispatcher_client.cookies[settings.SESSION_COOKIE_NAME].value
    Session.objects.filter(session_key=key).update(expire_date=timezone.now() - timezone.timedelta(seconds=1))
    cache.clear()  # with Redis the cached copy would otherwise live on until its own timeout
    response = dispatcher_client.get("/")
    assert response.status_code == 302 and response["Location"].startswith(resolve_url(settings.LOGIN_URL))


def test_an_unknown_session_key_is_signed_out(client, settings, dispatcher):
    client.cookies[settings.SESSION_COOKIE_NAME] = "x" * 32
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith(resolve_url(settings.LOGIN_URL))


def test_a_session_signed_in_before_the_upgrade_stays_signed_in(client, dispatcher, settings):
    """Migration 0011: sessions written by Django's ModelBackend name it; Django would sign them
    out once it is no longer listed. The migration points them at MemberBackend."""
    import importlib

    from django.apps import apps
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

    old = importlib.import_module(settings.SESSION_ENGINE).SessionStore()
    old.update(
        {
            SESSION_KEY: str(dispatcher.pk),
            BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend",
            HASH_SESSION_KEY: dispatcher.get_session_auth_hash(),
        }
    )
    old.create()  # also cached, with REDIS_URL: the migration must drop that copy
    client.cookies[settings.SESSION_COOKIE_NAME] = old.session_key
    assert client.get("/").status_code == 302  # the backend is not listed: signed out

    migration = importlib.import_module("dispatch.migrations.0011_sessions_member_backend")
    migration.sessions_to_member_backend(apps, None)
    assert client.get("/").status_code == 200


# --- The signed-in user cache (SIGNED_IN_USER_CACHE_SECONDS, with Redis) -----------------------
# The suite's cache is the one the run is configured with (local memory, or Redis with
# REDIS_URL); in one process both behave alike for these tests.


@pytest.fixture
def user_cache(settings):
    settings.SIGNED_IN_USER_CACHE_SECONDS = 60


def _user_queries(captured) -> list[str]:
    user_table = get_user_model()._meta.db_table
    return [q["sql"] for q in captured.captured_queries if f'FROM "{user_table}"' in q["sql"]]


def test_a_cached_user_is_not_read_again(user_cache, dispatcher_client):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    assert dispatcher_client.get("/orders/").status_code == 200
    with CaptureQueriesContext(connection) as captured:
        assert dispatcher_client.get("/orders/").status_code == 200
    assert _user_queries(captured) == []


def test_a_deactivated_user_is_signed_out_at_the_next_request(user_cache, dispatcher_client, dispatcher):
    assert dispatcher_client.get("/orders/").status_code == 200  # cached now
    dispatcher.is_active = False
    dispatcher.save()
    assert dispatcher_client.get("/orders/").status_code == 302


def test_a_changed_password_signs_the_other_sessions_out(user_cache, dispatcher_client, dispatcher):
    assert dispatcher_client.get("/orders/").status_code == 200
    user = get_user_model().objects.get(pk=dispatcher.pk)
    user.set_password("another-horse-battery-staple")
    user.save()
    assert dispatcher_client.get("/orders/").status_code == 302


def test_a_changed_role_counts_at_the_next_request(user_cache, dispatcher_client, dispatcher):
    assert dispatcher_client.get("/").status_code == 200
    membership = Membership.objects.get(user=dispatcher)
    membership.role = Membership.Role.DRIVER
    membership.save()
    response = dispatcher_client.get("/")
    assert response.status_code == 302 and response["Location"] == resolve_url("tracking:driver_home")


def test_a_removed_membership_counts_at_the_next_request(user_cache, dispatcher_client, dispatcher):
    assert dispatcher_client.get("/orders/").status_code == 200
    Membership.objects.get(user=dispatcher).delete()
    assert dispatcher_client.get("/orders/").status_code == 403


def test_a_changed_organisation_counts_at_the_next_request(user_cache, dispatcher, org):
    org.timezone = "Europe/Lisbon" if org.timezone != "Europe/Lisbon" else "Europe/Berlin"
    before = membership_for(MemberBackend().get_user(dispatcher.pk)).organization.timezone
    org.save()
    after = membership_for(MemberBackend().get_user(dispatcher.pk)).organization.timezone
    assert before != org.timezone and after == org.timezone


def test_the_daily_summary_switch_shows_at_once(user_cache, dispatcher):
    from dispatch.services import membership_daily_summary_set

    membership = membership_for(MemberBackend().get_user(dispatcher.pk))
    assert not membership.daily_summary
    membership_daily_summary_set(membership=membership, enabled=True)
    assert membership_for(MemberBackend().get_user(dispatcher.pk)).daily_summary


def test_the_user_cache_is_refused_without_a_shared_cache():
    import os
    import subprocess
    import sys

    env = {**os.environ, "SIGNED_IN_USER_CACHE_SECONDS": "60", "REDIS_URL": ""}
    result = subprocess.run(
        [sys.executable, "-c", "import django; from django.conf import settings; settings.INSTALLED_APPS"],
        env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "SIGNED_IN_USER_CACHE_SECONDS needs a cache" in result.stderr


def test_an_unreachable_cache_falls_back_to_the_database(user_cache, settings, dispatcher, caplog):
    pytest.importorskip("redis")
    # Nothing listens on port 1: every cache call fails, as when Redis is down.
    settings.CACHES = {"default": {"BACKEND": "config.cache.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}}
    user = MemberBackend().get_user(dispatcher.pk)
    assert user == dispatcher and membership_for(user).role == Membership.Role.DISPATCHER
    dispatcher.is_active = False
    dispatcher.save()  # the copy cannot be dropped: logged, and the save goes through
    assert MemberBackend().get_user(dispatcher.pk) is None
    assert "signed-in user cache unreachable" in caplog.text
