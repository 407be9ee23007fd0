"""Portal forms. They parse and check input; dispatch.services does the writing.

Times are entered as local wall-clock times in the organisation's zone and turned into UTC
instants with dispatch.timeutils (a time skipped by a DST jump is refused, never guessed).
"""

from datetime import date, datetime, time
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from dispatch.models import Contact, Depot, Driver, Order, Organization, Vehicle
from dispatch.timeutils import local_datetime


def add_service_errors(form: forms.Form, exc: ValidationError) -> None:
    """Show a service's ValidationError on the form: on its field when the form has one."""
    if hasattr(exc, "error_dict"):
        for field, errors in exc.error_dict.items():
            target = field if field in form.fields else None
            for error in errors:
                form.add_error(target, error)
    else:
        form.add_error(None, exc)


class NoColonLabels:
    """Labels sit above their fields; a trailing colon adds nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)


class DateInput(forms.DateInput):
    input_type = "date"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(format="%Y-%m-%d", **kwargs)


class TimeInput(forms.TimeInput):
    input_type = "time"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(format="%H:%M", **kwargs)


class CoordinatesMixin:
    """lat and lng come together or not at all."""

    coordinate_pairs = (("lat", "lng"),)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        for lat, lng in self.coordinate_pairs:
            if (data.get(lat) is None) != (data.get(lng) is None):
                self.add_error(lat, "Give both latitude and longitude, or neither.")
        return data


class OrderFilterForm(NoColonLabels, forms.Form):
    date = forms.DateField(required=False, widget=DateInput())
    status = forms.ChoiceField(
        required=False,
        choices=[
            ("", "Any status"),
            ("open", "Open (not finished)"),
            ("needs_location", "Needs location"),
        ]
        + list(Order.Status.choices),
    )
    depot = forms.ModelChoiceField(queryset=Depot.objects.none(), required=False, empty_label="Any depot")
    q = forms.CharField(
        required=False,
        label="Search",
        max_length=100,
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "Reference, name, address, phone"}),
    )

    def __init__(self, *args: Any, organization: Organization, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["depot"].queryset = Depot.objects.filter(organization=organization)


class OrderForm(NoColonLabels, CoordinatesMixin, forms.Form):
    kind = forms.ChoiceField(choices=Order.Kind.choices, initial=Order.Kind.DELIVERY)
    external_ref = forms.CharField(label="External reference", max_length=100, required=False)
    recipient_name = forms.CharField(max_length=200)
    recipient_phone = forms.CharField(max_length=32, required=False)
    recipient_email = forms.EmailField(required=False)
    address = forms.CharField(max_length=300)
    lat = forms.FloatField(label="Latitude", min_value=-90, max_value=90, required=False)
    lng = forms.FloatField(label="Longitude", min_value=-180, max_value=180, required=False)
    depot = forms.ModelChoiceField(queryset=Depot.objects.none(), required=False)
    service_date = forms.DateField(widget=DateInput())
    window_from = forms.TimeField(label="Window from", required=False, widget=TimeInput())
    window_to = forms.TimeField(label="Window to", required=False, widget=TimeInput())
    service_minutes = forms.IntegerField(min_value=0, max_value=600, initial=5)
    parcels = forms.IntegerField(min_value=0, max_value=10000, initial=1)
    priority = forms.ChoiceField(choices=Order.Priority.choices, initial=Order.Priority.NORMAL)
    required_driver = forms.ModelChoiceField(
        queryset=Driver.objects.none(), required=False, label="Only this driver"
    )
    instructions = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)
    high_value = forms.BooleanField(
        required=False, label="High value", help_text="The organisation's stricter proof of delivery applies."
    )
    require_pin = forms.BooleanField(
        required=False,
        label="Ask for the customer's PIN",
        help_text="The driver types the PIN the customer got.",
    )
    parcel_codes = forms.CharField(
        required=False,
        label="Parcel barcodes",
        max_length=2000,
        help_text="One per line (or comma-separated); a driver's scan must match one.",
        widget=forms.Textarea(attrs={"rows": 2}),
    )
    contact = forms.ModelChoiceField(
        queryset=Contact.objects.none(), required=False, widget=forms.HiddenInput
    )
    version = forms.IntegerField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args: Any, organization: Organization, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.organization = organization
        self.fields["depot"].queryset = Depot.objects.filter(organization=organization, is_active=True)
        self.fields["required_driver"].queryset = Driver.objects.filter(
            organization=organization, is_active=True
        ).select_related("user")
        self.fields["contact"].queryset = Contact.objects.filter(organization=organization)

    @classmethod
    def initial_from_order(cls, order: Order) -> dict[str, Any]:
        tz = order.organization.tzinfo
        initial = {name: getattr(order, name) for name in (
            "kind", "external_ref", "recipient_name", "recipient_phone", "recipient_email", "address",
            "lat", "lng", "service_date", "service_minutes", "parcels", "priority", "instructions", "version",
            "high_value", "require_pin",
        )}  # fmt: skip
        initial["parcel_codes"] = "\n".join(order.parcel_codes)
        initial.update(
            depot=order.depot_id, required_driver=order.required_driver_id, contact=order.contact_id
        )
        if order.window_start:
            initial["window_from"] = order.window_start.astimezone(tz).time()
        if order.window_end:
            initial["window_to"] = order.window_end.astimezone(tz).time()
        return initial

    @classmethod
    def initial_from_contact(cls, contact: Contact, service_date: date) -> dict[str, Any]:
        return {
            "contact": contact.pk,
            "recipient_name": contact.name,
            "recipient_phone": contact.phone,
            "recipient_email": contact.email,
            "address": contact.address,
            "lat": contact.lat,
            "lng": contact.lng,
            "instructions": contact.default_instructions,
            "service_minutes": contact.default_service_minutes,
            "service_date": service_date,
        }

    def clean_parcel_codes(self) -> list[str]:
        codes = [c.strip() for c in self.cleaned_data["parcel_codes"].replace(",", "\n").splitlines()]
        codes = list(dict.fromkeys(c for c in codes if c))  # blank lines and repeats dropped
        if any(len(code) > 100 for code in codes):
            raise ValidationError("A parcel code is at most 100 characters.")
        if len(codes) > 100:
            raise ValidationError("At most 100 parcel codes per order.")
        return codes

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        day, start, end = data.get("service_date"), data.get("window_from"), data.get("window_to")
        if (start is None) != (end is None):
            self.add_error(
                "window_to" if start else "window_from", "Give both ends of the window, or neither."
            )
        data["window_start"] = self._instant(day, start, "window_from")
        data["window_end"] = self._instant(day, end, "window_to")
        if data["window_start"] and data["window_end"] and data["window_end"] <= data["window_start"]:
            self.add_error("window_to", "The window must end after it starts.")
        return data

    def _instant(self, day: date | None, at: time | None, field: str) -> datetime | None:
        if day is None or at is None:
            return None
        try:
            return local_datetime(day, at, self.organization.tzinfo)
        except ValidationError as exc:
            self.add_error(field, exc)
            return None

    def service_fields(self) -> dict[str, Any]:
        """The cleaned data in the shape dispatch.services.order_create/order_update take."""
        data = dict(self.cleaned_data)
        for name in ("window_from", "window_to", "version"):
            data.pop(name, None)
        return data


class OrderCancelForm(NoColonLabels, forms.Form):
    reason = forms.CharField(max_length=300, required=False, label="Reason (shown in the history)")


class ContactForm(NoColonLabels, CoordinatesMixin, forms.ModelForm):
    class Meta:
        model = Contact
        fields = [
            "name", "company", "phone", "email", "address", "lat", "lng",
            "default_instructions", "default_service_minutes", "notes",
        ]  # fmt: skip
        widgets = {
            "default_instructions": forms.Textarea(attrs={"rows": 2}),
            "notes": forms.Textarea(attrs={"rows": 2}),
        }
        labels = {"lat": "Latitude", "lng": "Longitude"}


class DepotForm(NoColonLabels, forms.ModelForm):
    class Meta:
        model = Depot
        fields = ["name", "address", "lat", "lng", "is_active"]
        labels = {"lat": "Latitude", "lng": "Longitude", "is_active": "In use"}


class VehicleForm(NoColonLabels, forms.ModelForm):
    class Meta:
        model = Vehicle
        fields = ["name", "registration", "depot", "capacity", "is_active"]
        labels = {"is_active": "In use"}

    def __init__(self, *args: Any, organization: Organization, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["depot"].queryset = Depot.objects.filter(organization=organization)


class DriverForm(NoColonLabels, forms.Form):
    first_name = forms.CharField(max_length=150)
    last_name = forms.CharField(max_length=150, required=False)
    username = forms.RegexField(
        regex=r"^[\w.@+-]+$",
        max_length=150,
        help_text="What the driver logs in with: letters, digits and @ . + - _ only.",
        error_messages={"invalid": "Use only letters, digits and @ . + - _ in a username."},
    )
    email = forms.EmailField(required=False)
    password = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        required=False,
        min_length=8,
        help_text="At least 8 characters. Leave blank to keep the current one.",
    )
    phone = forms.CharField(max_length=32, required=False)
    depot = forms.ModelChoiceField(queryset=Depot.objects.none(), required=False)
    default_vehicle = forms.ModelChoiceField(queryset=Vehicle.objects.none(), required=False)
    start_lat = forms.FloatField(min_value=-90, max_value=90, required=False, label="Start latitude")
    start_lng = forms.FloatField(min_value=-180, max_value=180, required=False, label="Start longitude")
    end_lat = forms.FloatField(min_value=-90, max_value=90, required=False, label="End latitude")
    end_lng = forms.FloatField(min_value=-180, max_value=180, required=False, label="End longitude")
    is_active = forms.BooleanField(required=False, initial=True, label="Active")

    def __init__(self, *args: Any, organization: Organization, editing: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["depot"].queryset = Depot.objects.filter(organization=organization)
        self.fields["default_vehicle"].queryset = Vehicle.objects.filter(organization=organization)
        if editing:
            self.fields["username"].disabled = True
            self.fields["username"].required = False
        else:
            self.fields["password"].help_text = "At least 8 characters; the driver logs in with it."
            self.fields["password"].required = True

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        for prefix in ("start_", "end_"):
            if (data.get(f"{prefix}lat") is None) != (data.get(f"{prefix}lng") is None):
                self.add_error(f"{prefix}lat", "Give both latitude and longitude, or neither.")
        return data

    @classmethod
    def initial_from_driver(cls, driver: Driver) -> dict[str, Any]:
        return {
            "first_name": driver.user.first_name,
            "last_name": driver.user.last_name,
            "username": driver.user.username,
            "email": driver.user.email,
            "phone": driver.phone,
            "depot": driver.depot_id,
            "default_vehicle": driver.default_vehicle_id,
            "start_lat": driver.start_lat,
            "start_lng": driver.start_lng,
            "end_lat": driver.end_lat,
            "end_lng": driver.end_lng,
            "is_active": driver.is_active,
        }

    def driver_fields(self) -> dict[str, Any]:
        names = (
            "phone",
            "depot",
            "default_vehicle",
            "start_lat",
            "start_lng",
            "end_lat",
            "end_lng",
            "is_active",
        )
        return {name: self.cleaned_data[name] for name in names}


class ShiftForm(NoColonLabels, forms.Form):
    date = forms.DateField(widget=DateInput())
    start = forms.TimeField(widget=TimeInput(), label="Starts")
    end = forms.TimeField(
        widget=TimeInput(), label="Ends", help_text="Before the start means the next morning."
    )
    break_start = forms.TimeField(widget=TimeInput(), required=False, label="Break at")
    break_minutes = forms.IntegerField(min_value=0, max_value=240, initial=0, label="Break minutes")
    vehicle = forms.ModelChoiceField(
        queryset=Vehicle.objects.none(), required=False, label="Vehicle (if not the usual)"
    )

    def __init__(self, *args: Any, organization: Organization, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.organization = organization
        self.fields["vehicle"].queryset = Vehicle.objects.filter(organization=organization, is_active=True)

    def clean(self) -> dict[str, Any]:
        from datetime import timedelta

        data = super().clean()
        day, start, end = data.get("date"), data.get("start"), data.get("end")
        if day is None or start is None or end is None:
            return data
        tz = self.organization.tzinfo
        try:
            data["starts_at"] = local_datetime(day, start, tz)
        except ValidationError as exc:
            self.add_error("start", exc)
            return data
        try:
            # A shift ending "before" it starts runs past midnight (a night shift).
            data["ends_at"] = local_datetime(day + timedelta(days=1) if end <= start else day, end, tz)
        except ValidationError as exc:
            self.add_error("end", exc)
            return data
        data["break_starts_at"] = None
        if data.get("break_start"):
            brk = data["break_start"]
            try:
                data["break_starts_at"] = local_datetime(
                    day + timedelta(days=1) if brk < start else day, brk, tz
                )
            except ValidationError as exc:
                self.add_error("break_start", exc)
        return data

    def shift_fields(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "date": data["date"],
            "starts_at": data["starts_at"],
            "ends_at": data["ends_at"],
            "break_starts_at": data.get("break_starts_at"),
            "break_minutes": data["break_minutes"],
            "vehicle": data.get("vehicle"),
        }

    @classmethod
    def initial_from_shift(cls, shift) -> dict[str, Any]:
        tz = shift.organization.tzinfo
        return {
            "date": shift.date,
            "start": shift.starts_at.astimezone(tz).time(),
            "end": shift.ends_at.astimezone(tz).time(),
            "break_start": shift.break_starts_at.astimezone(tz).time() if shift.break_starts_at else None,
            "break_minutes": shift.break_minutes,
            "vehicle": shift.vehicle_id,
        }
