"""Live data: GPS fixes from drivers and the latest good position per driver.

Writes go through tracking.services (location_record_batch); nothing here writes other rows.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q


class Source(models.TextChoices):
    BROWSER = "browser", "Driver app (browser)"
    TRACKER = "tracker", "Vehicle tracker"


class LocationPing(models.Model):
    """One GPS fix as the device reported it. History is append-only: never updated."""

    class Flag(models.TextChoices):
        LOW_ACCURACY = "low_accuracy", "Accuracy worse than GPS_MAX_ACCURACY_M"
        SPEED_JUMP = "speed_jump", "Implied speed from the previous good fix is implausible"

    organization = models.ForeignKey("dispatch.Organization", on_delete=models.CASCADE, related_name="+")
    driver = models.ForeignKey("dispatch.Driver", on_delete=models.CASCADE, related_name="location_pings")
    # Made by the client: a retried upload carries the same uuid and is counted as a duplicate.
    uuid = models.UUIDField()
    recorded_at = models.DateTimeField(help_text="When the device took the fix (device clock).")
    received_at = models.DateTimeField(help_text="When the server stored it.")
    lat = models.FloatField()
    lng = models.FloatField()
    accuracy_m = models.FloatField(null=True, blank=True)
    speed_mps = models.FloatField(null=True, blank=True)
    heading_deg = models.FloatField(null=True, blank=True)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.BROWSER)
    # Comma-separated Flag values; "" is a good fix. Flagged fixes are kept for history and
    # disputes but never become the DriverPosition nor an ETA input.
    flags = models.CharField(max_length=100, blank=True, default="")

    class Meta:
        ordering = ["driver", "recorded_at"]
        constraints = [
            models.UniqueConstraint(fields=["driver", "uuid"], name="locationping_uuid_unique_per_driver"),
            models.CheckConstraint(condition=Q(lat__gte=-90, lat__lte=90), name="locationping_lat_range"),
            models.CheckConstraint(condition=Q(lng__gte=-180, lng__lte=180), name="locationping_lng_range"),
        ]
        indexes = [models.Index(fields=["driver", "recorded_at"], name="locationping_driver_time")]

    def __str__(self) -> str:
        return f"{self.driver_id} at {self.recorded_at:%Y-%m-%d %H:%M:%S} ({self.lat:.5f}, {self.lng:.5f})"

    @property
    def flag_list(self) -> list[str]:
        return self.flags.split(",") if self.flags else []


class DriverPosition(models.Model):
    """The latest good fix per driver, for the live map and ETAs.

    Moved only forward in device time by a conditional update in location_record_batch.
    """

    driver = models.OneToOneField("dispatch.Driver", on_delete=models.CASCADE, related_name="position")
    organization = models.ForeignKey("dispatch.Organization", on_delete=models.CASCADE, related_name="+")
    lat = models.FloatField()
    lng = models.FloatField()
    accuracy_m = models.FloatField(null=True, blank=True)
    speed_mps = models.FloatField(null=True, blank=True)
    heading_deg = models.FloatField(null=True, blank=True)
    recorded_at = models.DateTimeField()
    received_at = models.DateTimeField()
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.BROWSER)
    # When a recompute of the driver's ETAs was last queued after his positions: claimed by
    # tracking.eta.eta_refresh_soon with a conditional update, so that every web process shares
    # one 30 s debounce (JOB-7). Keep nullable.
    eta_queued_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(lat__gte=-90, lat__lte=90), name="driverposition_lat_range"),
            models.CheckConstraint(condition=Q(lng__gte=-180, lng__lte=180), name="driverposition_lng_range"),
        ]
        indexes = [models.Index(fields=["organization", "recorded_at"], name="driverposition_org_time")]

    def __str__(self) -> str:
        return f"{self.driver_id} at {self.recorded_at:%Y-%m-%d %H:%M:%S}"


class DriverAction(models.Model):
    """One thing a driver did in the app (start/end a route, arrive, deliver, fail, skip).

    The client makes the uuid, so an offline queue replayed after a lost answer is recognised:
    a repeated (driver, uuid) returns the stored result and changes nothing. Written only by
    tracking.services.driver_route_event / driver_stop_event, in the transaction of the change.
    """

    class Kind(models.TextChoices):
        ROUTE_START = "route_start", "Route started"
        ROUTE_END = "route_end", "Route ended"
        ARRIVED = "arrived", "Arrived"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"

    organization = models.ForeignKey("dispatch.Organization", on_delete=models.CASCADE, related_name="+")
    driver = models.ForeignKey("dispatch.Driver", on_delete=models.CASCADE, related_name="actions")
    uuid = models.UUIDField()
    kind = models.CharField(max_length=20, choices=Kind.choices)
    route = models.ForeignKey(
        "dispatch.Route", on_delete=models.PROTECT, related_name="driver_actions", null=True, blank=True
    )
    stop = models.ForeignKey(
        "dispatch.Stop", on_delete=models.PROTECT, related_name="driver_actions", null=True, blank=True
    )
    recorded_at = models.DateTimeField(help_text="When the driver did it (device clock, as sent).")
    received_at = models.DateTimeField(help_text="When the server stored it.")
    payload = models.JSONField(default=dict, blank=True, help_text="What the app sent, plus server notes.")
    result = models.JSONField(default=dict, blank=True, help_text="What the action changed.")

    class Meta:
        ordering = ["driver", "received_at"]
        constraints = [
            models.UniqueConstraint(fields=["driver", "uuid"], name="driveraction_uuid_unique_per_driver"),
        ]
        indexes = [models.Index(fields=["organization", "received_at"], name="driveraction_org_time")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} by {self.driver_id} at {self.recorded_at:%Y-%m-%d %H:%M:%S}"


class TrackerDevice(models.Model):
    """A free tracker app (Traccar Client, OsmAnd…) that sends one driver's positions in the
    background over the OsmAnd protocol.

    The app's "device identifier" is the key: it is shown once, as text and as a QR code, when
    the dispatcher creates it; only its SHA-256 is stored, so a database dump yields no working
    key. A revoked device's fixes are refused.
    """

    organization = models.ForeignKey("dispatch.Organization", on_delete=models.CASCADE, related_name="+")
    driver = models.ForeignKey("dispatch.Driver", on_delete=models.CASCADE, related_name="tracker_devices")
    name = models.CharField(max_length=80, help_text="Which phone or app, e.g. “Traccar on the Samsung”.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    key_hint = models.CharField(max_length=8, editable=False, help_text="The key's first characters.")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["driver", "-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.key_hint}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class Alert(models.Model):
    """Something a dispatcher should look at now. Raised and resolved by tracking.alerts.

    `key` names the situation ("late:stop:12", "idle:route:3"): while an alert for a key is
    unresolved no second one is raised (a partial unique constraint), so a sweep that runs
    every minute, or twice at once, never repeats itself.
    """

    class Kind(models.TextChoices):
        LATE = "late", "Running late"
        IDLE = "idle", "Idle"
        OFF_ROUTE = "off_route", "Off route"
        FAILED = "failed", "Failed delivery"
        NO_FIXES = "no_fixes", "No positions"
        CUSTOMER_REQUEST = "customer_request", "Customer request"
        NOTIFICATION = "notification", "Message not sent"
        WEBHOOK = "webhook", "Webhook endpoint disabled"

    organization = models.ForeignKey("dispatch.Organization", on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    key = models.CharField(max_length=100)
    route = models.ForeignKey(
        "dispatch.Route", on_delete=models.CASCADE, related_name="alerts", null=True, blank=True
    )
    stop = models.ForeignKey(
        "dispatch.Stop", on_delete=models.CASCADE, related_name="alerts", null=True, blank=True
    )
    driver = models.ForeignKey(
        "dispatch.Driver", on_delete=models.CASCADE, related_name="alerts", null=True, blank=True
    )
    message = models.CharField(max_length=300)
    details = models.JSONField(default=dict, blank=True)
    raised_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-raised_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "key"],
                condition=Q(resolved_at__isnull=True),
                name="alert_one_open_per_situation",
            )
        ]
        indexes = [models.Index(fields=["organization", "resolved_at", "raised_at"], name="alert_org_open")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.message}"


# --- The customer's side (issue #6) ----------------------------------------------------------


class TrackingLink(models.Model):
    """The customer's link to follow one order: /t/<token>/.

    The token is never stored. It is HMAC-SHA256(SECRET_KEY, salt), the salt 32 random bytes
    from `secrets`; the row keeps the salt (so a notification can render the link when it is
    sent) and the token's SHA-256 (to find the row). A database dump alone yields no working
    link. Re-issuing revokes the old row and makes a new one: one live link per order.
    """

    organization = models.ForeignKey("dispatch.Organization", on_delete=models.CASCADE, related_name="+")
    order = models.ForeignKey("dispatch.Order", on_delete=models.CASCADE, related_name="tracking_links")
    salt = models.CharField(max_length=64, editable=False)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField()
    # Set when the order ends (delivered, failed, cancelled…): the link works until then.
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    views = models.PositiveIntegerField(default=0)
    first_seen_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["order"], condition=Q(revoked_at__isnull=True), name="trackinglink_one_live_per_order"
            )
        ]

    def __str__(self) -> str:
        return f"Tracking link of order {self.order_id}{' (revoked)' if self.revoked_at else ''}"


class TrackingSettings(models.Model):
    """What one organisation's customers see and receive. Missing row: the defaults below."""

    organization = models.OneToOneField(
        "dispatch.Organization", on_delete=models.CASCADE, related_name="tracking_settings"
    )
    logo = models.ImageField(upload_to="logos/", blank=True, help_text="Shown on the tracking page.")
    contact_text = models.CharField(
        max_length=300, blank=True, help_text="How customers reach you, e.g. a phone number or e-mail."
    )
    link_expiry_days = models.PositiveSmallIntegerField(
        default=7, help_text="Days a tracking link keeps working after its order ends."
    )
    show_driver_within_stops = models.PositiveSmallIntegerField(
        default=3, help_text="The driver appears on the customer's map only this many stops away or closer."
    )
    window_slots = models.JSONField(
        default=list,
        blank=True,
        help_text='Windows a customer may ask for, e.g. ["08:00-12:00", "12:00-16:00", "16:00-20:00"].',
    )
    slot_days_ahead = models.PositiveSmallIntegerField(
        default=5, help_text="How many days ahead a customer may move a delivery."
    )
    # Notifications: {event: [channel, ...]}; missing events use NOTIFICATION_DEFAULTS.
    channels = models.JSONField(default=dict, blank=True)
    quiet_from = models.TimeField(null=True, blank=True, help_text="No message from this local time…")
    quiet_until = models.TimeField(null=True, blank=True, help_text="…until this one (held, then sent).")
    arriving_soon_stops = models.PositiveSmallIntegerField(default=2)
    arriving_soon_minutes = models.PositiveSmallIntegerField(default=15)
    delay_minutes = models.PositiveSmallIntegerField(
        default=15, help_text="Tell the customer when the ETA moves by more than this."
    )
    delay_interval_minutes = models.PositiveSmallIntegerField(
        default=30, help_text="At most one delay message per order in this time."
    )
    # Wording overrides: {"<event>.<channel>.<part>": "template text"}; missing parts use the
    # templates under templates/tracking/notices/.
    templates = models.JSONField(default=dict, blank=True)
    # WH-3: off, webhook URLs that resolve to loopback, private or link-local addresses are
    # refused (the server must not be turned against its own network). Admins only.
    webhooks_allow_private = models.BooleanField(
        default=False,
        help_text="Let webhook endpoints point at private or loopback addresses (a server on your network).",
    )

    class Meta:
        verbose_name_plural = "tracking settings"

    def __str__(self) -> str:
        return f"Tracking settings of {self.organization}"


