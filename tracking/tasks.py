"""django-q2 tasks of live data: thin wrappers around services, safe to run twice."""

import logging

from tracking.alerts import alerts_sweep

logger = logging.getLogger(__name__)


def sweep_alerts() -> dict[str, int]:
    """Every minute: raise and resolve dispatchers' alerts for today's routes."""
    result = alerts_sweep()
    if result["raised"] or result["resolved"]:
        logger.info("Alerts: %(raised)d raised, %(resolved)d resolved", result)
    return result
