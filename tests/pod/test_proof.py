"""Proof of delivery (issue #5): uploads through the driver API, the image pipeline on real
image files made here with Pillow, the policy, PIN and barcode checks, idempotency, both-or-
neither, and who may fetch a proof file."""

import datetime as dt
import hashlib
import io
import os
import uuid
import zlib
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from dispatch.models import Order, Route, Stop
from pod import services as pod_services
from pod.models import ProofOfDelivery, ProofPhoto, ProofPolicy
from tests.factories import DriverFactory, RouteFactory, StopFactory
from tracking.models import DriverAction

NOW = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)  # 11:00 in Berlin on the factories' day
AT = "2026-11-24T10:58:00+01:00"

pytestmark = [pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _frozen_now(time_machine):
    time_machine.move_to(NOW, tick=False)


@pytest.fixture
def route(org, driver):
    route = RouteFactory(organization=org, driver=driver, status=Route.Status.PUBLISHED)
    for sequence in (1, 2):
        StopFactory(
            route=route,
            sequence=sequence,
            order__status=Order.Status.ASSIGNED,
            order__lat=52.4980,
            order__lng=13.4330,
            order__parcel_codes=["PKG-0001", "PKG-0002"],
        )
    return route


@pytest.fixture
def stop(route):
    return route.stops.get(sequence=1)


@pytest.fixture
def api(driver):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=driver.user).key}")
    return client


