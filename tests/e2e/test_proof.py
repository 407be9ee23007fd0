"""Proof of delivery on a phone: photo and signature captured, the stop completed, and the
dispatcher sees the proof on the order's page (issue #5 item 8)."""

import io

import pytest
from PIL import Image
from playwright.sync_api import expect

from dispatch.models import Stop
from pod.models import ProofOfDelivery, ProofPolicy
from tests.dispatch.conftest import day  # noqa: F401 - fixture
from tests.e2e.test_driver import phone, published  # noqa: F401 - fixtures

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _photo() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (1200, 900), (180, 120, 60)).save(out, format="JPEG")
    return out.getvalue()


def _sign(page, canvas) -> None:
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + 20, box["y"] + box["height"] / 2)
    page.mouse.down()
    for step in range(1, 12):
        page.mouse.move(box["x"] + 20 + step * 25, box["y"] + box["height"] / 2 + (-1) ** step * 30)
    page.mouse.up()


def test_the_driver_captures_photo_and_signature_and_the_dispatcher_sees_the_proof(
    browser,
    live_server,
    published,  # noqa: F811 - the fixture
    dispatcher,
    org,
):
    ProofPolicy.objects.create(organization=org, requires=ProofPolicy.Requires.BOTH)
    route = published
    first = route.stops.order_by("sequence").first()
    context, page = phone(browser, live_server, route)
    violations = []
    page.on("console", lambda msg: "Content Security Policy" in msg.text and violations.append(msg.text))
    card = page.locator(f"#stop-{first.pk}")

    card.get_by_role("button", name="Delivered…").click()
    form = card.locator("form[data-proof-form]")
    expect(form).to_be_visible()
    form.get_by_role("button", name="Complete delivery").click()
    expect(form.locator("[data-proof-error]")).to_contain_text("a photo, the signature")
    assert Stop.objects.get(pk=first.pk).status == Stop.Status.PENDING

    form.locator("input[data-proof-photos]").set_input_files(
        {"name": "door.jpg", "mimeType": "image/jpeg", "buffer": _photo()}
    )
    expect(form.locator("[data-proof-thumbs] img")).to_have_count(1)
    _sign(page, form.locator("canvas[data-signature]"))
    form.get_by_label("Received by (name)").fill("Ada Lovelace")
    form.get_by_role("button", name="Complete delivery").click()
    expect(page.locator("#sync-status")).to_contain_text("everything sent", timeout=15_000)

    proof = ProofOfDelivery.objects.get(stop=first)
    assert proof.recipient_name == "Ada Lovelace" and proof.signature and proof.photos.count() == 1
    photo = proof.photos.get()
    assert max(photo.width, photo.height) <= 1600  # shrunk in the phone before upload
    assert Stop.objects.get(pk=first.pk).status == Stop.Status.COMPLETED
    context.close()

    office = browser.new_page()
    office.on("console", lambda msg: "Content Security Policy" in msg.text and violations.append(msg.text))
    office.route("https://tile.openstreetmap.org/**", lambda r: r.abort())
    office.goto(f"{live_server.url}/accounts/login/")
    office.get_by_label("Username").fill("disp")
    office.get_by_label("Password").fill("correct-horse-battery")
    office.get_by_role("button", name="Log in").click()
    office.goto(f"{live_server.url}/orders/{first.order_id}/")
    panel = office.locator("#proof-panel")
    expect(panel).to_contain_text("Ada Lovelace")
    signature = panel.get_by_role("img", name="Signature of Ada Lovelace")
    expect(signature).to_be_visible()
    # The images really load (through the checked views), not just their tags.
    thumb = panel.get_by_role("img", name="Photo 1 of the delivery")
    for image in (signature, thumb):
        office.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    assert violations == []


def _first_stop_needing_a_scan(route, org) -> tuple[Stop, bytes]:
    """The organisation asks for a parcel scan; the route's first stop has parcel PKG-0001.
    Returns that stop and a picture of its label (a QR code)."""
    import segno

    from dispatch.models import Order

    ProofPolicy.objects.create(organization=org, require_barcode=True)
    first = route.stops.order_by("sequence").first()
    Order.objects.filter(pk=first.order_id).update(parcel_codes=["PKG-0001"])
    label = io.BytesIO()
    segno.make("PKG-0001", error="m").save(label, kind="png", scale=8, border=4)
    return first, label.getvalue()


