"""Decoding one image: format from the bytes' magic, size from the header, then every pixel, with Pillow.

Only PNG, JPEG and WebP are accepted, judged from the bytes (a declared MIME type must agree). The
size is read from the header with the format's own Pillow plugin and checked against the pixel cap
before any pixel is decoded (`probe`); only then does Image.open (which applies Pillow's own bomb
guard too) decode the image fully (`decode_probed`), so a truncated or corrupt file fails here with a
message that says so, never later in the engine. The image is turned upright as its EXIF Orientation
tag says (phone cameras store the sensor's rows and tag the rotation): the model sees what the user
saw, and the pixel count, already checked, is the same. Both steps are synchronous and CPU-bound:
call them in a worker thread.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass

from PIL import ExifTags, Image, ImageFile, ImageOps, JpegImagePlugin, PngImagePlugin, WebPImagePlugin

from autoglm_server.engine.types import ImageInput
from autoglm_server.errors import InvalidRequestError, PayloadTooLargeError
from autoglm_server.serving.images.settings import PILLOW_MAX_IMAGE_PIXELS

ACCEPTED = "send PNG, JPEG or WebP"


@dataclass(frozen=True, slots=True)
class ImageFormat:
    name: str  # Pillow's format name
    label: str  # for messages
    mime_type: str
    plugin: type[ImageFile.ImageFile]


PNG = ImageFormat("PNG", "PNG", "image/png", PngImagePlugin.PngImageFile)
JPEG = ImageFormat("JPEG", "JPEG", "image/jpeg", JpegImagePlugin.JpegImageFile)
WEBP = ImageFormat("WEBP", "WebP", "image/webp", WebPImagePlugin.WebPImageFile)

# Declared types we take; image/jpg is not registered but common in clients.
ACCEPTED_MIME_TYPES = {"image/png": PNG, "image/jpeg": JPEG, "image/jpg": JPEG, "image/webp": WEBP}

# Formats recognised only to be refused by name (a generic "unknown data" for anything else).
_REFUSED_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
    (b"\x00\x00\x01\x00", 0, "ICO"),
    (b"%PDF", 0, "PDF"),
    (b"8BPS", 0, "PSD"),
    (b"qoif", 0, "QOI"),
    (b"\xff\x0a", 0, "JPEG XL"),
    (b"\xff\x4f\xff\x51", 0, "JPEG 2000"),
    (b"\x00\x00\x00\x0cjP  ", 0, "JPEG 2000"),
    (b"\x00\x00\x00\x0cJXL ", 0, "JPEG XL"),
    (b"ftypavif", 4, "AVIF"),
    (b"ftyphei", 4, "HEIF"),
    (b"ftypmif1", 4, "HEIF"),
)
# EXIF Orientation values that need a flip or a rotation (1 is upright; anything else is not a valid tag).
_REORIENTED = range(2, 9)
_MIME_TOKEN = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}")


def format_for_mime(mime_type: str, field: str) -> ImageFormat:
    """The format a declared MIME type names; InvalidRequestError for any type but PNG, JPEG, WebP."""
    fmt = ACCEPTED_MIME_TYPES.get(mime_type.strip().lower())
    if fmt is None:
        shown = mime_type if _MIME_TOKEN.fullmatch(mime_type.strip().lower()) else "this media type"
        raise InvalidRequestError(field, f"{shown} is not accepted; {ACCEPTED}")
    return fmt


def sniff_format(data: bytes, field: str) -> ImageFormat:
    """The format the bytes' magic says, or InvalidRequestError naming what they are instead."""
    if not data:
        raise InvalidRequestError(field, "the image data is empty")
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if data.startswith(b"\xff\xd8\xff"):
        return JPEG
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return WEBP
    for magic, offset, name in _REFUSED_MAGIC:
        if data[offset : offset + len(magic)] == magic:
            raise InvalidRequestError(field, f"the data is a {name} image; {name} is not accepted; {ACCEPTED}")
    if data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"<":
        raise InvalidRequestError(field, f"the data is SVG or other XML/HTML; SVG is not accepted; {ACCEPTED}")
    raise InvalidRequestError(field, f"the data is not a PNG, JPEG or WebP image; {ACCEPTED}")


