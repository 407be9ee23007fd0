"""Reactions to dispatch's domain signals, after the change committed. Each is quick, never
raises into the request that made the change, and is backed by a periodic sweep."""

import logging

from tracking.links import tracking_link_order_changed
from tracking.notifications import notifications_for_event

logger = logging.getLogger(__name__)


def on_stop_event_recorded(sender, *, event_id, order_id, organization_id, kind, to_status, **kwargs) -> None:
    try:
        tracking_link_order_changed(order_id=order_id)
    except Exception:  # tracking.links.tracking_links_sweep makes any link missed here
        logger.exception("Could not update the tracking link of order %s now; the sweep will.", order_id)
    try:
        notifications_for_event(event_id=event_id)
    except Exception:  # the event stays unclaimed: tracking.notifications.notifications_sweep makes them
        logger.exception("Could not make the messages of stop event %s now; the sweep will.", event_id)
