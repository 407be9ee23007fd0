"""Domain signals: dispatch announces what happened; higher apps (tracking) react.

Sent only after the transaction that wrote the change commits (the StopEvent row is the durable
record; a receiver that misses a signal is covered by its own periodic sweep). Receivers must be
quick and must not raise: they run in the request that made the change.
"""

from django.dispatch import Signal

# A stop moved to another status. Arguments: stop_id, organization_id, route_id, status.
stop_status_changed = Signal()

# A StopEvent row was written: an order was created, changed status, was delivered, failed…
# Arguments: event_id, order_id, organization_id, kind, to_status. The row's `notified_at`
# lets a sweep claim (conditional update) every event a receiver missed.
stop_event_recorded = Signal()
