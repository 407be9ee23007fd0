"""Reading and checking an orders CSV file. Pure parsing and validation: no HTTP, no writes.

dispatch.import_views drives it (upload → column mapping → preview → confirm) and hands the
valid rows to dispatch.services.orders_create_many, which saves all of them or none.

Row numbers are the ones a spreadsheet shows: the header line is row 1, the first order row 2.
"""

import csv
import io
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any, Protocol

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.template.defaultfilters import filesizeformat
from django.utils.module_loading import import_string

from dispatch.models import Depot, Order, Organization
from dispatch.timeutils import local_datetime

logger = logging.getLogger(__name__)

DEFAULT_GEOCODER = "dispatch.imports.NoopGeocoder"


class ImportFileError(Exception):
    """The file as a whole cannot be read (too large, not CSV, wrong encoding, too many rows)."""


@dataclass(frozen=True)
class Column:
    name: str
    label: str
    required: bool = False
    help: str = ""
    synonyms: tuple[str, ...] = ()


COLUMNS: tuple[Column, ...] = (
    Column(
        "external_ref",
        "External reference",
        help="Your shop's order number; an order already imported with the same reference is skipped.",
        synonyms=(
            "reference",
            "ref",
            "order number",
            "order no",
            "order id",
            "order",
            "external reference",
            "order ref",
            "bestellnummer",
            "referenz",
        ),
    ),
    Column(
        "kind",
        "Kind",
        help="delivery or pickup (a return to the depot); delivery if blank.",
        synonyms=("type", "order type"),
    ),
    Column(
        "recipient_name",
        "Recipient name",
        required=True,
        synonyms=(
            "name",
            "recipient",
            "customer",
            "customer name",
            "contact",
            "contact name",
            "empfänger",
            "empfaenger",
        ),
    ),
    Column(
        "recipient_phone",
        "Recipient phone",
        synonyms=("phone", "tel", "telephone", "mobile", "phone number", "telefon"),
    ),
    Column(
        "recipient_email",
        "Recipient e-mail",
        synonyms=("email", "e-mail", "mail", "recipient e-mail"),
    ),
    Column(
        "address",
        "Address",
        required=True,
        synonyms=("delivery address", "full address", "adresse", "anschrift"),
    ),
    Column(
        "lat",
        "Latitude",
        help="Decimal degrees, e.g. 52.5016. Without coordinates the order is saved as “needs location”.",
        synonyms=("latitude", "breitengrad"),
    ),
    Column(
        "lng",
        "Longitude",
        help="Decimal degrees, e.g. 13.4190.",
        synonyms=("lon", "long", "longitude", "längengrad", "laengengrad"),
    ),
    Column(
        "service_date",
        "Service date",
        help="YYYY-MM-DD, DD.MM.YYYY or DD/MM/YYYY; the date chosen on the upload form if blank.",
        synonyms=("date", "delivery date", "day", "datum"),
    ),
    Column(
        "window_start",
        "Window from",
        help="HH:MM local time.",
        synonyms=("from", "window from", "start", "time from", "earliest"),
    ),
    Column(
        "window_end",
        "Window to",
        help="HH:MM local time, after “Window from”.",
        synonyms=("to", "window to", "end", "time to", "latest"),
    ),
    Column(
        "service_minutes",
        "Service minutes",
        help="Minutes spent at the door; 5 if blank.",
        synonyms=("service time", "minutes", "duration"),
    ),
    Column(
        "parcels",
        "Parcels",
        help="How many parcels; 1 if blank.",
        synonyms=("packages", "parcel count", "pieces", "quantity", "qty", "pakete"),
    ),
    Column("priority", "Priority", help="normal or high; normal if blank.", synonyms=("prio",)),
    Column(
        "instructions",
        "Instructions",
        synonyms=("notes", "note", "comment", "comments", "delivery instructions", "hinweis"),
    ),
    Column("depot", "Depot", help="The name of one of your depots; optional.", synonyms=("hub",)),
)
COLUMNS_BY_NAME = {column.name: column for column in COLUMNS}
REQUIRED = tuple(column.name for column in COLUMNS if column.required)

DATE_FORMATS = ("%Y-%m-%d", "%d.%m.%Y", "%d/%m/%Y")
TIME_RE = re.compile(r"^(\d{1,2})[:.](\d{2})(?::(\d{2}))?$")
SERVICE_MINUTES_MAX = 600
PARCELS_MAX = 10000


