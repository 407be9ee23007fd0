import datetime as dt
import io
import os

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.utils import timezone
from django_q.models import Schedule

from dispatch.tasks import purge_import_uploads


def _age(name: str, hours: float) -> None:
    stamp = (timezone.now() - dt.timedelta(hours=hours)).timestamp()
    os.utime(default_storage.path(name), (stamp, stamp))


def test_abandoned_import_uploads_are_purged_after_a_day(db):
    old = default_storage.save("imports/1/old.csv", ContentFile(b"a,b\n"))
    fresh = default_storage.save("imports/2/fresh.csv", ContentFile(b"a,b\n"))
    _age(old, 25)
    _age(fresh, 2)
    assert purge_import_uploads() == 1
    assert not default_storage.exists(old) and default_storage.exists(fresh)
    assert purge_import_uploads() == 0


def test_purge_with_no_uploads_folder_does_nothing(db):
    assert purge_import_uploads() == 0


def test_setup_schedules_is_idempotent(db):
    call_command("setup_schedules", stdout=io.StringIO())
    call_command("setup_schedules", stdout=io.StringIO())
    schedule = Schedule.objects.get(name="purge abandoned order imports")
    assert schedule.func == "dispatch.tasks.purge_import_uploads"
    assert sorted(Schedule.objects.values_list("func", "schedule_type", "minutes")) == [
        ("dispatch.tasks.purge_expired_sessions", Schedule.HOURLY, None),
        ("dispatch.tasks.purge_idempotency_records", Schedule.HOURLY, None),
        ("dispatch.tasks.purge_import_uploads", Schedule.HOURLY, None),
        ("pod.tasks.purge_orphaned_proof_files", Schedule.HOURLY, None),
        ("tracking.tasks.ensure_tracking_links", Schedule.MINUTES, 10),
        ("tracking.tasks.recompute_etas", Schedule.MINUTES, 1),
        ("tracking.tasks.refresh_travelled_paths", Schedule.MINUTES, 5),
        ("tracking.tasks.send_daily_summaries", Schedule.MINUTES, 15),
        ("tracking.tasks.sweep_alerts", Schedule.MINUTES, 1),
        ("tracking.tasks.sweep_notifications", Schedule.MINUTES, 1),
    ]


def test_expired_sessions_are_deleted_and_live_ones_kept(dispatcher_client, settings):
    from django.utils import timezone

    from dispatch.models import UserSession
    from dispatch.tasks import purge_expired_sessions

    UserSession.objects.create(
        session_key="e" * 32, session_data="", expire_date=timezone.now() - timezone.timedelta(minutes=1)
    )
    assert purge_expired_sessions() == 1
    assert purge_expired_sessions() == 0
    signed_in = dispatcher_client.cookies[settings.SESSION_COOKIE_NAME].value
    assert UserSession.objects.get().session_key == signed_in
    assert dispatcher_client.get("/").status_code == 200
