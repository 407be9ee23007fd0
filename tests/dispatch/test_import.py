import datetime as dt
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from django.conf import settings
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from dispatch import imports
from dispatch.models import Order
from tests.factories import DepotFactory, OrderFactory

URL = reverse("dispatch:order_import")
HEADER = "external_ref,recipient_name,address,lat,lng,service_date,window_start,window_end,parcels"


def _csv(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def _upload(client: Client, data: bytes, name: str = "orders.csv"):
    upload = SimpleUploadedFile(name, data, content_type="text/csv")
    return client.post(URL, {"action": "upload", "service_date": "2026-11-24", "file": upload})


def _token(response) -> str:
    assert response.status_code == 302, response.content.decode()[:2000]
    return parse_qs(urlsplit(response["Location"]).query)["token"][0]


def _confirm(client: Client, token: str):
    return client.post(URL, {"action": "confirm", "token": token})


def _messages(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def _stored_files(org) -> list[Path]:
    folder = Path(settings.MEDIA_ROOT) / "imports" / str(org.pk)
    return list(folder.iterdir()) if folder.exists() else []


GOOD = _csv(
    HEADER,
    'SHOP-1,Anna Schmidt,"Oranienstraße 25, 10999 Berlin",52.5016,13.4190,2026-11-24,09:00,12:00,2',
    "SHOP-2,Jörg Müller,Wiener Straße 10 Berlin,52.4980,13.4330,2026-07-01,09:00,11:30,1",
)


# --- Through the pages ----------------------------------------------------------------------


@pytest.mark.django_db
def test_good_file_saves_every_row_with_utc_windows(dispatcher_client, org):
    token = _token(_upload(dispatcher_client, GOOD))
    preview = dispatcher_client.get(URL, {"token": token})
    assert preview.context["step"] == "preview"
    assert [row.row for row in preview.context["result"].rows] == [2, 3]
    assert Order.objects.count() == 0  # the preview saves nothing

    response = _confirm(dispatcher_client, token)

    assert response.status_code == 302
    assert response["Location"] == reverse("dispatch:order_list") + "?date=2026-07-01"
    winter = Order.objects.get(external_ref="SHOP-1")
    summer = Order.objects.get(external_ref="SHOP-2")
    # Berlin is UTC+1 in November and UTC+2 in July.
    assert winter.window_start == dt.datetime(2026, 11, 24, 8, 0, tzinfo=dt.UTC)
    assert winter.window_end == dt.datetime(2026, 11, 24, 11, 0, tzinfo=dt.UTC)
    assert summer.window_start == dt.datetime(2026, 7, 1, 7, 0, tzinfo=dt.UTC)
    assert (winter.organization, winter.parcels, winter.address) == (
        org,
        2,
        "Oranienstraße 25, 10999 Berlin",
    )
    assert _messages(response) == [
        "Imported 2 orders (0 duplicates skipped, 0 need a location). "
        "They are for 2 dates, 01 Jul to 24 Nov 2026."
    ]
    assert _stored_files(org) == []


@pytest.mark.django_db
def test_bad_rows_are_listed_and_nothing_is_saved(dispatcher_client):
    data = _csv(
        HEADER,
        "SHOP-1,Anna Schmidt,Oranienstraße 25,52.5,13.4,2026-11-24,09:00,12:00,1",
        "SHOP-2,Jörg Müller,Wiener Straße 10,52.5,13.4,2026-13-45,09:00,12:00,1",
        "SHOP-3,,Bergmannstraße 5,52.5,13.4,2026-11-24,12:00,09:00,many",
    )
    token = _token(_upload(dispatcher_client, data))

    preview = dispatcher_client.get(URL, {"token": token})
    errors = {(e.row, e.column) for e in preview.context["result"].errors}
    assert errors == {
        (3, "service_date"),
        (4, "recipient_name"),
        (4, "window_end"),
        (4, "parcels"),
    }
    html = preview.content.decode()
    assert "“2026-13-45” is not a date" in html
    assert "fix the file and upload it again" in html
    assert 'disabled aria-describedby="import-blocked"' in html

    response = _confirm(dispatcher_client, token)

    assert response.status_code == 200
    assert "Nothing was imported" in response.content.decode()
    assert Order.objects.count() == 0


@pytest.mark.django_db
def test_duplicates_of_existing_references_are_reported_not_doubled(dispatcher_client, org):
    existing = OrderFactory(organization=org, external_ref="SHOP-1")
    OrderFactory(external_ref="SHOP-2")  # another organisation's order does not count
    token = _token(_upload(dispatcher_client, GOOD))

    preview = dispatcher_client.get(URL, {"token": token})
    duplicates = preview.context["result"].duplicates
    assert [(d.row, d.external_ref, d.order_id) for d in duplicates] == [(2, "SHOP-1", existing.pk)]
    assert "already imported as order SHOP-1" in preview.content.decode()

    response = _confirm(dispatcher_client, token)

    assert Order.objects.filter(organization=org, external_ref="SHOP-1").count() == 1
    assert Order.objects.filter(organization=org, external_ref="SHOP-2").count() == 1
    assert _messages(response) == ["Imported 1 order (1 duplicate skipped, 0 need a location)."]


@pytest.mark.django_db
def test_bom_file_imports(dispatcher_client, org):
    token = _token(_upload(dispatcher_client, b"\xef\xbb\xbf" + GOOD))
    _confirm(dispatcher_client, token)
    assert Order.objects.filter(organization=org).count() == 2


@pytest.mark.django_db
def test_semicolon_file_with_decimal_commas_imports(dispatcher_client, org):
    data = _csv(
        "Reference;Name;Address;Latitude;Longitude;Date;From;To",
        "A-1;Anna Schmidt;Oranienstraße 25, Berlin;52,5016;13,4190;24.11.2026;09:00;12:00",
    )
    token = _token(_upload(dispatcher_client, data))
    _confirm(dispatcher_client, token)
    order = Order.objects.get(organization=org)
    assert (order.external_ref, order.address, order.lat, order.lng) == (
        "A-1",
        "Oranienstraße 25, Berlin",
        52.5016,
        13.4190,
    )


@pytest.mark.django_db
def test_latin1_file_is_rejected_with_the_encoding_fix(dispatcher_client):
    data = "recipient_name,address\nJörg Müller,Straße 1\n".encode("cp1252")
    response = _upload(dispatcher_client, data)
    html = response.content.decode()
    assert response.status_code == 200
    assert "Save the file as CSV UTF-8" in html
    assert "byte 0xF6 on line 2" in html
    assert Order.objects.count() == 0


@pytest.mark.django_db
def test_oversized_file_is_rejected(dispatcher_client, org, settings):
    settings.ORDER_IMPORT_MAX_BYTES = 100
    response = _upload(dispatcher_client, GOOD)
    assert response.status_code == 200
    assert "one import takes at most 100" in response.content.decode()
    assert _stored_files(org) == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            b"PK\x03\x04\x14\x00\x06\x00" + b"\x00" * 40,
            "This looks like an Excel file; export it as CSV",
        ),
        (b"recipient_name,address\n\x00\x01\x02\xff", "not a text CSV file"),
        (b"just some notes\nwithout any columns\n", "only one column"),
    ],
)
def test_files_that_are_not_csv_are_rejected(dispatcher_client, org, data, message):
    response = _upload(dispatcher_client, data, name="orders.xlsx")
    assert message in response.content.decode()
    assert _stored_files(org) == []


