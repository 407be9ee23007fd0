"""Live data: GPS fixes from drivers and the latest good position per driver.

Writes go through tracking.services (location_record_batch); nothing here writes other rows.
"""

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