def _normalised(header: str) -> str:
    return re.sub(r"[\s_\-.]+", "", header.strip().casefold())


_HEADER_INDEX: dict[str, str] = {}
for _column in COLUMNS:
    for _alias in (_column.name, _column.label, *_column.synonyms):
        _HEADER_INDEX.setdefault(_normalised(_alias), _column.name)


# --- Reading the file -----------------------------------------------------------------------


@dataclass
class CsvFile:
    headers: list[str]
    rows: list[tuple[int, list[str]]]  # (row number in the file, cells), blank rows left out
    delimiter: str

    def header_label(self, index: int) -> str:
        header = self.headers[index].strip() if index < len(self.headers) else ""
        return header or f"Column {index + 1}"

    @property
    def header_labels(self) -> list[str]:
        return [self.header_label(index) for index in range(len(self.headers))]


def parse_csv(data: bytes, *, max_bytes: int | None = None, max_rows: int | None = None) -> CsvFile:
    """Decode and split an uploaded file. Raises ImportFileError saying what to fix."""
    max_bytes = settings.ORDER_IMPORT_MAX_BYTES if max_bytes is None else max_bytes
    max_rows = settings.ORDER_IMPORT_MAX_ROWS if max_rows is None else max_rows
    check_size(len(data), max_bytes)
    text = _decode(data)
    delimiter = _delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=False)
    headers: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    try:
        for number, cells in enumerate(reader, start=1):
            if not any(cell.strip() for cell in cells):
                continue
            if headers is None:
                headers = cells
                continue
            rows.append((number, cells))
            if len(rows) > max_rows:
                raise ImportFileError(
                    f"The file has more than {max_rows:,} order rows; one import takes at most "
                    f"{max_rows:,}. Split it into smaller files."
                )
    except csv.Error as exc:
        raise ImportFileError(
            f"The file could not be read as CSV near line {reader.line_num}: {exc}. "
            "Check for an unclosed quotation mark."
        ) from exc
    if headers is None:
        raise ImportFileError(
            "The file is empty. Upload a CSV file with a header line and one order per line."
        )
    if len(headers) < 2:
        raise ImportFileError(
            "This doesn't look like a CSV file: the first line has no commas or semicolons, so "
            "there is only one column. The first line must name the columns (e.g. "
            "recipient_name,address,…); export the sheet as CSV and upload that."
        )
    if not rows:
        raise ImportFileError("The file has a header line but no orders below it.")
    return CsvFile(headers=[header.strip() for header in headers], rows=rows, delimiter=delimiter)


def check_size(size: int, max_bytes: int | None = None) -> None:
    max_bytes = settings.ORDER_IMPORT_MAX_BYTES if max_bytes is None else max_bytes
    if size > max_bytes:
        raise ImportFileError(
            f"The file is {filesizeformat(size)}; one import takes at most "
            f"{filesizeformat(max_bytes)}. Split it into smaller files."
        )


_SIGNATURES = (
    (
        b"PK\x03\x04",
        "This looks like an Excel file; export it as CSV (in Excel: File → Save As → "
        "“CSV UTF-8”) and upload that.",
    ),
    (
        b"\xd0\xcf\x11\xe0",
        "This looks like an old Excel (.xls) file; export it as CSV (in Excel: "
        "File → Save As → “CSV UTF-8”) and upload that.",
    ),
    (b"%PDF", "This is a PDF, not a CSV file. Export the orders as CSV and upload that."),
    (
        b"\xff\xfe",
        "The file is saved as UTF-16 (“Unicode text”). Save the file as CSV UTF-8 and upload it again.",
    ),
    (
        b"\xfe\xff",
        "The file is saved as UTF-16 (“Unicode text”). Save the file as CSV UTF-8 and upload it again.",
    ),
)


def _decode(data: bytes) -> str:
    for signature, message in _SIGNATURES:
        if data.startswith(signature):
            raise ImportFileError(message)
    if b"\x00" in data[:65536]:
        raise ImportFileError(
            "This is not a text CSV file (it contains binary data). Export the orders as CSV and upload that."
        )
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        byte = data[exc.start]
        raise ImportFileError(
            f"The file is not UTF-8 text: byte 0x{byte:02X} on line {line} cannot be read (the "
            "file was probably saved as Windows-1252/Latin-1, e.g. Excel's plain “CSV” format). "
            "Save the file as CSV UTF-8 and upload it again."
        ) from exc


