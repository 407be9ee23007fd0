"""E-mail to the organisation's own people, through the outbox like every other message:

- the daily summary: yesterday's figures each morning to the dispatchers and admins who asked
  for it (Membership.daily_summary). One row per (organisation, day, person), its key unique:
  the quarter-hourly schedule may run twice, or on two workers at once, and each person still
  gets one e-mail a day. The figures are read when it is sent (dispatch.reports, as /reports/);
- "a webhook endpoint was disabled" to the organisation's admins (RELIABILITY WH-2), once per
  disabling, beside the dispatchers' alert.
"""

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django_q.tasks import async_task

from dispatch.models import Membership, Organization
from dispatch.reports import ReportFilters, report_failures, report_orders, report_summary
from tracking.models import Notification

E = Notification.Event
PORTAL_ROLES = (Membership.Role.ADMIN, Membership.Role.DISPATCHER)
STAFF_EVENTS = (E.DAILY_SUMMARY, E.WEBHOOK_DISABLED)


def summary_key(*, organization_id: int, day, user_id: int) -> str:
    return f"daily_summary:{organization_id}:{day.isoformat()}:{user_id}"


def daily_summaries_make(*, now: datetime | None = None) -> int:
    """Make (and queue) the summary rows due now: for every organisation where it is past
    DAILY_SUMMARY_HOUR today (its own zone), one for yesterday per member who asked for it and
    has an e-mail address. Returns how many rows were new. Safe to run any number of times."""
    now = now or timezone.now()
    wanted = Membership.objects.filter(daily_summary=True, role__in=PORTAL_ROLES).exclude(user__email="")
    organizations = Organization.objects.filter(pk__in=wanted.values("organization"))
    made: list[int] = []
    for organization in organizations:
        local = now.astimezone(organization.tzinfo)
        if local.hour < settings.DAILY_SUMMARY_HOUR:
            continue
        day = local.date() - timedelta(days=1)
        members = wanted.filter(organization=organization).select_related("user")
        for member in members:
            row, created = Notification.objects.get_or_create(
                key=summary_key(organization_id=organization.pk, day=day, user_id=member.user_id),
                defaults={
                    "organization": organization,
                    "event": E.DAILY_SUMMARY,
                    "channel": Notification.Channel.EMAIL,
                    "recipient": member.user.email,
                    "payload": {"day": day.isoformat(), "user": member.user_id},
                    "created_at": now,
                },
            )
            if created:
                made.append(row.pk)
    for pk in made:
        transaction.on_commit(lambda pk=pk: async_task("tracking.tasks.send_notification", pk))
    return len(made)


def webhook_disabled_notify(*, endpoint, reason: str, now: datetime) -> int:
    """Tell every admin of the endpoint's organisation (with an e-mail address) that it was
    disabled; queued once this transaction commits. Returns how many rows were made."""
    admins = (
        Membership.objects.filter(organization_id=endpoint.organization_id, role=Membership.Role.ADMIN)
        .exclude(user__email="")
        .select_related("user")
    )
    payload = {"endpoint": endpoint.pk, "url": endpoint.url, "reason": reason}
    made = []
    for admin in admins:
        row, created = Notification.objects.get_or_create(
            key=f"webhook_disabled:{endpoint.pk}:{now.isoformat()}:{admin.user_id}",
            defaults={
                "organization_id": endpoint.organization_id,
                "event": E.WEBHOOK_DISABLED,
                "channel": Notification.Channel.EMAIL,
                "recipient": admin.user.email,
                "payload": {**payload, "user": admin.user_id},
                "created_at": now,
            },
        )
        if created:
            made.append(row.pk)
    for pk in made:
        transaction.on_commit(lambda pk=pk: async_task("tracking.tasks.send_notification", pk))
    return len(made)


def staff_no_longer_due(row: Notification) -> str:
    """Why a message to the organisation's people made earlier must not go out now."""
    if row.event == E.WEBHOOK_DISABLED:
        return ""  # it happened; an admin should hear of it even if it was re-enabled since
    return summary_no_longer_due(row)


def staff_render(row: Notification) -> dict[str, Any]:
    if row.event == E.WEBHOOK_DISABLED:
        site = settings.SITE_URL.rstrip("/")
        context = {
            "organization": Organization.objects.get(pk=row.organization_id).name,
            "url": row.payload.get("url", ""),
            "reason": row.payload.get("reason", ""),
            "link": f"{site}{reverse('tracking:webhook_detail', args=[row.payload.get('endpoint')])}",
        }
        text = render_to_string("tracking/notices/webhook_disabled_body.txt", context).strip()
        return {
            "subject": f"Webhook endpoint disabled: {context['url']}"[:300],
            "text": text,
            "html": render_to_string("tracking/notices/webhook_disabled_body.html", context),
            "eta": None,
            "unsubscribe_link": context["link"],
        }
    return summary_render(row)


def summary_no_longer_due(row: Notification) -> str:
    """Why a summary made earlier must not go out now: the person turned it off or left."""
    still = Membership.objects.filter(
        organization_id=row.organization_id,
        user_id=row.payload.get("user"),
        daily_summary=True,
        role__in=PORTAL_ROLES,
    ).exists()
    return "" if still else "They turned the daily summary off (or left the organisation)."


def summary_context(row: Notification) -> dict[str, Any]:
    organization = Organization.objects.get(pk=row.organization_id)
    day = datetime.fromisoformat(row.payload["day"]).date()
    filters = ReportFilters(organization=organization, start=day, end=day)
    site = settings.SITE_URL.rstrip("/")
    query = f"?start={day.isoformat()}&end={day.isoformat()}"
    return {
        "organization": organization.name,
        "day": day,
        "orders": report_orders(filters),
        "summary": report_summary(filters),
        "failures": report_failures(filters)[:5],
        "report_link": f"{site}{reverse('dispatch:report_list')}{query}",
        "unsubscribe_link": f"{site}{reverse('dispatch:report_list')}#daily-summary",
    }


def summary_render(row: Notification) -> dict[str, Any]:
    """{"subject", "text", "html", "eta", "unsubscribe_link"} of one summary e-mail."""
    context = summary_context(row)
    return {
        "subject": " ".join(render_to_string("tracking/notices/daily_summary_subject.txt", context).split()),
        "text": render_to_string("tracking/notices/daily_summary_body.txt", context).strip(),
        "html": render_to_string("tracking/notices/daily_summary_body.html", context),
        "eta": None,
        "unsubscribe_link": context["unsubscribe_link"],
    }