@dataclass(frozen=True, slots=True)
class Probe:
    """What the header says: the format and the size, checked against the pixel cap."""

    fmt: ImageFormat
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def probe(data: bytes, declared: ImageFormat | None, max_pixels: int, field: str) -> Probe:
    """The format and size of an encoded image, without decoding a pixel; raises past the pixel cap."""
    fmt = sniff_format(data, field)
    if declared is not None and declared is not fmt:
        raise InvalidRequestError(field, f"declared {declared.mime_type} but the data is {fmt.label}")
    width, height = _header_size(data, fmt, max_pixels, field)
    if width * height > max_pixels:
        raise PayloadTooLargeError(
            field,
            f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} pixels"
            " per image (--max-image-pixels)",
        )
    return Probe(fmt, width, height)


def decode_probed(data: bytes, probed: Probe, field: str) -> ImageInput:
    """Decode every pixel of an image `probe` has passed, upright and in RGB."""
    image = _load(data, probed.fmt, field)
    return ImageInput(
        image=image,
        mime_type=probed.fmt.mime_type,
        width=image.width,
        height=image.height,
        encoded_bytes=len(data),
        digest=hashlib.sha256(data).hexdigest(),
    )


def _header_size(data: bytes, fmt: ImageFormat, max_pixels: int, field: str) -> tuple[int, int]:
    # The plugin class parses the header only, without Image.open's bomb check (which warns, and a
    # warning must never be what stops a bomb): our own check comes first.
    try:
        with fmt.plugin(io.BytesIO(data)) as header:
            width, height = header.size
    except Image.DecompressionBombError:
        # Some plugins (WebP) apply Pillow's error threshold themselves, before the size is known here.
        raise PayloadTooLargeError(
            field,
            f"the {fmt.label} header claims more than {2 * PILLOW_MAX_IMAGE_PIXELS} pixels; the limit is"
            f" {max_pixels} pixels per image (--max-image-pixels)",
        ) from None
    except MemoryError:
        raise
    except Exception as error:  # Pillow raises many types for a bad header
        raise InvalidRequestError(field, _corrupt(fmt, error)) from None
    if width < 1 or height < 1:
        raise InvalidRequestError(field, f"the {fmt.label} header gives a size of {width}x{height}")
    return width, height


def _load(data: bytes, fmt: ImageFormat, field: str) -> Image.Image:
    # Not closed on purpose: once loaded, the pixels are in memory and the "file" is a BytesIO (no
    # descriptor); closing would free the pixels and cost a copy (12 ms for a 1080x2400 RGB image).
    try:
        image = Image.open(io.BytesIO(data), formats=[fmt.name])
        image.load()
        _make_upright(image)
        return _to_rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # Pillow's guard: only reachable if its global limit was lowered below ours.
        raise PayloadTooLargeError(field, f"the image is too large to decode (--max-image-pixels): {error}") from None
    except MemoryError:
        raise
    except Exception as error:  # truncated data, bad checksums, broken streams, unconvertible modes
        raise InvalidRequestError(field, _corrupt(fmt, error)) from None


def _make_upright(image: Image.Image) -> None:
    """Apply the EXIF Orientation tag in place (same pixel count: only width and height may swap)."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        if orientation in _REORIENTED:
            ImageOps.exif_transpose(image, in_place=True)
    except MemoryError:
        raise
    except Exception:  # noqa: S110 - an unreadable EXIF block leaves the pixels as stored, still an image
        pass


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode not in {"RGBA", "LA", "PA", "La", "RGBa"} and "transparency" not in image.info:
        return image.convert("RGB")
    # Transparency is composited on white (vLLM does the same for RGBA), so transparent pixels come out white
    # rather than whatever colour they happen to store.
    rgba = image if image.mode == "RGBA" else image.convert("RGBA")
    background = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _corrupt(fmt: ImageFormat, error: Exception) -> str:
    if "truncated" in str(error) or isinstance(error, EOFError):
        return f"the {fmt.label} data is truncated"
    return f"the {fmt.label} data is corrupt ({type(error).__name__}: {str(error)[:120]})"