def _delimiter(text: str) -> str:
    """Comma or semicolon (German/French Excel), whichever the header line uses more."""
    header = next((line for line in text.splitlines() if line.strip()), "")
    commas, semicolons = header.count(","), header.count(";")
    if commas != semicolons:
        return "," if commas > semicolons else ";"
    try:
        return csv.Sniffer().sniff(text[:8192], delimiters=",;").delimiter
    except csv.Error:
        return ","


# --- Columns --------------------------------------------------------------------------------


def match_columns(headers: Iterable[str]) -> dict[str, int]:
    """Our column name → index of the file's column, by name or a common synonym."""
    mapping: dict[str, int] = {}
    for index, header in enumerate(headers):
        name = _HEADER_INDEX.get(_normalised(header))
        if name is not None and name not in mapping:
            mapping[name] = index
    return mapping


def missing_required(mapping: Mapping[str, int]) -> list[str]:
    return [name for name in REQUIRED if name not in mapping]


# --- Geocoding ------------------------------------------------------------------------------


class Geocoder(Protocol):
    def geocode(self, address: str) -> tuple[float, float] | None:
        """(lat, lng) for an address, or None when it cannot be found."""


class NoopGeocoder:
    """The default: coordinates come from the file; an order without them needs a location."""

    def geocode(self, address: str) -> tuple[float, float] | None:
        return None


def get_geocoder() -> Geocoder:
    return import_string(getattr(settings, "GEOCODER", DEFAULT_GEOCODER))()


def _geocode(geocoder: Geocoder, address: str) -> tuple[float, float] | None:
    try:
        point = geocoder.geocode(address)
    except Exception:  # an unreachable geocoder must not stop the import: place it by hand
        logger.exception("Geocoding failed for an imported address")
        return None
    if point is None:
        return None
    lat, lng = point
    if not (-90 <= lat <= 90 and -180 <= lng <= 180):
        return None
    return float(lat), float(lng)


# --- Rows -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowError:
    row: int
    column: str
    message: str


@dataclass(frozen=True)
class Duplicate:
    row: int
    external_ref: str
    order_id: int

    @property
    def message(self) -> str:
        return f"already imported as order {self.external_ref} (#{self.order_id})"


@dataclass
class ValidRow:
    row: int
    fields: dict[str, Any]

    @property
    def needs_location(self) -> bool:
        return self.fields.get("lat") is None


@dataclass
class ImportResult:
    rows: list[ValidRow] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)

    @property
    def error_row_count(self) -> int:
        return len({error.row for error in self.errors})

    @property
    def needs_location_count(self) -> int:
        return sum(1 for row in self.rows if row.needs_location)

    @property
    def can_save(self) -> bool:
        return not self.errors and bool(self.rows)

    @property
    def service_dates(self) -> list[date]:
        return sorted({row.fields["service_date"] for row in self.rows})

    def order_fields(self) -> list[dict[str, Any]]:
        """What dispatch.services.orders_create_many takes."""
        return [row.fields for row in self.rows]

    def file_row(self, position: int) -> int:
        """The file's row number of the `position`-th (1-based) row handed to the service."""
        return self.rows[position - 1].row


def validate_rows(
    csv_file: CsvFile,
    mapping: Mapping[str, int],
    *,
    organization: Organization,
    default_date: date | None = None,
    geocoder: Geocoder | None = None,
) -> ImportResult:
    """Check every row; list each problem with its row and column. Writes nothing.

    Rows whose external reference the organisation already has are duplicates (skipped, not
    errors); a reference repeated inside the file is an error.
    """
    geocoder = geocoder or get_geocoder()
    checker = _RowChecker(csv_file, mapping, organization, default_date)
    result = ImportResult(
        ignored_columns=[
            csv_file.header_label(index)
            for index in range(len(csv_file.headers))
            if index not in set(mapping.values())
        ]
    )
    refs = {checker.value(cells, "external_ref") for _, cells in csv_file.rows} - {""}
    existing = _existing_refs(organization, refs)
    first_row_of_ref: dict[str, int] = {}
    for number, cells in csv_file.rows:
        ref = checker.value(cells, "external_ref")
        if ref and ref in existing:
            result.duplicates.append(Duplicate(row=number, external_ref=ref, order_id=existing[ref]))
            continue
        fields, problems = checker.check(cells)
        if ref:
            if ref in first_row_of_ref:
                problems.append(
                    (
                        "external_ref",
                        f"“{ref}” is also the reference of row {first_row_of_ref[ref]}.",
                    )
                )
            else:
                first_row_of_ref[ref] = number
        if problems:
            # In the file's column order, as the dispatcher reads the row left to right.
            problems.sort(key=lambda problem: mapping.get(problem[0], -1))
            result.errors.extend(
                RowError(row=number, column=checker.column_label(name), message=message)
                for name, message in problems
            )
            continue
        if fields.get("lat") is None:
            point = _geocode(geocoder, fields["address"])
            if point is not None:
                fields["lat"], fields["lng"] = point
        result.rows.append(ValidRow(row=number, fields=fields))
    return result