class Notification(models.Model):
    """The outbox: one row per message that is due. Every outgoing message goes through it.

    `key` is unique: (order, event, channel[, occurrence]) — a job retried, or two workers
    racing, find the row already there and never send twice. Status moves pending → sending →
    sent | failed, or held (quiet hours) → pending, or skipped (opted out, no address).
    """

    class Event(models.TextChoices):
        OUT_FOR_DELIVERY = "out_for_delivery", "Out for delivery"
        ARRIVING_SOON = "arriving_soon", "Arriving soon"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Delivery failed"
        DELAYED = "delayed", "Delayed"
        # Webhook-only events (tracking.webhooks); customers are never messaged about these.
        CREATED = "created", "Order created"
        PLANNED = "planned", "Planned"
        ASSIGNED = "assigned", "Assigned"
        CANCELLED = "cancelled", "Cancelled"
        ROUTE_STARTED = "route_started", "Route started"
        ROUTE_COMPLETED = "route_completed", "Route completed"
        CUSTOMER_REQUEST = "customer_request", "Customer request"
        TEST = "test", "Test event"
        # For the organisation's own people: yesterday's figures (tracking.staff_mail).
        DAILY_SUMMARY = "daily_summary", "Daily summary"
        WEBHOOK_DISABLED = "webhook_disabled", "Webhook endpoint disabled"

    class Channel(models.TextChoices):
        EMAIL = "email", "E-mail"
        SMS = "sms", "SMS"
        WEBHOOK = "webhook", "Webhook"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        HELD = "held", "Held for quiet hours"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"

    organization = models.ForeignKey("dispatch.Organization", on_delete=models.CASCADE, related_name="+")
    # Empty only for webhook deliveries about no single order (route events, test events).
    order = models.ForeignKey(
        "dispatch.Order", on_delete=models.CASCADE, related_name="notifications", null=True, blank=True
    )
    stop = models.ForeignKey(
        "dispatch.Stop", on_delete=models.SET_NULL, null=True, blank=True, related_name="notifications"
    )
    route = models.ForeignKey(
        "dispatch.Route", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # Webhook deliveries (channel "webhook"): the endpoint, and what its log shows. `body` is the
    # JSON as signed, fixed when the row is made so every retry sends the same bytes.
    endpoint = models.ForeignKey(
        "tracking.WebhookEndpoint", on_delete=models.CASCADE, null=True, blank=True, related_name="deliveries"
    )
    webhook_id = models.CharField(max_length=64, blank=True, help_text="webhook-id: the same on every retry.")
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_excerpt = models.TextField(blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    # Set by the first claim: SMS and e-mail are retried for RETRY_PERIOD from here, so a row
    # held through quiet hours gets its full day (tracking.notifications).
    first_attempt_at = models.DateTimeField(null=True, blank=True)
    # [{"at", "status", "error", "ms"}, …], newest last, the last WEBHOOK_LOG_ATTEMPTS kept.
    attempt_log = models.JSONField(default=list, blank=True)
    event = models.CharField(max_length=20, choices=Event.choices)
    channel = models.CharField(max_length=10, choices=Channel.choices)
    key = models.CharField(max_length=200, unique=True)
    recipient = models.CharField(max_length=300, blank=True)
    subject = models.CharField(max_length=300, blank=True)
    body = models.TextField(blank=True, help_text="The text as sent (rendered at send time).")
    payload = models.JSONField(default=dict, blank=True, help_text="What the message is about.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    not_before = models.DateTimeField(null=True, blank=True, help_text="Held or backing off until then.")
    created_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)
    provider_id = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "not_before"], name="notification_due"),
            models.Index(fields=["order", "created_at"], name="notification_order_log"),
            models.Index(fields=["endpoint", "created_at"], name="notification_endpoint_log"),
        ]

    def __str__(self) -> str:
        return f"{self.get_event_display()} by {self.get_channel_display()} for order {self.order_id}"


