"""The reports page: what happened, who did well, what to change. Figures from dispatch.reports.

Filters travel in the query string (?start=&end=&depot=&driver=&sort=), so a report is a link
a dispatcher can share; `format=csv&table=<name>` downloads any table or chart's numbers.
"""

import csv
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from dispatch import reports, services
from dispatch.charts import Series, bar_chart, line_chart
from dispatch.forms import DateInput, NoColonLabels
from dispatch.models import Depot, Driver, Organization
from dispatch.permissions import portal_view
from dispatch.plan_views import ROUTE_COLOURS
from dispatch.timeutils import local_today

DEFAULT_DAYS = 28
DELIVERED_COLOUR, FAILED_COLOUR = "#1b9e77", "#d95f02"
ON_TIME_COLOUR, FIRST_COLOUR = "#1f78b4", "#7570b3"


class ReportFilterForm(NoColonLabels, forms.Form):
    start = forms.DateField(label="From", required=False, widget=DateInput())
    end = forms.DateField(label="To", required=False, widget=DateInput())
    depot = forms.ModelChoiceField(queryset=Depot.objects.none(), required=False, empty_label="All depots")
    driver = forms.ModelChoiceField(queryset=Driver.objects.none(), required=False, empty_label="All drivers")
    sort = forms.ChoiceField(
        required=False,
        widget=forms.HiddenInput,
        choices=[("", "")] + [(p + key, p + key) for key in reports.DRIVER_SORTS for p in ("", "-")],
    )

    def __init__(self, *args: Any, organization: Organization, today: date, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.organization, self.today = organization, today
        self.fields["depot"].queryset = Depot.objects.filter(organization=organization)
        self.fields["driver"].queryset = Driver.objects.filter(organization=organization).select_related(
            "user"
        )
        self.fields["depot"].error_messages["invalid_choice"] = (
            "That depot is not one of yours; choose from the list."
        )
        self.fields["driver"].error_messages["invalid_choice"] = (
            "That driver is not one of yours; choose from the list."
        )
        self.fields["sort"].error_messages["invalid_choice"] = (
            "The driver table cannot be sorted by “%(value)s”; click a column heading instead."
        )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.errors:
            return data
        end = data.get("end") or self.today
        start = data.get("start") or end - timedelta(days=DEFAULT_DAYS - 1)
        if start > end:
            raise ValidationError("The start of the period is after its end: swap the two dates.")
        if (end - start).days + 1 > reports.MAX_DAYS:
            raise ValidationError(f"Choose a period of at most {reports.MAX_DAYS} days.")
        data["start"], data["end"] = start, end
        # Show the period actually used in the date fields, defaults included.
        self.data = self.data.copy()
        self.data["start"], self.data["end"] = start.isoformat(), end.isoformat()
        return data

    def filters(self) -> reports.ReportFilters:
        data = self.cleaned_data
        return reports.ReportFilters(
            organization=self.organization,
            start=data["start"],
            end=data["end"],
            depot=data.get("depot"),
            driver=data.get("driver"),
        )

    def querystring(self, **changes: Any) -> str:
        """The cleaned filters as a query string, with `changes` applied (None drops a key)."""
        data = self.cleaned_data
        params = {
            "start": data["start"].isoformat(),
            "end": data["end"].isoformat(),
            "depot": data["depot"].pk if data.get("depot") else None,
            "driver": data["driver"].pk if data.get("driver") else None,
            "sort": data.get("sort") or None,
        } | changes
        return urlencode({k: v for k, v in params.items() if v not in (None, "")})


# --- CSV exports -----------------------------------------------------------------------------


def _minutes(seconds: float | None) -> float | None:
    return round(seconds / 60, 1) if seconds is not None else None


def _driver_name(row: dict) -> str:
    name = f"{row['driver__user__first_name']} {row['driver__user__last_name']}".strip()
    return name or row["driver__user__username"]


DRIVER_COLUMNS = [
    ("name", "driver"), ("routes", "routes"), ("attempts", "attempts"), ("delivered", "delivered"),
    ("failed", "failed"), ("success_rate", "success_pct"), ("on_time_rate", "on_time_pct"),
    ("first_attempt_rate", "first_attempt_pct"), ("late_delay_min", "avg_delay_late_min"),
    ("driver_hours", "driver_hours"), ("stops_per_hour", "stops_per_driver_hour"),
    ("service_min", "avg_service_min"), ("rating_avg", "rating_avg"), ("rating_count", "rating_count"),
    ("proof_rate", "proof_complete_pct"), ("planned_km", "planned_km"), ("travelled_km", "driven_km"),
    ("planned_cost_per_stop", "planned_cost_per_stop"),
    ("actual_cost_per_delivery", "actual_cost_per_delivery"),
]  # fmt: skip

SUMMARY_COLUMNS = [
    ("attempts", "attempts"), ("delivered", "delivered"), ("failed", "failed"),
    ("on_time_rate", "on_time_pct"), ("windowed", "attempts_with_window"),
    ("late", "late"), ("early", "early"),
    ("late_delay_min", "avg_delay_late_min"), ("first_attempt_rate", "first_attempt_pct"),
    ("stops_per_hour", "stops_per_driver_hour"), ("service_min", "avg_service_min"),
    ("rating_avg", "rating_avg"), ("rating_count", "rating_count"), ("proof_rate", "proof_complete_pct"),
    ("routes", "routes"), ("completed_routes", "completed_routes"), ("planned_km", "planned_km"),
    ("travelled_km", "driven_km_completed_routes"), ("planned_hours", "planned_hours"),
    ("driver_hours", "driver_hours_completed_routes"), ("planned_cost", "planned_cost"),
    ("actual_cost", "actual_cost"), ("planned_cost_per_stop", "planned_cost_per_stop"),
    ("actual_cost_per_delivery", "actual_cost_per_delivery"),
]  # fmt: skip


def _table(f: reports.ReportFilters, name: str, sort: str) -> tuple[list[str], list[list[Any]]]:
    """(header, rows) of one export; raises KeyError for an unknown table."""
    if name == "summary":
        orders, summary = reports.report_orders(f), reports.report_summary(f)
        header = ["orders", "orders_delivered", "orders_failed", "orders_open", "orders_cancelled"]
        header += [label for _key, label in SUMMARY_COLUMNS] + ["currency"]
        row = [orders["total"], orders["delivered"], orders["failed"], orders["open"], orders["cancelled"]]
        return header, [row + [summary[key] for key, _label in SUMMARY_COLUMNS] + [f.organization.currency]]
    if name == "failures":
        return ["reason", "failed"], [[r["reason"], r["n"]] for r in reports.report_failures(f)]
    if name == "drivers":
        rows = reports.report_drivers(f, sort=sort)
        return [label for _key, label in DRIVER_COLUMNS], [
            [r[key] for key, _l in DRIVER_COLUMNS] for r in rows
        ]
    if name == "routes":
        header = [
            "route", "date", "driver", "depot", "status", "stops", "delivered", "failed", "planned_km",
            "driven_km", "planned_min", "actual_min", "planned_cost", "actual_cost",
        ]  # fmt: skip
        rows = [
            [
                r["pk"], r["date"].isoformat(), _driver_name(r), r["depot__name"], r["status"],
                r["stop_count"],
                r["delivered"], r["failed"],
                round(r["planned_distance_m"] / 1000, 2) if r["planned_distance_m"] is not None else None,
                round(r["travelled_distance_m"] / 1000, 2), _minutes(r["planned_s"]), _minutes(r["actual_s"]),
                round(r["planned_cost"], 2) if r["planned_cost"] is not None else None,
                round(r["actual_cost"], 2) if r["actual_cost"] is not None else None,
            ]
            for r in reports.report_routes(f)
        ]  # fmt: skip
        return header, rows
    if name == "daily":
        header = ["day", "attempts", "delivered", "failed", "on_time_pct", "first_attempt_pct"]
        return header, [
            [d["day"].isoformat(), d["attempts"], d["delivered"], d["failed"], d["on_time_rate"],
             d["first_attempt_rate"]]
            for d in reports.report_daily(f)
        ]  # fmt: skip
    if name == "hours":
        return ["hour", "delivered"], [[h["hour"], h["n"]] for h in reports.report_hours(f)]
    if name == "weekdays":
        return ["weekday", "delivered"], [[w["weekday"], w["n"]] for w in reports.report_weekdays(f)]
    if name == "failure_days":
        grid = reports.report_failure_days(f)
        return ["day", *grid["reasons"]], [[d["day"].isoformat(), *d["counts"]] for d in grid["days"]]
    raise KeyError(name)


CSV_TABLES = ("summary", "failures", "drivers", "routes", "daily", "hours", "weekdays", "failure_days")


def _csv(f: reports.ReportFilters, name: str, sort: str) -> HttpResponse:
    try:
        header, rows = _table(f, name, sort)
    except KeyError:
        return HttpResponse(
            f"There is no table “{name[:40]}” to export; use one of: {', '.join(CSV_TABLES)}.\n",
            status=400,
            content_type="text/plain; charset=utf-8",
        )
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    filename = f"doorstep-{name}-{f.start.isoformat()}-{f.end.isoformat()}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    writer = csv.writer(response)
    writer.writerow(header)
    writer.writerows(["" if v is None else v for v in row] for row in rows)
    return response


# --- The page --------------------------------------------------------------------------------


def _charts(f: reports.ReportFilters, *, stop_grid: list[dict], failure_grid: list[dict]) -> dict[str, Any]:
    daily = reports.report_daily(f, grid=stop_grid)
    labels = [f"{d['day']:%a %d %b}" if len(daily) <= 10 else f"{d['day']:%d %b}" for d in daily]
    arrivals = reports.report_arrival_grid(f)
    hours = reports.report_hours(f, rows=arrivals)
    weekdays = reports.report_weekdays(f, rows=arrivals)
    grid = reports.report_failure_days(f, rows=failure_grid)
    return {
        "volume": bar_chart(
            title="Attempts per day",
            labels=labels,
            series=[
                Series("delivered", DELIVERED_COLOUR, [d["delivered"] for d in daily]),
                Series("failed", FAILED_COLOUR, [d["failed"] for d in daily]),
            ],
        ),
        "quality": line_chart(
            title="On-time and first-attempt success per day",
            labels=labels,
            series=[
                Series("on time", ON_TIME_COLOUR, [d["on_time_rate"] for d in daily]),
                Series("first attempt", FIRST_COLOUR, [d["first_attempt_rate"] for d in daily]),
            ],
        ),
        "hours": bar_chart(
            title="Successful deliveries by hour of day",
            labels=[f"{h['hour']:02d}" for h in hours],
            series=[Series("delivered", DELIVERED_COLOUR, [h["n"] for h in hours])],
        ),
        "weekdays": bar_chart(
            title="Successful deliveries by weekday",
            labels=[w["weekday"] for w in weekdays],
            series=[Series("delivered", DELIVERED_COLOUR, [w["n"] for w in weekdays])],
        ),
        "failure_days": bar_chart(
            title="Failed attempts per day by reason",
            labels=labels,
            series=[
                Series(
                    reason,
                    ROUTE_COLOURS[(i + 1) % len(ROUTE_COLOURS)],
                    [d["counts"][i] for d in grid["days"]],
                )
                for i, reason in enumerate(grid["reasons"])
            ],
        ),
    }


def _sort_headers(form: ReportFilterForm, sort: str) -> list[dict[str, Any]]:
    headers = []
    for key, label in reports.DRIVER_SORTS.items():
        current = sort.removeprefix("-") == key
        descending = sort.startswith("-")
        # Names sort A→Z first; figures biggest first.
        first = key if key == "name" else f"-{key}"
        target = (key if descending else f"-{key}") if current else first
        headers.append(
            {
                "label": label,
                "key": key,
                "url": "?" + form.querystring(sort=target),
                "aria": ("descending" if descending else "ascending") if current else None,
                "num": key != "name",
            }
        )
    return headers


@require_GET
@portal_view
def report_list(request: HttpRequest) -> HttpResponse:
    org = request.organization
    form = ReportFilterForm(request.GET, organization=org, today=local_today(org.tzinfo))
    wants_csv = request.GET.get("format") == "csv"
    if not form.is_valid():
        if wants_csv:
            text = "; ".join(e for errors in form.errors.values() for e in errors)
            return HttpResponse(
                f"Check the filters: {text}\n", status=400, content_type="text/plain; charset=utf-8"
            )
        context = {"nav": "reports", "form": form, "daily_summary": _daily_summary(request)}
        return render(request, "dispatch/report_list.html", context, status=400)
    f = form.filters()
    sort = form.cleaned_data.get("sort") or "name"
    if wants_csv:
        return _csv(f, request.GET.get("table", ""), sort)
    # One scan each, shared by the tables and charts that add them up (dispatch.reports).
    stop_grid, route_grid = reports.report_stop_grid(f), reports.report_route_grid(f)
    failure_grid = reports.report_failure_grid(f)
    summary = reports.report_summary(f, grid=stop_grid, routes=route_grid)
    routes = reports.report_routes(f, limit=reports.ROUTE_ROWS_SHOWN)
    context = {
        "nav": "reports",
        "form": form,
        "filters": f,
        "qs": form.querystring(),
        "orders": reports.report_orders(f),
        "summary": summary,
        "failures": reports.report_failures(f, rows=failure_grid),
        "drivers": reports.report_drivers(f, sort=sort, grid=stop_grid, routes=route_grid),
        "sort_headers": _sort_headers(form, sort),
        "routes": routes,
        "routes_more": max(0, summary["routes"] - len(routes)),
        "charts": _charts(f, stop_grid=stop_grid, failure_grid=failure_grid),
        "organization": org,
        "daily_summary": _daily_summary(request),
    }
    return render(request, "dispatch/report_list.html", context)


# --- The daily summary opt-in (tracking.summaries sends it; its e-mail links here) -------------


def _daily_summary(request: HttpRequest) -> dict[str, Any]:
    return {
        "on": request.membership.daily_summary,
        "email": request.user.email,
        "hour": settings.DAILY_SUMMARY_HOUR,
        "qs": request.GET.urlencode(),
    }


@require_POST
@portal_view
def daily_summary(request: HttpRequest) -> HttpResponse:
    """POST enabled=on (or nothing, for off): the member's daily summary e-mail, then back to
    the reports page with the filters it came from."""
    enabled = request.POST.get("enabled") == "on"
    try:
        services.membership_daily_summary_set(membership=request.membership, enabled=enabled)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        if enabled:
            messages.success(
                request,
                f"Daily summary on: yesterday's figures go to {request.user.email} every morning.",
            )
        else:
            messages.success(request, "Daily summary off: no more morning e-mails.")
    # Only a query string comes back from the form, re-encoded: never a URL to follow elsewhere.
    query = QueryDict(request.POST.get("qs", "")).urlencode()
    return redirect(reverse("dispatch:report_list") + (f"?{query}" if query else "") + "#daily-summary")
