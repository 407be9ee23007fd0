"""The orders CSV import: upload → (match columns) → preview → confirm.

Every step is a plain form and a redirect, so it works without JavaScript. The uploaded bytes
wait in default_storage under imports/<organization id>/<token>.csv; the session remembers the
one pending upload per organisation, and only that session's organisation can review or save
it. Nothing is written to the orders until the confirm step, which saves every valid row or none.
"""

import uuid
from datetime import date
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.html import format_html
from django.views.decorators.http import require_http_methods

from dispatch import imports, services
from dispatch.forms import DateInput, NoColonLabels
from dispatch.permissions import portal_view
from dispatch.timeutils import local_today

TEMPLATE = "dispatch/order_import.html"
PREVIEW_ROWS = 20
# How long a confirm holds its claim on an upload, so a double-click cannot import it twice.
CLAIM_SECONDS = 300


class UploadForm(NoColonLabels, forms.Form):
    file = forms.FileField(
        label="CSV file",
        widget=forms.FileInput(attrs={"accept": ".csv,text/csv"}),
        help_text="UTF-8 (with or without BOM), separated by commas or semicolons.",
    )
    service_date = forms.DateField(
        label="Service date for rows without one",
        widget=DateInput(),
        help_text="Used when the file has no date column or a row leaves it blank.",
    )

    def clean_file(self) -> bytes:
        upload = self.cleaned_data["file"]
        try:
            imports.check_size(upload.size)  # before reading a huge file into memory
            data = upload.read()
            imports.parse_csv(data)
        except imports.ImportFileError as exc:
            raise ValidationError(str(exc)) from exc
        return data