class WebhookEndpoint(models.Model):
    """Where an organisation's integrations receive its events (tracking.webhooks), signed per
    Standard Webhooks with `secret` ("whsec_" + base64 of 32 random bytes).

    Rotating keeps the old secret in `previous_secret` until `previous_secret_until`: meanwhile
    every delivery carries both signatures, so the receiver can switch without losing one.
    Disabled (active=False, `disabled_reason`) by a 410 answer or by failing every attempt for
    the whole retry period; an admin re-enables it by editing it.
    """

    organization = models.ForeignKey("dispatch.Organization", on_delete=models.CASCADE, related_name="+")
    url = models.URLField(max_length=2000, help_text="https:// address that receives the events.")
    description = models.CharField(max_length=200, blank=True)
    # Event types ("order.delivered", …) this endpoint receives; empty: every event.
    events = models.JSONField(default=list, blank=True)
    secret = models.CharField(max_length=100, editable=False)
    previous_secret = models.CharField(max_length=100, blank=True, editable=False)
    previous_secret_until = models.DateTimeField(null=True, blank=True)
    active = models.BooleanField(default=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    failing_since = models.DateTimeField(null=True, blank=True, help_text="First failure since a success.")
    disabled_reason = models.CharField(max_length=300, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["organization", "created_at", "pk"]
        indexes = [models.Index(fields=["organization", "active"], name="webhookendpoint_org_active")]

    def __str__(self) -> str:
        return self.url

    def subscribes_to(self, event_type: str) -> bool:
        return not self.events or event_type in self.events


class InboundCallback(models.Model):
    """A provider callback already handled (WH-4): a replayed or re-sent one, with the same
    event id, is answered without being acted on again."""

    source = models.CharField(max_length=20, help_text="sms…")
    event_id = models.CharField(max_length=200)
    received_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["source", "event_id"], name="inboundcallback_once_per_event")
        ]

    def __str__(self) -> str:
        return f"{self.source} {self.event_id}"


