"""django-q2 tasks of the core domain: thin wrappers around services, safe to run twice."""

import logging

from dispatch.services import import_uploads_purge

logger = logging.getLogger(__name__)


def purge_import_uploads() -> int:
    removed = import_uploads_purge()
    if removed:
        logger.info("Removed %d abandoned order import upload(s)", removed)
    return removed


def run_plan(plan_id: int) -> None:
    """Solve one plan (dispatch.planning.plan_create queues it). A second run is a no-op."""
    from dispatch.planning import plan_run

    plan_run(plan_id=plan_id)


def purge_expired_sessions() -> int:
    """Delete expired sessions, as Django's `clearsessions` would: a session nobody signs out of
    (a closed browser, a lost phone) stays in the table otherwise. Safe to run twice."""
    from django.utils import timezone

    from dispatch.models import UserSession

    removed, _ = UserSession.objects.filter(expire_date__lt=timezone.now()).delete()
    if removed:
        logger.info("Deleted %d expired session(s)", removed)
    return removed


def purge_idempotency_records() -> int:
    """Forget Idempotency-Key answers older than IDEMPOTENCY_KEY_HOURS. Safe to run twice."""
    from datetime import timedelta

    from django.conf import settings

    from dispatch.services import idempotency_records_purge

    removed = idempotency_records_purge(older_than=timedelta(hours=settings.IDEMPOTENCY_KEY_HOURS))
    if removed:
        logger.info("Forgot %d Idempotency-Key answer(s)", removed)
    return removed