def test_a_parcel_barcode_is_read_from_a_picture_and_must_be_the_orders(
    browser, live_server, published, org  # noqa: F811 - the fixture
):
    first, label = _first_stop_needing_a_scan(published, org)
    context, page = phone(browser, live_server, published)
    card = page.locator(f"#stop-{first.pk}")

    card.get_by_role("button", name="Delivered…").click()
    form = card.locator("form[data-proof-form]")
    # No BarcodeDetector in desktop Chromium: this is ZXing, from npm, reading the picture.
    form.locator("input[data-scan]").set_input_files(
        {"name": "label.png", "mimeType": "image/png", "buffer": label}
    )
    expect(form.get_by_label("Parcel barcode (needed)")).to_have_value("PKG-0001", timeout=10_000)
    form.get_by_role("button", name="Complete delivery").click()
    expect(page.locator("#sync-status")).to_contain_text("everything sent", timeout=15_000)
    assert ProofOfDelivery.objects.get(stop=first).scanned_code == "PKG-0001"
    context.close()


@pytest.fixture
def held_barcode_reader(monkeypatch):
    """The live server holds back ZXing's script until the test lets it go (a slow network)."""
    import threading

    from django.contrib.staticfiles.handlers import StaticFilesHandler

    release = threading.Event()
    serve = StaticFilesHandler.serve

    def held(self, request):
        if "zxing" in request.path:
            release.wait(timeout=60)
        return serve(self, request)

    monkeypatch.setattr(StaticFilesHandler, "serve", held)
    yield release
    release.set()  # never leave a server thread waiting, whatever the test did


def test_the_stop_works_while_the_barcode_reader_is_still_on_its_way(
    browser, live_server, published, org, held_barcode_reader  # noqa: F811 - the fixture
):
    first, label = _first_stop_needing_a_scan(published, org)
    context, page = phone(browser, live_server, published)
    card = page.locator(f"#stop-{first.pk}")

    # The reader has not arrived, and the buttons already answer.
    card.get_by_role("button", name="Delivered…").click()
    form = card.locator("form[data-proof-form]")
    expect(form).to_be_visible()
    form.locator("input[data-scan]").set_input_files(
        {"name": "label.png", "mimeType": "image/png", "buffer": label}
    )
    # The picture waits for the reader, and is read once it is there.
    held_barcode_reader.set()
    expect(form.get_by_label("Parcel barcode (needed)")).to_have_value("PKG-0001")
    form.get_by_role("button", name="Complete delivery").click()
    expect(page.locator("#sync-status")).to_contain_text("everything sent")
    assert ProofOfDelivery.objects.get(stop=first).scanned_code == "PKG-0001"
    context.close()


def test_the_receipt_prints_on_one_a4_page(browser, live_server, published, dispatcher):  # noqa: F811
    import re
    import uuid

    from django.core.files.base import ContentFile
    from django.utils import timezone

    from pod import services as pod_services

    stop = published.stops.order_by("sequence").first()
    prepared = pod_services.proof_prepare(
        stop=stop, outcome="delivered", recipient_name="Ada Lovelace",
        photos=[ContentFile(_photo(), name=f"p{n}.jpg") for n in range(5)],
        signature=ContentFile(_photo(), name="s.jpg"),
    )  # fmt: skip
    pod_services.proof_record(
        prepared=prepared, stop=stop, key=uuid.uuid4(), by=None, captured_at=timezone.now(),
        lat=stop.order.lat, lng=stop.order.lng, accuracy_m=8, note="Left with the concierge",
    )  # fmt: skip
    page = browser.new_page()
    page.route("https://tile.openstreetmap.org/**", lambda r: r.abort())
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill("disp")
    page.get_by_label("Password").fill("correct-horse-battery")
    page.get_by_role("button", name="Log in").click()
    page.goto(f"{live_server.url}/orders/{stop.order_id}/proof/")
    expect(page.locator(".proof-photo img")).to_have_count(5)
    page.emulate_media(media="print")
    pdf = page.pdf(format="A4", print_background=True)
    assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) == 1