class NotificationOptOut(models.Model):
    """A customer who said STOP (or used the unsubscribe link): no further message for the order."""

    order = models.OneToOneField(
        "dispatch.Order", on_delete=models.CASCADE, related_name="notification_opt_out"
    )
    organization = models.ForeignKey("dispatch.Organization", on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField()
    via = models.CharField(max_length=20, help_text="link, sms…")

    def __str__(self) -> str:
        return f"Order {self.order_id} opted out via {self.via}"


class CustomerRequest(models.Model):
    """What a customer asked for on the tracking page. Each raises an alert for dispatchers."""

    class Kind(models.TextChoices):
        INSTRUCTIONS = "instructions", "Delivery instructions"
        WINDOW = "window", "Another window"
        MESSAGE = "message", "Message"
        RATING = "rating", "Rating"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        ACCEPTED = "accepted", "Accepted"
        DECLINED = "declined", "Declined"
        NOTED = "noted", "Noted"

    organization = models.ForeignKey("dispatch.Organization", on_delete=models.CASCADE, related_name="+")
    order = models.ForeignKey("dispatch.Order", on_delete=models.CASCADE, related_name="customer_requests")
    link = models.ForeignKey(TrackingLink, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    text = models.TextField(blank=True, help_text="Instructions, message or the rating's comment.")
    rating = models.PositiveSmallIntegerField(null=True, blank=True)
    window_start = models.DateTimeField(null=True, blank=True)
    window_end = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    decision_note = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(rating__isnull=True) | Q(rating__gte=1, rating__lte=5),
                name="customerrequest_rating_1_5",
            ),
            models.UniqueConstraint(
                fields=["order"], condition=Q(kind="rating"), name="customerrequest_one_rating_per_order"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} for order {self.order_id}"
