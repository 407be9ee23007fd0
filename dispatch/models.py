"""The core domain: tenants, fleet, address book, orders, routes, stops and their history.

Models hold fields, constraints and small pure methods. Every state change goes through
dispatch.services; nothing here writes other rows or enqueues work.
"""

import secrets
import uuid
import zoneinfo

from django.conf import settings
from django.contrib.sessions.base_session import AbstractBaseSession
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.urls import reverse


def validate_timezone(value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(
            f"“{value}” is not a time zone name; use an IANA name such as Europe/Berlin."
        ) from exc


LATITUDE = [MinValueValidator(-90), MaxValueValidator(90)]
LONGITUDE = [MinValueValidator(-180), MaxValueValidator(180)]


def _coordinates_in_range(prefix: str = "") -> list[models.CheckConstraint]:
    lat, lng = f"{prefix}lat", f"{prefix}lng"
    return [
        models.CheckConstraint(
            condition=Q(**{f"{lat}__isnull": True}) | Q(**{f"{lat}__gte": -90, f"{lat}__lte": 90}),
            name=f"%(app_label)s_%(class)s_{lat}_range",
        ),
        models.CheckConstraint(
            condition=Q(**{f"{lng}__isnull": True}) | Q(**{f"{lng}__gte": -180, f"{lng}__lte": 180}),
            name=f"%(app_label)s_%(class)s_{lng}_range",
        ),
        # A point is both coordinates or neither: half a point is a data error.
        models.CheckConstraint(
            condition=Q(**{f"{lat}__isnull": True, f"{lng}__isnull": True})
            | Q(**{f"{lat}__isnull": False, f"{lng}__isnull": False}),
            name=f"%(app_label)s_%(class)s_{lat}_{lng}_together",
        ),
    ]


class Organization(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(unique=True)
    timezone = models.CharField(
        max_length=64,
        default="UTC",
        validators=[validate_timezone],
        help_text="IANA zone in which windows, shifts and “today” are read, e.g. Europe/Berlin.",
    )
    # What a delivery costs, for reports and each plan and route: distance driven and the
    # driver's paid time (the figure carriers compare with the industry's ~$10-11 per drop).
    currency = models.CharField(max_length=3, default="EUR", help_text="ISO 4217 code, e.g. EUR or USD.")
    cost_per_km = models.DecimalField(
        max_digits=8,
        decimal_places=2,
        default=0.50,
        validators=[MinValueValidator(0)],
        help_text="Vehicle cost per kilometre driven (fuel, wear, lease).",
    )
    cost_per_driver_hour = models.DecimalField(
        max_digits=8,
        decimal_places=2,
        default=25.00,
        validators=[MinValueValidator(0)],
        help_text="What an hour of a driver's time costs, wages and overheads included.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def tzinfo(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)


class Membership(models.Model):
    class Role(models.TextChoices):
        ADMIN = "admin", "Admin"
        DISPATCHER = "dispatcher", "Dispatcher"
        DRIVER = "driver", "Driver"

    # One organisation per user keeps every query's scope unambiguous.
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="membership")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices)
    daily_summary = models.BooleanField(
        default=False, help_text="E-mail me yesterday's figures every morning (dispatchers and admins)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["organization", "role", "user__username"]

    def __str__(self) -> str:
        return f"{self.user} ({self.get_role_display()} at {self.organization})"

    @property
    def uses_portal(self) -> bool:
        return self.role in (self.Role.ADMIN, self.Role.DISPATCHER)


class UserSession(AbstractBaseSession):
    """Django's session row plus the signed-in user's id, kept in step with the session's data
    by dispatch.sessions: reading a request's session then reads its user, membership and
    organisation in the same statement, one query for who is asking instead of two.

    No database constraint on the user: a session naming a user who is gone finds nobody and is
    signed out, as Django's are. Deleting a user deletes his sessions (Django's collector)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        db_constraint=False,
        related_name="+",
    )

    @classmethod
    def get_session_store_class(cls):
        from django.utils.module_loading import import_string

        return import_string(settings.SESSION_ENGINE + ".SessionStore")


class Depot(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="depots")
    name = models.CharField(max_length=200)
    address = models.CharField(max_length=300)
    lat = models.FloatField(validators=LATITUDE)
    lng = models.FloatField(validators=LONGITUDE)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="depot_name_unique"),
            *_coordinates_in_range(),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("dispatch:depot_edit", args=[self.pk])


class Vehicle(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="vehicles")
    name = models.CharField(max_length=100, help_text="What dispatchers call it, e.g. “Van 3”.")
    registration = models.CharField(max_length=20, blank=True)
    depot = models.ForeignKey(Depot, on_delete=models.PROTECT, related_name="vehicles", null=True, blank=True)
    capacity = models.PositiveIntegerField(help_text="How many parcels it carries at once.")
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="vehicle_name_unique"),
            models.CheckConstraint(condition=Q(capacity__gte=0), name="vehicle_capacity_gte_0"),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("dispatch:vehicle_edit", args=[self.pk])


class Driver(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="drivers")
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="driver")
    phone = models.CharField(max_length=32, blank=True)
    depot = models.ForeignKey(Depot, on_delete=models.PROTECT, related_name="drivers", null=True, blank=True)
    default_vehicle = models.ForeignKey(
        Vehicle, on_delete=models.SET_NULL, related_name="default_drivers", null=True, blank=True
    )
    # Where the day starts and ends when a shift says nothing; the depot when blank.
    start_lat = models.FloatField(null=True, blank=True, validators=LATITUDE)
    start_lng = models.FloatField(null=True, blank=True, validators=LONGITUDE)
    end_lat = models.FloatField(null=True, blank=True, validators=LATITUDE)
    end_lng = models.FloatField(null=True, blank=True, validators=LONGITUDE)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["user__first_name", "user__last_name", "user__username"]
        constraints = [*_coordinates_in_range("start_"), *_coordinates_in_range("end_")]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("dispatch:driver_edit", args=[self.pk])

    @property
    def name(self) -> str:
        return self.user.get_full_name() or self.user.get_username()


class Shift(models.Model):
    """A driver's availability on one (local) date, stored as UTC instants."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="shifts")
    driver = models.ForeignKey(Driver, on_delete=models.CASCADE, related_name="shifts")
    date = models.DateField(help_text="The local working day this shift belongs to.")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    break_starts_at = models.DateTimeField(null=True, blank=True)
    break_minutes = models.PositiveSmallIntegerField(default=0)
    vehicle = models.ForeignKey(
        Vehicle, on_delete=models.SET_NULL, related_name="shifts", null=True, blank=True
    )
    start_lat = models.FloatField(null=True, blank=True, validators=LATITUDE)
    start_lng = models.FloatField(null=True, blank=True, validators=LONGITUDE)
    end_lat = models.FloatField(null=True, blank=True, validators=LATITUDE)
    end_lng = models.FloatField(null=True, blank=True, validators=LONGITUDE)

    class Meta:
        ordering = ["date", "starts_at"]
        constraints = [
            models.UniqueConstraint(fields=["driver", "date"], name="shift_one_per_driver_day"),
            models.CheckConstraint(condition=Q(ends_at__gt=F("starts_at")), name="shift_end_after_start"),
            models.CheckConstraint(
                condition=Q(break_starts_at__isnull=True)
                | Q(break_starts_at__gte=F("starts_at"), break_starts_at__lt=F("ends_at")),
                name="shift_break_inside_shift",
            ),
            *_coordinates_in_range("start_"),
            *_coordinates_in_range("end_"),
        ]

    def __str__(self) -> str:
        return f"{self.driver} on {self.date}"

    @property
    def hours(self) -> float:
        worked = (self.ends_at - self.starts_at).total_seconds() / 3600
        return round(worked - self.break_minutes / 60, 2)


class Contact(models.Model):
    """The address book: a saved customer and address with defaults for new orders."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="contacts")
    name = models.CharField(max_length=200)
    company = models.CharField(max_length=200, blank=True)
    phone = models.CharField(max_length=32, blank=True)
    email = models.EmailField(blank=True)
    address = models.CharField(max_length=300)
    lat = models.FloatField(null=True, blank=True, validators=LATITUDE)
    lng = models.FloatField(null=True, blank=True, validators=LONGITUDE)
    default_instructions = models.TextField(blank=True)
    default_service_minutes = models.PositiveSmallIntegerField(default=5)
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [*_coordinates_in_range()]
        indexes = [models.Index(fields=["organization", "name"])]

    def __str__(self) -> str:
        return f"{self.name}, {self.address}"

    def get_absolute_url(self) -> str:
        return reverse("dispatch:contact_edit", args=[self.pk])


def new_handover_pin() -> str:
    """Four random digits the customer gives the driver at the door (from `secrets`)."""
    return f"{secrets.randbelow(10_000):04d}"


class Order(models.Model):
    class Kind(models.TextChoices):
        DELIVERY = "delivery", "Delivery"
        PICKUP = "pickup", "Pickup (return to depot)"

    class Status(models.TextChoices):
        NEW = "new", "New"
        PLANNED = "planned", "Planned"
        ASSIGNED = "assigned", "Assigned"
        OUT_FOR_DELIVERY = "out_for_delivery", "Out for delivery"
        DELIVERED = "delivered", "Delivered"
        PICKED_UP = "picked_up", "Picked up"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Priority(models.TextChoices):
        NORMAL = "normal", "Normal"
        HIGH = "high", "High (must be served)"

    OPEN_STATUSES = (
        Status.NEW,
        Status.PLANNED,
        Status.ASSIGNED,
        Status.OUT_FOR_DELIVERY,
        Status.FAILED,
    )

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="orders")
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.DELIVERY)
    external_ref = models.CharField(
        "external reference",
        max_length=100,
        blank=True,
        help_text="Your shop's order number; unique within your organisation.",
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.NEW)
    contact = models.ForeignKey(
        Contact, on_delete=models.SET_NULL, related_name="orders", null=True, blank=True
    )
    depot = models.ForeignKey(Depot, on_delete=models.PROTECT, related_name="orders", null=True, blank=True)
    recipient_name = models.CharField(max_length=200)
    recipient_phone = models.CharField(max_length=32, blank=True)
    recipient_email = models.EmailField(blank=True)
    address = models.CharField(max_length=300)
    lat = models.FloatField(null=True, blank=True, validators=LATITUDE)
    lng = models.FloatField(null=True, blank=True, validators=LONGITUDE)
    service_date = models.DateField()
    window_start = models.DateTimeField(null=True, blank=True)
    window_end = models.DateTimeField(null=True, blank=True)
    service_minutes = models.PositiveSmallIntegerField(default=5)
    parcels = models.PositiveIntegerField(default=1, help_text="Demand on the vehicle's capacity.")
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.NORMAL)
    required_driver = models.ForeignKey(
        Driver, on_delete=models.SET_NULL, related_name="pinned_orders", null=True, blank=True
    )
    instructions = models.TextField(blank=True)
    # What the customer asked for on the tracking page (door code, safe place…): shown to the
    # driver beside the dispatcher's instructions, never mixed into them.
    customer_instructions = models.TextField(blank=True)
    # Handover checks (proof of delivery, pod): the parcel labels a driver may scan, a flag that
    # makes the organisation's stricter proof policy apply, and a PIN the customer is told.
    high_value = models.BooleanField(default=False, help_text="Apply the stricter proof policy.")
    parcel_codes = models.JSONField(
        default=list, blank=True, help_text="Barcodes on the parcels; a scan must match one."
    )
    require_pin = models.BooleanField(
        default=False,
        help_text="The driver must type the customer's PIN, even if the organisation does not ask.",
    )
    handover_pin = models.CharField(max_length=4, default=new_handover_pin, editable=False)
    cancel_reason = models.CharField(max_length=300, blank=True)
    # The customer's rating from the tracking page, recorded here for reports
    # (dispatch.services.order_rating_record, called by tracking).
    rating = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(5)]
    )
    rating_comment = models.TextField(blank=True)
    rated_at = models.DateTimeField(null=True, blank=True)
    # Bumped by every service write: a form saved from a stale copy is refused, not merged.
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["service_date", "window_start", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "external_ref"],
                condition=~Q(external_ref=""),
                name="order_external_ref_unique_per_org",
                violation_error_message="An order with this external reference already exists.",
            ),
            models.CheckConstraint(
                condition=Q(window_start__isnull=True)
                | Q(window_end__isnull=True)
                | Q(window_end__gt=F("window_start")),
                name="order_window_end_after_start",
                violation_error_message="The window must end after it starts.",
            ),
            models.CheckConstraint(condition=Q(parcels__gte=0), name="order_parcels_gte_0"),
            models.CheckConstraint(
                condition=Q(rating__isnull=True) | Q(rating__gte=1, rating__lte=5), name="order_rating_1_5"
            ),
            *_coordinates_in_range(),
        ]
        indexes = [
            models.Index(fields=["organization", "service_date", "status"]),
            models.Index(fields=["organization", "status"]),
        ]

    def __str__(self) -> str:
        ref = self.external_ref or f"#{self.pk}"
        return f"{ref} {self.recipient_name}"

    def get_absolute_url(self) -> str:
        return reverse("dispatch:order_detail", args=[self.pk])

    @property
    def needs_location(self) -> bool:
        return self.lat is None or self.lng is None

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN_STATUSES


class Plan(models.Model):
    """One optimisation run: inputs, options, progress and result (built out in issue #3)."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Objective(models.TextChoices):
        TIME = "time", "Minimise travel time"
        DISTANCE = "distance", "Minimise distance"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="plans")
    date = models.DateField()
    depot = models.ForeignKey(Depot, on_delete=models.PROTECT, related_name="plans")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    objective = models.CharField(max_length=10, choices=Objective.choices, default=Objective.TIME)
    time_budget_seconds = models.PositiveSmallIntegerField(
        default=10, validators=[MinValueValidator(1), MaxValueValidator(120)]
    )
    options = models.JSONField(default=dict, blank=True)
    progress = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    # The exact inputs the solver saw (points, matrices, jobs, vehicles), compressed, so a plan
    # can be re-run and checked later even if orders or the road model changed since.
    problem = models.BinaryField(null=True, blank=True, editable=False)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(time_budget_seconds__gte=1, time_budget_seconds__lte=120),
                name="plan_time_budget_range",
            )
        ]

    def __str__(self) -> str:
        return f"Plan {self.pk} for {self.date} ({self.get_status_display()})"

    def get_absolute_url(self) -> str:
        return reverse("dispatch:plan_detail", args=[self.pk])


