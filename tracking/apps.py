from django.apps import AppConfig


class TrackingConfig(AppConfig):
    name = "tracking"
    verbose_name = "Tracking"

    def ready(self) -> None:
        from dispatch.signals import stop_event_recorded, stop_status_changed
        from tracking.alerts import on_stop_status_changed
        from tracking.receivers import on_stop_event_recorded

        # A failed delivery is on the dashboard at once; the minute sweep catches any it missed.
        stop_status_changed.connect(on_stop_status_changed, dispatch_uid="tracking.alerts.stop_status")
        # An order's life (created, out for delivery, delivered…): its tracking link and messages.
        stop_event_recorded.connect(on_stop_event_recorded, dispatch_uid="tracking.stop_event")