def media_files(settings) -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def jpeg(size=(800, 600), colour=(200, 30, 30), exif=None, orientation=None) -> bytes:
    image = Image.new("RGB", size, colour)
    image.paste((20, 20, 200), (0, 0, size[0] // 4, size[1] // 4))  # a mark in the top-left corner
    out = io.BytesIO()
    exif_data = Image.Exif()
    if orientation:
        exif_data[0x0112] = orientation
    if exif:
        exif_data[0x8825] = exif  # GPS IFD
    image.save(out, format="JPEG", exif=exif_data.tobytes())
    return out.getvalue()


def png(size=(400, 150), mode="RGBA") -> bytes:
    image = Image.new(mode, size, (0, 0, 0, 0) if mode == "RGBA" else 0)
    for x in range(20, size[0] - 20):
        image.putpixel((x, size[1] // 2), (0, 0, 0, 255) if mode == "RGBA" else 65535)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def upload(name: str, content: bytes, content_type="image/jpeg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type=content_type)


def post_proof(api, stop, *, photos=(), signature=None, **fields):
    body = {"uuid": str(fields.pop("uuid", uuid.uuid4())), "kind": "delivered", "at": AT, **fields}
    files = {}
    if photos:
        files["photos"] = list(photos)
    if signature is not None:
        files["signature"] = signature
    return api.post(f"/api/v1/driver/stops/{stop.pk}/pod/", {**body, **files}, format="multipart")


# --- The happy path ---------------------------------------------------------------------------


def test_a_delivery_with_photo_and_signature_is_stored_upright_without_metadata(api, stop, settings):
    # Orientation 6: the camera was turned; the stored photo must be upright (portrait).
    gps = {1: "N", 2: (52.0, 29.0, 53.0), 3: "E", 4: (13.0, 25.0, 59.0)}
    photo = jpeg(size=(800, 600), orientation=6, exif=gps)
    response = post_proof(
        api, stop, photos=[upload("door.jpg", photo)], signature=upload("sig.png", png(), "image/png"),
        recipient_name="Ada Lovelace", lat=52.4981, lng=13.4331, accuracy=8,
    )  # fmt: skip
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["duplicate"] is False and body["stop"]["status"] == Stop.Status.COMPLETED
    stop.refresh_from_db()
    assert stop.order.status == Order.Status.DELIVERED

    proof = ProofOfDelivery.objects.get(stop=stop)
    assert (proof.recipient_name, proof.outcome, proof.far_from_address) == (
        "Ada Lovelace",
        "delivered",
        False,
    )
    assert proof.distance_from_address_m < 20
    assert proof.captured_at == dt.datetime(2026, 11, 24, 9, 58, tzinfo=dt.UTC) and proof.received_at == NOW
    [stored] = proof.photos.all()
    data = stored.image.read()
    assert hashlib.sha256(data).hexdigest() == stored.image_sha256 == body["proof"]["photos"][0]["sha256"]
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG" and image.size == (600, 800)  # turned upright
        assert not image.getexif() and "exif" not in image.info  # no orientation, no GPS, nothing
        # The blue mark of the top-left corner is now top-right, as the camera saw it.
        assert image.getpixel((590, 10))[2] > 150 and image.getpixel((10, 10))[0] > 150
    with Image.open(stored.thumbnail) as thumb:
        assert max(thumb.size) == 320
    assert hashlib.sha256(proof.signature.read()).hexdigest() == proof.signature_sha256
    assert photo not in data and b"Exif" not in data


def test_a_failed_attempt_can_carry_a_photo_of_the_closed_door(api, stop):
    response = post_proof(api, stop, kind="failed", reason="not_home", photos=[upload("door.jpg", jpeg())])
    assert response.status_code == 200, response.content
    proof = ProofOfDelivery.objects.get(stop=stop)
    assert proof.outcome == "failed" and proof.photos.count() == 1
    stop.refresh_from_db()
    assert stop.status == Stop.Status.FAILED and stop.failure_reason == "Nobody home"


def test_a_retry_returns_the_first_result_and_stores_nothing_twice(api, stop, settings):
    key = uuid.uuid4()
    first = post_proof(api, stop, uuid=key, photos=[upload("a.jpg", jpeg())])
    files = media_files(settings)
    again = post_proof(api, stop, uuid=key, photos=[upload("a.jpg", jpeg())])
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert again.json()["proof"] == first.json()["proof"]
    assert ProofOfDelivery.objects.count() == 1 and ProofPhoto.objects.count() == 1
    assert DriverAction.objects.filter(uuid=key).count() == 1
    assert media_files(settings) == files and len(files) == 2  # the photo and its thumbnail


def test_proof_captured_far_away_and_synced_late_is_flagged(api, stop):
    response = post_proof(
        api, stop, photos=[upload("a.jpg", jpeg())], lat=52.5200, lng=13.4050, at="2026-11-24T09:30:00+01:00"
    )
    assert response.status_code == 200, response.content
    proof = ProofOfDelivery.objects.get(stop=stop)
    assert proof.far_from_address and proof.distance_from_address_m > 2000
    assert proof.synced_late and proof.received_at - proof.captured_at == dt.timedelta(minutes=90)


# --- Bad uploads: a clear 4xx and nothing on disk or in the database ---------------------------


def _bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming width × height pixels, with a tiny body: what a bomb looks like."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    body = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


BAD_UPLOADS = {
    "text named .jpg": (b"this is not an image at all\n", 415, "not a JPEG, PNG or WebP"),
    "truncated JPEG": (None, 400, "damaged or incomplete"),
    "SVG": (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', 415, "not a JPEG"),
    "HTML": (b"<!doctype html><html><script>alert(1)</script></html>", 415, "not a JPEG"),
    "GIF": (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", 415, "not a JPEG"),
    "30,000 x 30,000 PNG": (None, 400, "megapixels"),
    "empty file": (b"", 400, "empty"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_a_bad_photo_is_refused_with_a_clear_message_and_leaves_nothing(api, stop, settings, case):
    content, status, message = BAD_UPLOADS[case]
    if case == "truncated JPEG":
        content = jpeg(size=(1200, 900))[:5000]
    if case.startswith("30,000"):
        content = _bomb_png(30_000, 30_000)
    response = post_proof(api, stop, photos=[upload("photo.jpg", content)])
    assert response.status_code == status, response.content
    assert message in response.json()["photos"][0]
    stop.refresh_from_db()
    assert stop.status == Stop.Status.PENDING
    assert not ProofOfDelivery.objects.exists() and not DriverAction.objects.exists()
    assert media_files(settings) == []


def test_a_photo_over_the_size_limit_is_a_413(api, stop, settings):
    settings.POD_MAX_UPLOAD_BYTES = 20_000
    response = post_proof(api, stop, photos=[upload("big.jpg", jpeg(size=(1600, 1200)) + b"\0" * 30_000)])
    assert response.status_code == 413, response.content
    assert "larger than" in response.json()["photos"][0]
    assert not ProofOfDelivery.objects.exists() and media_files(settings) == []


def test_a_second_good_photo_does_not_save_a_first_when_the_other_is_bad(api, stop, settings):
    response = post_proof(api, stop, photos=[upload("good.jpg", jpeg()), upload("bad.jpg", b"nope")])
    assert response.status_code == 415
    assert media_files(settings) == [] and not ProofPhoto.objects.exists()


def test_odd_but_real_images_are_accepted(api, route):
    # A CMYK JPEG, a 16-bit greyscale PNG and an animated WebP, each re-encoded as a JPEG.
    cmyk = io.BytesIO()
    Image.new("CMYK", (300, 200), (0, 255, 255, 0)).save(cmyk, format="JPEG")
    grey16 = io.BytesIO()
    Image.new("I;16", (300, 200), 40000).save(grey16, format="PNG")
    animated = io.BytesIO()
    frames = [Image.new("RGB", (120, 90), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(animated, format="WEBP", save_all=True, append_images=frames[1:])
    stop = route.stops.get(sequence=1)
    uploads = [upload("c.jpg", cmyk.getvalue()), upload("g.png", grey16.getvalue(), "image/png"),
               upload("a.webp", animated.getvalue(), "image/webp")]  # fmt: skip
    response = post_proof(api, stop, photos=uploads)
    assert response.status_code == 200, response.content
    for photo in ProofPhoto.objects.all():
        with Image.open(photo.image) as image:
            assert image.format == "JPEG" and image.mode == "RGB"


# --- Policy, PIN and barcode -----------------------------------------------------------------


def test_the_policy_refuses_a_delivery_without_the_required_proof(api, org, stop):
    ProofPolicy.objects.create(organization=org, requires=ProofPolicy.Requires.BOTH)
    response = post_proof(api, stop, photos=[upload("a.jpg", jpeg())])
    assert response.status_code == 400
    assert "signature" in response.json()["signature"][0] and "name" in response.json()["recipient_name"][0]
    # The plain action without proof is refused too, saying what is needed.
    plain = api.post(
        f"/api/v1/driver/stops/{stop.pk}/events/",
        {"uuid": str(uuid.uuid4()), "kind": "delivered", "at": AT},
        format="json",
    )
    assert plain.status_code == 400 and "a photo and a signature" in str(plain.json())
    stop.refresh_from_db()
    assert stop.status == Stop.Status.PENDING


def test_a_high_value_order_gets_the_stricter_rule(api, org, stop):
    ProofPolicy.objects.create(
        organization=org, requires=ProofPolicy.Requires.NONE, high_value_requires=ProofPolicy.Requires.PHOTO
    )
    Order.objects.filter(pk=stop.order_id).update(high_value=True)
    assert post_proof(api, stop).status_code == 400
    assert post_proof(api, stop, photos=[upload("a.jpg", jpeg())]).status_code == 200


def test_the_pin_must_match(api, org, stop):
    Order.objects.filter(pk=stop.order_id).update(require_pin=True, handover_pin="4821")
    wrong = post_proof(api, stop, pin="1111")
    assert wrong.status_code == 400 and "not this order's" in wrong.json()["pin"][0]
    missing = post_proof(api, stop)
    assert "4-digit PIN" in missing.json()["pin"][0]
    assert post_proof(api, stop, pin="4821").status_code == 200
    assert ProofOfDelivery.objects.get(stop=stop).pin_checked


def test_the_scanned_parcel_must_be_one_of_the_order(api, org, stop):
    ProofPolicy.objects.create(organization=org, require_barcode=True)
    wrong = post_proof(api, stop, scanned_code="PKG-9999")
    assert wrong.status_code == 400 and "not a parcel of this order" in wrong.json()["scanned_code"][0]
    assert post_proof(api, stop, scanned_code=" pkg-0002 ").status_code == 200


def test_every_order_gets_its_own_secret_pin(org):
    from tests.factories import OrderFactory

    pins = {OrderFactory(organization=org).handover_pin for _ in range(30)}
    assert len(pins) > 20 and all(len(pin) == 4 and pin.isdigit() for pin in pins)


# --- Both or neither --------------------------------------------------------------------------


def test_a_failure_after_the_files_are_written_leaves_nothing(api, stop, settings, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("database went away between the two writes")

    monkeypatch.setattr(ProofPhoto.objects, "bulk_create", broken)
    with pytest.raises(RuntimeError):
        post_proof(api, stop, photos=[upload("a.jpg", jpeg())], signature=upload("s.png", png(), "image/png"))
    stop.refresh_from_db()
    assert stop.status == Stop.Status.PENDING and stop.order.status == Order.Status.ASSIGNED
    assert not ProofOfDelivery.objects.exists() and not DriverAction.objects.exists()
    assert media_files(settings) == []


def test_a_cancelled_order_gets_no_proof(api, stop, settings):
    Order.objects.filter(pk=stop.order_id).update(status=Order.Status.CANCELLED)
    response = post_proof(api, stop, photos=[upload("a.jpg", jpeg())])
    assert response.status_code == 409, response.content
    assert not ProofOfDelivery.objects.exists() and media_files(settings) == []


def test_orphaned_files_are_purged_but_fresh_ones_kept(api, stop, settings):
    post_proof(api, stop, photos=[upload("a.jpg", jpeg())])
    orphan = Path(settings.MEDIA_ROOT) / "pod" / str(stop.organization_id) / "leftover-photo.jpg"
    orphan.write_bytes(b"x")
    os.utime(orphan, (NOW.timestamp(), NOW.timestamp()))  # the file system's clock is not frozen
    assert pod_services.proof_orphans_purge(now=NOW) == 0  # too fresh to be sure
    assert pod_services.proof_orphans_purge(now=NOW + dt.timedelta(hours=2)) == 1
    assert not orphan.exists() and len(media_files(settings)) == 2


# --- Who may see a proof ------------------------------------------------------------------------


@pytest.fixture
def delivered(api, stop):
    response = post_proof(
        api, stop, photos=[upload("a.jpg", jpeg())], signature=upload("s.png", png(), "image/png")
    )
    assert response.status_code == 200
    return response.json()["proof"]


def test_the_organisations_dispatcher_and_the_capturing_driver_can_fetch_the_files(
    client, dispatcher, driver, delivered
):
    urls = [
        delivered["photos"][0]["url"],
        delivered["photos"][0]["thumbnail_url"],
        delivered["signature"]["url"],
    ]
    for user in (dispatcher, driver.user):
        client.force_login(user)
        for url in urls:
            response = client.get(url)
            assert response.status_code == 200, url
            assert response["Content-Type"] in ("image/jpeg", "image/png")
            assert response["X-Content-Type-Options"] == "nosniff" and "private" in response["Cache-Control"]
    photo = client.get(urls[0])
    assert hashlib.sha256(b"".join(photo.streaming_content)).hexdigest() == delivered["photos"][0]["sha256"]


def test_others_cannot_fetch_a_proof_file(client, org, other_dispatcher, delivered):
    urls = [delivered["photos"][0]["url"], delivered["signature"]["url"]]
    for url in urls:
        assert client.get(url).status_code == 302  # anonymous: to the login page
    other_driver = DriverFactory(organization=org, user__username="driver2")
    for user in (other_dispatcher, other_driver.user):
        client.force_login(user)
        for url in urls:
            assert client.get(url).status_code == 404, (user, url)


def test_the_order_page_panel_and_the_receipt_show_the_proof(dispatcher_client, stop, delivered):
    panel = dispatcher_client.get(f"/orders/{stop.order_id}/proof/", headers={"HX-Request": "true"})
    html = panel.content.decode()
    assert 'id="proof-panel"' in html and "<html" not in html
    assert delivered["photos"][0]["thumbnail_url"] in html and delivered["signature"]["url"] in html
    assert delivered["photos"][0]["sha256"] in html
    receipt = dispatcher_client.get(f"/orders/{stop.order_id}/proof/").content.decode()
    assert "Proof-of-delivery receipt" in receipt and "data-print" in receipt


def test_another_organisations_receipt_is_a_404(client, other_dispatcher, stop, delivered):
    client.force_login(other_dispatcher)
    assert client.get(f"/orders/{stop.order_id}/proof/").status_code == 404


def test_a_driver_cannot_post_proof_for_another_drivers_stop(org, stop):
    other = DriverFactory(organization=org, user__username="driver3")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=other.user).key}")
    response = post_proof(client, stop, photos=[upload("a.jpg", jpeg())])
    assert response.status_code == 404