class Route(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        PUBLISHED = "published", "Published"
        IN_PROGRESS = "in_progress", "In progress"
        COMPLETED = "completed", "Completed"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="routes")
    plan = models.ForeignKey(Plan, on_delete=models.SET_NULL, related_name="routes", null=True, blank=True)
    date = models.DateField()
    depot = models.ForeignKey(Depot, on_delete=models.PROTECT, related_name="routes")
    driver = models.ForeignKey(Driver, on_delete=models.PROTECT, related_name="routes")
    vehicle = models.ForeignKey(
        Vehicle, on_delete=models.PROTECT, related_name="routes", null=True, blank=True
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    locked = models.BooleanField(default=False, help_text="Re-optimisation leaves a locked route as it is.")
    planned_start = models.DateTimeField(null=True, blank=True)
    planned_end = models.DateTimeField(null=True, blank=True)
    planned_distance_m = models.PositiveIntegerField(null=True, blank=True)
    planned_duration_s = models.PositiveIntegerField(null=True, blank=True)
    # Driven so far, from the driver's good GPS fixes while the route is in progress (kept by
    # tracking's ingest through dispatch.services.route_travelled_set).
    travelled_distance_m = models.PositiveIntegerField(default=0)
    # The driven path, simplified to a few hundred [lat, lng] points, for the route page's
    # planned-vs-actual map (written by tracking through dispatch.services).
    travelled_path = models.JSONField(default=list, blank=True)
    # Rules the current sequence breaks (late for a window, overloaded, past the shift's end),
    # recomputed after every change so a dispatcher never accepts one silently.
    violations = models.JSONField(default=list, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["date", "driver__user__first_name"]
        indexes = [models.Index(fields=["organization", "date", "status"])]
        constraints = [
            # Drafts may compete; a driver works one live route a day.
            models.UniqueConstraint(
                fields=["driver", "date"],
                condition=~Q(status="draft"),
                name="route_one_live_route_per_driver_day",
                violation_error_message="This driver already has a published route that day.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.driver} on {self.date}"

    def get_absolute_url(self) -> str:
        return reverse("dispatch:route_detail", args=[self.pk])

    @property
    def travelled_km(self) -> float:
        return self.travelled_distance_m / 1000


class Stop(models.Model):
    """One visit of one order on one route. A re-attempt is a new Stop; history stays."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        EN_ROUTE = "en_route", "En route"
        ARRIVED = "arrived", "Arrived"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="stops")
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    route = models.ForeignKey(Route, on_delete=models.CASCADE, related_name="stops")
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="stops")
    sequence = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    planned_arrival = models.DateTimeField(
        null=True, blank=True, help_text="When service is planned to start (after any wait)."
    )
    planned_wait_s = models.PositiveIntegerField(
        null=True, blank=True, help_text="Seconds the driver is planned to wait for the window to open."
    )
    # The live estimate of when service starts, kept by tracking's ETA engine
    # (dispatch.services.stops_eta_set); eta_updated_at says how fresh it is.
    eta = models.DateTimeField(null=True, blank=True)
    eta_updated_at = models.DateTimeField(null=True, blank=True)
    arrived_at = models.DateTimeField(null=True, blank=True)
    departed_at = models.DateTimeField(null=True, blank=True)
    failure_reason = models.CharField(max_length=200, blank=True)
    # Recorded by pod when the stop's proof is saved, so reports never read pod's tables:
    # when it was captured and whether it held everything the policy asks for.
    proof_recorded_at = models.DateTimeField(null=True, blank=True)
    proof_complete = models.BooleanField(null=True, blank=True)
    # Recorded by dispatch.services.stop_transition when the visit ends completed or failed:
    # True if no attempt of the same order had ended before it. Reports count first-attempt
    # success from it instead of searching every order's history per stop (issue #7).
    first_attempt = models.BooleanField(null=True, blank=True, editable=False)
    # The order's window as it stood when the visit ended (stop_transition copies it on completed
    # or failed), so a window moved later does not rewrite whether this visit was on time, and
    # reports judge punctuality without joining every order (issue #7).
    window_start = models.DateTimeField(null=True, blank=True, editable=False)
    window_end = models.DateTimeField(null=True, blank=True, editable=False)
    # The customer's rating of the order, on its successful stop (order_rating_record copies it).
    rating = models.PositiveSmallIntegerField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["route", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["route", "sequence"], name="stop_sequence_unique_per_route"),
        ]

    def __str__(self) -> str:
        return f"Stop {self.sequence} of {self.route}: {self.order}"


class StopEvent(models.Model):
    """Append-only history of an order's life and its visits. Reports and disputes read it.

    Claimed by tracking's notification sweep through `notified_at` (conditional update).
    """

    class Kind(models.TextChoices):
        CREATED = "created", "Created"
        UPDATED = "updated", "Updated"
        LOCATED = "located", "Location set"
        STATUS = "status", "Status changed"
        CANCELLED = "cancelled", "Cancelled"
        EN_ROUTE = "en_route", "En route"
        ARRIVED = "arrived", "Arrived"
        DELIVERED = "delivered", "Delivered"
        PICKED_UP = "picked_up", "Picked up"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"
        NOTE = "note", "Note"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="stop_events")
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="events")
    stop = models.ForeignKey(Stop, on_delete=models.PROTECT, related_name="events", null=True, blank=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    from_status = models.CharField(max_length=20, blank=True)
    to_status = models.CharField(max_length=20, blank=True)
    reason = models.CharField(max_length=200, blank=True)
    note = models.TextField(blank=True)
    lat = models.FloatField(null=True, blank=True)
    lng = models.FloatField(null=True, blank=True)
    at = models.DateTimeField(help_text="When it happened (may precede when it was recorded).")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    recorded_at = models.DateTimeField(auto_now_add=True)
    notified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["at", "pk"]
        indexes = [
            models.Index(fields=["organization", "at"]),
            # The dashboard fingerprint's summary of today's events: without it every poll read
            # the organisation's whole history (46 ms a poll with 200 days of it, 0.35 ms with).
            models.Index(fields=["organization", "recorded_at"], name="stopevent_org_recorded"),
            models.Index(fields=["notified_at"], name="stopevent_unnotified"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} · {self.order} · {self.at:%Y-%m-%d %H:%M}"


class ApiKey(models.Model):
    """An organisation's key for integrations (shops, ERPs): shown once, stored as a hash.

    The key acts for its organisation with a dispatcher's reach on the REST API, never the
    portal or the driver endpoints. `prefix` (the first characters) finds the row; the hash
    of the whole key proves it.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, help_text="What uses it, e.g. “Shopify shop”.")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "name"],
                condition=Q(revoked_at__isnull=True),
                name="apikey_active_name_unique_per_org",
                violation_error_message="An active key with this name already exists.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class IdempotencyRecord(models.Model):
    """The first answer to a POST sent with an `Idempotency-Key`, replayed for repeats.

    `principal` names who sent it ("key:<id>" or "user:<id>"): keys are scoped per sender.
    `status_code` is null while the first request is still being handled (a repeat then
    gets a 409), and `request_hash` tells a repeat from a different request with the same key.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    principal = models.CharField(max_length=40)
    key = models.CharField(max_length=255)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=500)
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    response_headers = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["principal", "key"], name="idempotency_key_unique_per_principal")
        ]
        indexes = [models.Index(fields=["created_at"], name="idempotency_created")]

    def __str__(self) -> str:
        return f"{self.method} {self.path} [{self.key}]"
