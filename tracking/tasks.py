"""django-q2 tasks of live data: thin wrappers around services, safe to run twice."""

import logging

from tracking import staff_mail
from tracking.alerts import alerts_sweep
from tracking.eta import eta_recompute
from tracking.links import tracking_links_sweep
from tracking.notifications import notification_send, notifications_sweep
from tracking.paths import travelled_paths_refresh

logger = logging.getLogger(__name__)


def sweep_alerts() -> dict[str, int]:
    """Every minute: raise and resolve dispatchers' alerts for today's routes."""
    result = alerts_sweep()
    if result["raised"] or result["resolved"]:
        logger.info("Alerts: %(raised)d raised, %(resolved)d resolved", result)
    return result


def recompute_etas() -> dict[str, int]:
    """Every minute: the ETAs of every stop still to come on today's routes in progress."""
    return eta_recompute()


def recompute_driver_etas(driver_id: int) -> dict[str, int]:
    """After a batch of the driver's positions (debounced by tracking.eta.eta_refresh_soon)."""
    return eta_recompute(driver_ids=[driver_id])


def sweep_notifications() -> dict[str, int]:
    """Every minute: claim missed stop events, make arriving-soon / delayed messages, release
    held ones, and queue every due message."""
    result = notifications_sweep()
    if result["made"] or result["queued"] or result["abandoned"]:
        logger.info("Notifications: %s", result)
    return result


def send_notification(notification_id: int) -> str:
    """Send one outbox row (queued after commit). Running it twice sends once."""
    return notification_send(notification_id=notification_id)


def ensure_tracking_links() -> int:
    """Every ten minutes: a link for any order whose creation signal was missed."""
    made = tracking_links_sweep()
    if made:
        logger.info("Made %d missing tracking link(s)", made)
    return made


def refresh_travelled_paths() -> int:
    """Every five minutes: the simplified driven path of each route in progress (and of routes
    completed in the last hour), for the route page's planned-vs-actual map."""
    return travelled_paths_refresh()


def send_daily_summaries() -> int:
    """Every quarter of an hour: yesterday's figures to whoever asked, once each morning."""
    return staff_mail.daily_summaries_make()
