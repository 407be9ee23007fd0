"""Create or update every periodic job. Idempotent: run it on each deploy (make run does).

It lives in tracking, the top app, because it lists jobs of every app below it by dotted path.
"""

from django.core.management.base import BaseCommand
from django.db.models import Q
from django_q.models import Schedule

# name -> (task path, schedule type, minutes between runs when MINUTES)
SCHEDULES = {
    "purge abandoned order imports": ("dispatch.tasks.purge_import_uploads", Schedule.HOURLY, None),
    "forget old Idempotency-Key answers": ("dispatch.tasks.purge_idempotency_records", Schedule.HOURLY, None),
    "delete expired sessions": ("dispatch.tasks.purge_expired_sessions", Schedule.HOURLY, None),
    "raise and resolve alerts": ("tracking.tasks.sweep_alerts", Schedule.MINUTES, 1),
    "send notifications": ("tracking.tasks.sweep_notifications", Schedule.MINUTES, 1),
    "recompute ETAs": ("tracking.tasks.recompute_etas", Schedule.MINUTES, 1),
    "give new orders their tracking link": ("tracking.tasks.ensure_tracking_links", Schedule.MINUTES, 10),
    "purge orphaned proof files": ("pod.tasks.purge_orphaned_proof_files", Schedule.HOURLY, None),
    "refresh travelled paths": ("tracking.tasks.refresh_travelled_paths", Schedule.MINUTES, 5),
    "e-mail the daily summaries": ("tracking.tasks.send_daily_summaries", Schedule.MINUTES, 15),
}


class Command(BaseCommand):
    help = "Create or update Doorstep's periodic django-q2 schedules (safe to run repeatedly)."

    def handle(self, *args, **options) -> None:
        for name, (func, schedule_type, minutes) in SCHEDULES.items():
            _, created = Schedule.objects.update_or_create(
                name=name,
                defaults={
                    "func": func,
                    "schedule_type": schedule_type,
                    "minutes": minutes,
                    "repeats": -1,
                },
            )
            self.stdout.write(f"{'Created' if created else 'Updated'} schedule: {name} ({func})")
        # Only our own jobs are pruned; a schedule an admin added by hand is left alone.
        ours = Q(func__startswith="dispatch.") | Q(func__startswith="pod.") | Q(func__startswith="tracking.")
        stale = Schedule.objects.filter(ours).exclude(name__in=SCHEDULES)
        for schedule in stale:
            self.stdout.write(f"Removed schedule no longer defined: {schedule.name}")
        stale.delete()
