# Written by hand: no schema change, only the signed-in sessions of before MemberBackend.

from django.conf import settings
from django.db import migrations
from django.utils import timezone

OLD = "django.contrib.auth.backends.ModelBackend"
NEW = "dispatch.auth_backends.MemberBackend"
BACKEND_KEY = "_auth_user_backend"  # django.contrib.auth.BACKEND_SESSION_KEY


def sessions_to_member_backend(apps, schema_editor):
    """Sessions signed in through Django's ModelBackend name it, and Django signs out a session
    whose backend is no longer listed: point them at MemberBackend (the same sign-in, which
    replaced it), so nobody, a driver mid-route included, is signed out by the upgrade. Cached
    copies (cached_db sessions in Redis) are dropped; the next request reads the row again."""
    from django.contrib.sessions.backends.cached_db import KEY_PREFIX
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.cache import caches

    Session = apps.get_model("sessions", "Session")
    store, cache = SessionStore(), caches[settings.SESSION_CACHE_ALIAS]
    for session in Session.objects.filter(expire_date__gt=timezone.now()).iterator():
        data = store.decode(session.session_data)
        if data.get(BACKEND_KEY) != OLD:
            continue
        data[BACKEND_KEY] = NEW
        session.session_data = store.encode(data)
        session.save(update_fields=["session_data"])
        cache.delete(KEY_PREFIX + session.session_key)


class Migration(migrations.Migration):
    dependencies = [
        ("dispatch", "0010_stop_window_rating"),
        ("sessions", "0001_initial"),
    ]

    operations = [migrations.RunPython(sessions_to_member_backend, migrations.RunPython.noop)]
