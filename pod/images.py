"""Every uploaded proof image is decoded and re-encoded here, in memory, before anything is stored.

The type comes from the bytes (Pillow's decoders, limited to JPEG, PNG and WebP), never from
the name or the Content-Type. The pixel count is checked from the header before decoding, so a
decompression bomb costs nothing; the image is then fully decoded (a truncated file fails
here), turned upright from its EXIF orientation, shrunk to a sane size and re-encoded without
any metadata — GPS tags, camera serials and appended payloads do not survive. The capture
position is kept in the database instead.
"""

import hashlib
import io
import warnings
from dataclasses import dataclass

from django.conf import settings
from PIL import Image, ImageOps, UnidentifiedImageError

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP")
PHOTO_LONG_EDGE = 2048
THUMB_LONG_EDGE = 320
SIGNATURE_LONG_EDGE = 1600


class ImageRejected(Exception):
    """An upload that is not an acceptable image. `status` is the HTTP answer it deserves."""

    def __init__(self, message: str, *, what: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = "signature" if what == "signature" else "photos"  # the form field at fault


@dataclass(frozen=True)
class EncodedImage:
    content: bytes
    extension: str
    width: int
    height: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True)
class ProcessedPhoto:
    image: EncodedImage
    thumbnail: EncodedImage


def _limits() -> tuple[int, int]:
    return settings.POD_MAX_UPLOAD_BYTES, settings.POD_MAX_PIXELS


def _megabytes(n: int) -> str:
    return f"{n / 1_000_000:g} MB" if n >= 1_000_000 else f"{n // 1000} KB"


def _read(upload, *, what: str, max_bytes: int) -> bytes:
    size = getattr(upload, "size", None)
    if size is not None and size > max_bytes:
        raise ImageRejected(
            f"The {what} is larger than {_megabytes(max_bytes)}; send a smaller one.", what=what, status=413
        )
    upload.seek(0)
    data = upload.read(max_bytes + 1)
    if not data:
        raise ImageRejected(f"The {what} is empty; take it again.", what=what)
    if len(data) > max_bytes:
        raise ImageRejected(
            f"The {what} is larger than {_megabytes(max_bytes)}; send a smaller one.", what=what, status=413
        )
    return data


def _decode(data: bytes, *, what: str, max_pixels: int) -> Image.Image:
    """A fully decoded, upright image, or ImageRejected saying why not."""
    try:
        with warnings.catch_warnings():
            # Pillow warns at half its bomb limit and raises at the full one: both are refusals here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            width, height = image.size
            if width <= 0 or height <= 0 or width * height > max_pixels:
                raise ImageRejected(
                    f"The {what} is {width} × {height} pixels; at most {max_pixels / 1e6:g} megapixels "
                    "are accepted.",
                    what=what,
                )
            image.load()
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)  # an animated WebP: its first frame is the picture
            image = ImageOps.exif_transpose(image)
    except ImageRejected:
        raise
    except UnidentifiedImageError:
        raise ImageRejected(
            f"The {what} is not a JPEG, PNG or WebP image (HEIC, GIF, SVG, PDF and others are not accepted).",
            what=what,
            status=415,
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected(
            f"The {what} has too many pixels; at most {max_pixels / 1e6:g} megapixels.", what=what
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError):
        raise ImageRejected(f"The {what} is damaged or incomplete; take it again.", what=what) from None
    return image


def _shrink(image: Image.Image, long_edge: int) -> Image.Image:
    if max(image.size) > long_edge:
        image = image.copy()
        image.thumbnail((long_edge, long_edge), Image.Resampling.LANCZOS)
    return image


def _jpeg(image: Image.Image, *, quality: int) -> EncodedImage:
    if image.mode != "RGB":
        # Transparency (PNG, WebP) goes on white, as it would print; CMYK and 16-bit become RGB.
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            flat = Image.new("RGB", rgba.size, (255, 255, 255))
            flat.paste(rgba, mask=rgba.getchannel("A"))
            image = flat
        elif image.mode.startswith("I;16") or image.mode in ("I", "F"):
            image = ImageOps.autocontrast(image.convert("I").point(lambda v: v / 256).convert("L")).convert(
                "RGB"
            )
        else:
            image = image.convert("RGB")
    out = io.BytesIO()
    # No exif=, no icc_profile=, no comment: Pillow writes none of the source's metadata.
    image.save(out, format="JPEG", quality=quality, optimize=True)
    return EncodedImage(content=out.getvalue(), extension="jpg", width=image.width, height=image.height)


def process_photo(upload) -> ProcessedPhoto:
    """A phone photo as stored: upright, ≤ 2048 px, JPEG without metadata, plus a thumbnail."""
    max_bytes, max_pixels = _limits()
    image = _decode(_read(upload, what="photo", max_bytes=max_bytes), what="photo", max_pixels=max_pixels)
    full = _jpeg(_shrink(image, PHOTO_LONG_EDGE), quality=85)
    thumb = _jpeg(_shrink(image, THUMB_LONG_EDGE), quality=80)
    return ProcessedPhoto(image=full, thumbnail=thumb)


def process_signature(upload) -> EncodedImage:
    """A signature drawn on the phone: re-encoded as a PNG on white, without metadata."""
    max_bytes = settings.POD_SIGNATURE_MAX_BYTES
    max_pixels = min(settings.POD_MAX_PIXELS, 4_000_000)
    image = _decode(
        _read(upload, what="signature", max_bytes=max_bytes), what="signature", max_pixels=max_pixels
    )
    image = _shrink(image, SIGNATURE_LONG_EDGE)
    rgba = image.convert("RGBA")
    flat = Image.new("RGB", rgba.size, (255, 255, 255))
    flat.paste(rgba, mask=rgba.getchannel("A"))
    out = io.BytesIO()
    flat.convert("L").save(out, format="PNG", optimize=True)
    return EncodedImage(content=out.getvalue(), extension="png", width=flat.width, height=flat.height)