@pytest.mark.django_db
def test_unknown_headers_are_matched_by_hand_then_imported(dispatcher_client, org):
    data = _csv("Kunde,Lieferanschrift,Tag", "Anna Schmidt,Oranienstraße 25,2026-11-25")
    token = _token(_upload(dispatcher_client, data))
    step = dispatcher_client.get(URL, {"token": token})
    assert step.context["step"] == "columns"
    assert _confirm(dispatcher_client, token)["Location"].endswith(f"?token={token}")
    assert Order.objects.count() == 0

    response = dispatcher_client.post(
        URL,
        {
            "action": "columns",
            "token": token,
            "recipient_name": "0",
            "address": "1",
            "service_date": "2",
        },
    )
    assert response.status_code == 302
    preview = dispatcher_client.get(URL, {"token": token})
    assert preview.context["step"] == "preview"
    _confirm(dispatcher_client, token)

    order = Order.objects.get(organization=org)
    assert (order.recipient_name, order.address, order.service_date) == (
        "Anna Schmidt",
        "Oranienstraße 25",
        dt.date(2026, 11, 25),
    )


@pytest.mark.django_db
def test_column_mapping_refuses_one_column_for_two_fields(dispatcher_client):
    token = _token(_upload(dispatcher_client, _csv("A,B", "Anna,Street 1")))
    response = dispatcher_client.post(
        URL, {"action": "columns", "token": token, "recipient_name": "0", "address": "0"}
    )
    assert response.status_code == 200
    assert "“A” is already chosen for recipient name." in response.content.decode()