def _existing_refs(organization: Organization, refs: set[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    ordered = sorted(refs)
    for start in range(0, len(ordered), 500):  # stay under SQLite's bound-parameter limit
        chunk = ordered[start : start + 500]
        found.update(
            Order.objects.filter(organization=organization, external_ref__in=chunk).values_list(
                "external_ref", "pk"
            )
        )
    return found


class _RowChecker:
    def __init__(
        self,
        csv_file: CsvFile,
        mapping: Mapping[str, int],
        organization: Organization,
        default_date: date | None,
    ) -> None:
        self.csv_file = csv_file
        self.mapping = dict(mapping)
        self.tz = organization.tzinfo
        self.organization = organization
        self.default_date = default_date
        self.width = len(csv_file.headers)
        self.depots = (
            {depot.name.casefold(): depot for depot in Depot.objects.filter(organization=organization)}
            if "depot" in self.mapping
            else {}
        )

    def value(self, cells: list[str], name: str) -> str:
        index = self.mapping.get(name)
        if index is None or index >= len(cells):
            return ""
        return cells[index].strip()

    def column_label(self, name: str) -> str:
        if name in self.mapping:
            return self.csv_file.header_label(self.mapping[name])
        if name in COLUMNS_BY_NAME:
            return COLUMNS_BY_NAME[name].label
        return "—"

    def check(self, cells: list[str]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        fields: dict[str, Any] = {}
        problems: list[tuple[str, str]] = []
        if any(cell.strip() for cell in cells[self.width :]):
            problems.append(
                ("", f"This row has {len(cells)} values but the header has {self.width} columns; "
                     "is there an unquoted comma or semicolon in a value?")
            )  # fmt: skip

        def parse(name: str, parser, *args: Any) -> Any:
            raw = self.value(cells, name)
            try:
                return parser(raw, *args)
            except ValueError as exc:
                problems.append((name, str(exc)))
                return None

        for name in (
            "external_ref",
            "recipient_name",
            "recipient_phone",
            "address",
            "instructions",
        ):
            text = parse(name, _text, name)
            if text is not None:
                fields[name] = text
        email = parse("recipient_email", _email)
        if email is not None:
            fields["recipient_email"] = email
        fields["kind"] = parse("kind", _choice, Order.Kind, Order.Kind.DELIVERY, "kind")
        fields["priority"] = parse("priority", _choice, Order.Priority, Order.Priority.NORMAL, "priority")
        service_minutes = parse("service_minutes", _whole, SERVICE_MINUTES_MAX)
        if service_minutes is not None:
            fields["service_minutes"] = service_minutes
        parcels = parse("parcels", _whole, PARCELS_MAX)
        if parcels is not None:
            fields["parcels"] = parcels

        lat = parse("lat", _coordinate, 90, "latitude")
        lng = parse("lng", _coordinate, 180, "longitude")
        lat_raw, lng_raw = self.value(cells, "lat"), self.value(cells, "lng")
        if bool(lat_raw) != bool(lng_raw):
            missing = "lng" if lat_raw else "lat"
            problems.append((missing, "Give both latitude and longitude, or neither."))
        fields["lat"], fields["lng"] = (lat, lng) if lat is not None and lng is not None else (None, None)

        day = parse("service_date", _date)
        if day is None and not self.value(cells, "service_date"):
            day = self.default_date
            if day is None:
                problems.append(("service_date", "The service date is missing."))
        fields["service_date"] = day
        start = parse("window_start", _time)
        end = parse("window_end", _time)
        start_raw, end_raw = self.value(cells, "window_start"), self.value(cells, "window_end")
        if bool(start_raw) != bool(end_raw):
            name = "window_end" if start_raw else "window_start"
            problems.append((name, "Give both ends of the window, or neither."))
        fields["window_start"] = self._instant(day, start, "window_start", problems)
        fields["window_end"] = self._instant(day, end, "window_end", problems)
        if fields["window_start"] and fields["window_end"] and fields["window_end"] <= fields["window_start"]:
            problems.append(("window_end", f"The window must end after it starts ({start_raw}–{end_raw})."))

        depot_name = self.value(cells, "depot")
        if depot_name:
            depot = self.depots.get(depot_name.casefold())
            if depot is None:
                known = ", ".join(sorted(d.name for d in self.depots.values())) or "none yet"
                problems.append(("depot", f"No depot is called “{depot_name}” (yours: {known})."))
            fields["depot"] = depot

        for name in REQUIRED:
            if not self.value(cells, name) and not any(n == name for n, _ in problems):
                problems.append((name, f"The {COLUMNS_BY_NAME[name].label.lower()} is missing."))
        if not problems:
            problems.extend(self._model_problems(fields))
        return fields, problems

    def _instant(
        self, day: date | None, at: time | None, name: str, problems: list[tuple[str, str]]
    ) -> datetime | None:
        if day is None or at is None:
            return None
        try:
            return local_datetime(day, at, self.tz)
        except ValidationError as exc:
            problems.append((name, " ".join(exc.messages)))
            return None

    def _model_problems(self, fields: dict[str, Any]) -> list[tuple[str, str]]:
        """The model's own field checks, so a clean preview means the save will succeed."""
        order = Order(organization=self.organization, **fields)
        try:
            order.full_clean(
                exclude=["organization", "depot", "contact", "required_driver"],
                validate_unique=False,
                validate_constraints=False,
            )
        except ValidationError as exc:
            return [
                (name if name in COLUMNS_BY_NAME else "", message)
                for name, messages in exc.message_dict.items()
                for message in messages
            ]
        return []


def _text(raw: str, name: str) -> str:
    limit = Order._meta.get_field(name).max_length
    if limit and len(raw) > limit:
        raise ValueError(f"Too long: {len(raw)} characters, at most {limit}.")
    return raw


def _email(raw: str) -> str:
    if raw:
        try:
            validate_email(raw)
        except ValidationError as exc:
            raise ValueError(f"“{raw}” is not an e-mail address.") from exc
    return raw


def _choice(raw: str, choices, default: str, what: str) -> str:
    if not raw:
        return default
    wanted = raw.casefold()
    for value, label in choices.choices:
        if wanted in (value, label.casefold()):
            return value
    allowed = " or ".join(value for value, _ in choices.choices)
    raise ValueError(f"“{raw}” is not a {what}; use {allowed}.")


def _whole(raw: str, maximum: int) -> int | None:
    if not raw:
        return None
    if not raw.isdigit():
        raise ValueError(f"“{raw}” is not a whole number.")
    number = int(raw)
    if number > maximum:
        raise ValueError(f"{number} is too large; at most {maximum}.")
    return number


def _coordinate(raw: str, limit: int, what: str) -> float | None:
    if not raw:
        return None
    # Excel in German, French, … writes a decimal comma: "52,5016" in a semicolon file.
    text = raw.replace(",", ".") if raw.count(",") == 1 and "." not in raw else raw
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"“{raw}” is not a {what}; use decimal degrees, e.g. 52.5016.") from None
    if not -limit <= number <= limit:
        raise ValueError(f"{raw} is not a {what}: it must be between -{limit} and {limit}.")
    return number


def _date(raw: str) -> date | None:
    if not raw:
        return None
    for fmt in DATE_FORMATS:
        try:
            return datetime.strptime(raw, fmt).date()
        except ValueError:
            continue
    raise ValueError(f"“{raw}” is not a date; use YYYY-MM-DD (or DD.MM.YYYY, DD/MM/YYYY).")


def _time(raw: str) -> time | None:
    if not raw:
        return None
    match = TIME_RE.match(raw)
    if match:
        hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
        if hour < 24 and minute < 60 and second < 60:
            return time(hour, minute, second)
    raise ValueError(f"“{raw}” is not a time; use HH:MM, e.g. 09:30.")