class ColumnMappingForm(NoColonLabels, forms.Form):
    """One select per column we know, listing the file's headers."""

    def __init__(self, *args: Any, headers: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.headers = headers
        choices = [("", "— not in the file —")] + [
            (str(index), header) for index, header in enumerate(headers)
        ]
        for column in imports.COLUMNS:
            self.fields[column.name] = forms.TypedChoiceField(
                label=column.label + (" (required)" if column.required else ""),
                choices=choices,
                coerce=int,
                empty_value=None,
                required=column.required,
                help_text=column.help,
                error_messages={"required": f"Choose the column that holds the {column.label.lower()}."},
            )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        used: dict[int, str] = {}
        for column in imports.COLUMNS:
            index = data.get(column.name)
            if index is None:
                continue
            if index in used:
                self.add_error(
                    column.name,
                    f"“{self.headers[index]}” is already chosen for "
                    f"{imports.COLUMNS_BY_NAME[used[index]].label.lower()}.",
                )
            else:
                used[index] = column.name
        return data

    def mapping(self) -> dict[str, int]:
        return {name: index for name, index in self.cleaned_data.items() if index is not None}


@require_http_methods(["GET", "POST"])
@portal_view
def order_import(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        action = request.POST.get("action", "upload")
        if action == "upload":
            return _upload(request)
        pending = _pending(request, request.POST.get("token", ""))
        if pending is None:
            return _gone(request)
        if action == "columns":
            return _save_columns(request, pending)
        if action == "confirm":
            return _confirm(request, pending)
        if action == "cancel":
            _discard(request, pending)
            messages.info(request, "Import cancelled; nothing was saved.")
            return redirect("dispatch:order_import")
        return HttpResponseBadRequest("Unknown import step.")
    token = request.GET.get("token", "")
    if not token:
        return _upload_page(request, _new_upload_form(request))
    pending = _pending(request, token)
    if pending is None:
        return _gone(request)
    return _review(request, pending, columns=request.GET.get("step") == "columns")


# --- Steps ----------------------------------------------------------------------------------


def _upload(request: HttpRequest) -> HttpResponse:
    form = UploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return _upload_page(request, form)
    org = request.organization
    previous = request.session.get(_session_key(request))
    if previous:
        default_storage.delete(previous["name"])
    token = uuid.uuid4().hex
    name = default_storage.save(f"imports/{org.pk}/{token}.csv", ContentFile(form.cleaned_data["file"]))
    request.session[_session_key(request)] = {
        "token": token,
        "name": name,
        "filename": form.files["file"].name[:200],
        "service_date": form.cleaned_data["service_date"].isoformat(),
        "mapping": None,
    }
    return redirect(_review_url(token))


def _review(request: HttpRequest, pending: dict, *, columns: bool = False) -> HttpResponse:
    csv_file = _load(pending)
    if csv_file is None:
        return _gone(request)
    mapping = _mapping(pending, csv_file)
    if columns or imports.missing_required(mapping):
        form = ColumnMappingForm(
            initial={name: str(index) for name, index in mapping.items()},
            headers=csv_file.header_labels,
        )
        return _columns_page(request, pending, csv_file, form)
    return _preview_page(request, pending, _validate(request, pending, csv_file, mapping))


def _save_columns(request: HttpRequest, pending: dict) -> HttpResponse:
    csv_file = _load(pending)
    if csv_file is None:
        return _gone(request)
    form = ColumnMappingForm(request.POST, headers=csv_file.header_labels)
    if not form.is_valid():
        return _columns_page(request, pending, csv_file, form)
    request.session[_session_key(request)] = {**pending, "mapping": form.mapping()}
    return redirect(_review_url(pending["token"]))


def _confirm(request: HttpRequest, pending: dict) -> HttpResponse:
    csv_file = _load(pending)
    if csv_file is None:
        return _gone(request)
    mapping = _mapping(pending, csv_file)
    if imports.missing_required(mapping):
        return redirect(_review_url(pending["token"]))
    # Re-checked from the stored file, not trusted from the preview: orders may have been
    # imported (or depots renamed) since.
    result = _validate(request, pending, csv_file, mapping)
    if not result.can_save:
        return _preview_page(request, pending, result, refused=True)
    claim = f"order-import-claim:{pending['token']}"
    if not cache.add(claim, True, CLAIM_SECONDS):
        messages.warning(request, "This file is already being imported.")
        return redirect("dispatch:order_list")
    try:
        created = services.orders_create_many(
            organization=request.organization, by=request.user, rows=result.order_fields()
        )
    except ValidationError as exc:
        cache.delete(claim)
        result.errors.extend(_service_errors(exc, result))
        return _preview_page(request, pending, result, refused=True)
    _discard(request, pending)
    dates = sorted({order.service_date for order in created})
    messages.success(request, _imported_message(created, result, dates))
    return redirect(f"{reverse('dispatch:order_list')}?date={dates[0]:%Y-%m-%d}")


# --- Helpers --------------------------------------------------------------------------------


def _session_key(request: HttpRequest) -> str:
    return f"order_import:{request.organization.pk}"


def _review_url(token: str) -> str:
    return f"{reverse('dispatch:order_import')}?token={token}"


def _pending(request: HttpRequest, token: str) -> dict | None:
    """This organisation's pending upload in this session, if `token` names it."""
    pending = request.session.get(_session_key(request))
    if not pending or not token or pending.get("token") != token:
        return None
    if not pending["name"].startswith(f"imports/{request.organization.pk}/"):
        return None
    return pending


def _load(pending: dict) -> imports.CsvFile | None:
    try:
        with default_storage.open(pending["name"], "rb") as stored:
            return imports.parse_csv(stored.read())
    except (FileNotFoundError, imports.ImportFileError):
        return None


def _discard(request: HttpRequest, pending: dict) -> None:
    default_storage.delete(pending["name"])
    request.session.pop(_session_key(request), None)


def _mapping(pending: dict, csv_file: imports.CsvFile) -> dict[str, int]:
    if pending.get("mapping") is not None:
        return {name: int(index) for name, index in pending["mapping"].items()}
    return imports.match_columns(csv_file.headers)


def _validate(
    request: HttpRequest, pending: dict, csv_file: imports.CsvFile, mapping: dict[str, int]
) -> imports.ImportResult:
    return imports.validate_rows(
        csv_file,
        mapping,
        organization=request.organization,
        default_date=date.fromisoformat(pending["service_date"]),
    )


def _service_errors(exc: ValidationError, result: imports.ImportResult) -> list[imports.RowError]:
    """The service numbers rows 1, 2, … in the list it got; show the file's row numbers."""
    errors = []
    for message in exc.messages:
        head, sep, rest = message.partition(": ")
        if sep and head.startswith("Row ") and head[4:].isdigit():
            errors.append(imports.RowError(row=result.file_row(int(head[4:])), column="—", message=rest))
        else:
            errors.append(imports.RowError(row=0, column="—", message=message))
    return errors


def _imported_message(created: list, result: imports.ImportResult, dates: list[date]) -> str:
    count, skipped = len(created), len(result.duplicates)
    unplaced = sum(1 for order in created if order.needs_location)
    text = (
        f"Imported {count} order{'s' if count != 1 else ''} "
        f"({skipped} duplicate{'s' if skipped != 1 else ''} skipped, "
        f"{unplaced} need{'s' if unplaced == 1 else ''} a location)."
    )
    if len(dates) > 1:
        text += f" They are for {len(dates)} dates, {dates[0]:%d %b} to {dates[-1]:%d %b %Y}."
    if not unplaced:
        return text
    return format_html(
        '{} <a href="{}?status=needs_location">Show the orders that need a location</a>.',
        text,
        reverse("dispatch:order_list"),
    )


def _new_upload_form(request: HttpRequest) -> UploadForm:
    return UploadForm(initial={"service_date": local_today(request.organization.tzinfo)})


def _gone(request: HttpRequest) -> HttpResponse:
    """An unknown, finished or other organisation's upload: say so and offer a new upload."""
    context = {
        "gone": True,
        "step": "upload",
        "form": _new_upload_form(request),
    }
    return _render(request, context, status=404)


def _upload_page(request: HttpRequest, form: UploadForm) -> HttpResponse:
    return _render(request, {"step": "upload", "form": form})


def _columns_page(
    request: HttpRequest, pending: dict, csv_file: imports.CsvFile, form: ColumnMappingForm
) -> HttpResponse:
    _, first_row = csv_file.rows[0]
    samples = [
        (label, first_row[index].strip() if index < len(first_row) else "")
        for index, label in enumerate(csv_file.header_labels)
    ]
    context = {"step": "columns", "pending": pending, "form": form, "samples": samples}
    return _render(request, context)


def _preview_page(
    request: HttpRequest, pending: dict, result: imports.ImportResult, *, refused: bool = False
) -> HttpResponse:
    context = {
        "step": "preview",
        "pending": pending,
        "result": result,
        "preview_rows": result.rows[:PREVIEW_ROWS],
        "refused": refused,
    }
    return _render(request, context)


def _render(request: HttpRequest, context: dict[str, Any], status: int = 200) -> HttpResponse:
    context = {
        "nav": "orders",
        "columns": imports.COLUMNS,
        "max_rows": f"{settings.ORDER_IMPORT_MAX_ROWS:,}",
        **context,
    }
    return render(request, TEMPLATE, context, status=status)