@pytest.mark.django_db
def test_row_without_coordinates_is_saved_as_needing_a_location(dispatcher_client, org):
    data = _csv("recipient_name,address", "Anna Schmidt,Oranienstraße 25")
    token = _token(_upload(dispatcher_client, data))
    response = _confirm(dispatcher_client, token)
    order = Order.objects.get(organization=org)
    assert (order.lat, order.lng, order.service_date) == (None, None, dt.date(2026, 11, 24))
    assert order.needs_location
    assert "1 needs a location" in _messages(response)[0]
    assert "?status=needs_location" in _messages(response)[0]


@pytest.mark.django_db
def test_another_organisations_dispatcher_cannot_confirm_the_upload(dispatcher_client, other_dispatcher, org):
    token = _token(_upload(dispatcher_client, GOOD))
    rival = Client()
    rival.force_login(other_dispatcher)

    assert rival.get(URL, {"token": token}).status_code == 404
    assert _confirm(rival, token).status_code == 404
    assert Order.objects.count() == 0

    _confirm(dispatcher_client, token)
    assert set(Order.objects.values_list("organization", flat=True)) == {org.pk}


@pytest.mark.django_db
def test_a_confirmed_upload_cannot_be_imported_twice(dispatcher_client):
    token = _token(_upload(dispatcher_client, _csv("recipient_name,address", "Anna,Street 1")))
    _confirm(dispatcher_client, token)
    assert _confirm(dispatcher_client, token).status_code == 404
    assert Order.objects.count() == 1


@pytest.mark.django_db
def test_cancel_deletes_the_stored_file(dispatcher_client, org):
    token = _token(_upload(dispatcher_client, GOOD))
    assert len(_stored_files(org)) == 1
    dispatcher_client.post(URL, {"action": "cancel", "token": token})
    assert _stored_files(org) == []
    assert Order.objects.count() == 0


@pytest.mark.django_db
def test_driver_gets_403(client, driver):
    client.force_login(driver.user)
    assert client.get(URL).status_code == 403
    assert _upload(client, GOOD).status_code == 403


@pytest.mark.django_db
def test_upload_page_links_the_example_file(dispatcher_client):
    html = dispatcher_client.get(URL).content.decode()
    assert "examples/orders_example.csv" in html
    assert 'accept=".csv,text/csv"' in html


# --- dispatch.imports directly --------------------------------------------------------------


def _check(org, data: bytes, **kwargs) -> imports.ImportResult:
    csv_file = imports.parse_csv(data)
    mapping = imports.match_columns(csv_file.headers)
    return imports.validate_rows(
        csv_file, mapping, organization=org, default_date=dt.date(2026, 11, 24), **kwargs
    )


def test_headers_match_by_synonym_case_and_spacing():
    mapping = imports.match_columns(
        ["Order Number", "RECIPIENT", "Tel", "E-Mail", "Address", "Latitude", "Long", "Date",
         "Window From", "window_to", "Notes", "Something else"]
    )  # fmt: skip
    assert mapping == {
        "external_ref": 0, "recipient_name": 1, "recipient_phone": 2, "recipient_email": 3,
        "address": 4, "lat": 5, "lng": 6, "service_date": 7, "window_start": 8,
        "window_end": 9, "instructions": 10,
    }  # fmt: skip


def test_example_file_is_valid(org):
    data = (Path(settings.BASE_DIR) / "static/examples/orders_example.csv").read_bytes()
    result = _check(org, data)
    assert result.errors == []
    assert (len(result.rows), result.needs_location_count) == (4, 1)


def test_dates_are_read_in_three_formats(org):
    data = _csv(
        "recipient_name,address,date",
        "A,Street 1,2026-11-25",
        "B,Street 2,25.11.2026",
        "C,Street 3,25/11/2026",
        "D,Street 4,11/25/2026",
    )
    result = _check(org, data)
    assert [row.fields["service_date"] for row in result.rows] == [dt.date(2026, 11, 25)] * 3
    assert [(e.row, e.column) for e in result.errors] == [(5, "date")]


def test_time_in_the_dst_gap_is_a_row_error(org):
    data = _csv("recipient_name,address,date,from,to", "A,Street 1,2026-03-29,02:30,04:00")
    result = _check(org, data)
    assert [(e.row, e.column) for e in result.errors] == [(2, "from")]
    assert "does not exist" in result.errors[0].message


def test_reference_repeated_within_the_file_is_an_error(org):
    data = _csv("ref,name,address", "X-1,A,Street 1", "X-2,B,Street 2", "X-1,C,Street 3")
    result = _check(org, data)
    assert [(e.row, e.column, e.message) for e in result.errors] == [
        (4, "ref", "“X-1” is also the reference of row 2.")
    ]


def test_unknown_depot_and_bad_values_name_their_column(org):
    DepotFactory(organization=org, name="Kreuzberg")
    data = _csv(
        "name,address,lat,lng,kind,priority,email,depot",
        "A,Street 1,52.5,13.4,pickup,HIGH,a@example.com,kreuzberg",
        "B,Street 2,95,13.4,parcel,urgent,not-an-email,Mitte",
        "C,Street 3,52.5,,delivery,normal,,",
    )
    result = _check(org, data)
    assert result.rows[0].fields["depot"].name == "Kreuzberg"
    assert (result.rows[0].fields["kind"], result.rows[0].fields["priority"]) == ("pickup", "high")
    assert [(e.row, e.column) for e in result.errors] == [
        (3, "lat"), (3, "kind"), (3, "priority"), (3, "email"), (3, "depot"), (4, "lng"),
    ]  # fmt: skip


def test_row_with_more_values_than_headers_is_an_error(org):
    result = _check(org, _csv("name,address", "A,Street 1,10999 Berlin"))
    assert [(e.row, e.column) for e in result.errors] == [(2, "—")]


def test_row_numbers_count_blank_lines_as_in_the_file(org):
    result = _check(org, _csv("name,address", "A,Street 1", "", "B,"))
    assert [(e.row, e.column) for e in result.errors] == [(4, "address")]


class FixedGeocoder:
    def geocode(self, address: str) -> tuple[float, float] | None:
        return (52.5, 13.4) if "Berlin" in address else None


def test_configured_geocoder_fills_missing_coordinates(org, settings):
    settings.GEOCODER = "tests.dispatch.test_import.FixedGeocoder"
    result = _check(org, _csv("name,address", "A,Street 1 Berlin", "B,Nowhere 2"))
    assert [(row.fields["lat"], row.fields["lng"]) for row in result.rows] == [
        (52.5, 13.4),
        (None, None),
    ]
    assert result.needs_location_count == 1


def test_default_geocoder_finds_nothing():
    assert isinstance(imports.get_geocoder(), imports.NoopGeocoder)
    assert imports.get_geocoder().geocode("Oranienstraße 25, Berlin") is None


def test_too_many_rows_is_rejected(settings):
    settings.ORDER_IMPORT_MAX_ROWS = 2
    with pytest.raises(imports.ImportFileError, match="at most 2"):
        imports.parse_csv(_csv("name,address", "A,1", "B,2", "C,3"))


def test_header_only_file_is_rejected():
    with pytest.raises(imports.ImportFileError, match="no orders"):
        imports.parse_csv(_csv("name,address"))
