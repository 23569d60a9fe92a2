"""Image bytes for chat messages: the type read from the file's own bytes, data: URLs, PIL images.

The daemon takes PNG, JPEG and WebP only and checks the type itself; the SDK checks it first so
that a wrong file fails at the caller with the file's name instead of as a server error. The
type comes from the magic bytes, never from a file extension or a caller's label, because
those are the parts that lie (a `.png` that is really a JPEG, or an SVG renamed).
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

PNG = "image/png"
JPEG = "image/jpeg"
WEBP = "image/webp"
MIME_TYPES = (PNG, JPEG, WEBP)

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
# WebP is a RIFF container: "RIFF", a 4-byte little-endian size, then the form type "WEBP".
_RIFF, _WEBP = b"RIFF", b"WEBP"

# Pillow's format names for the types the daemon takes.
_PIL_FORMATS = {"PNG": PNG, "JPEG": JPEG, "JPG": JPEG, "WEBP": WEBP}


def sniff_mime_type(data: bytes) -> str | None:
    """The MIME type that the magic bytes of `data` announce, or None for anything else."""
    if data.startswith(_PNG_MAGIC):
        return PNG
    if data.startswith(_JPEG_MAGIC):
        return JPEG
    if len(data) >= 12 and data[:4] == _RIFF and data[8:12] == _WEBP:
        return WEBP
    return None


def checked_mime_type(data: bytes, declared: str | None, what: str) -> str:
    """The type of `data`, which must be PNG, JPEG or WebP and agree with `declared` when given."""
    if not data:
        raise ValueError(f"{what}: the image is empty")
    sniffed = sniff_mime_type(data)
    if sniffed is None:
        raise ValueError(f"{what}: not a PNG, JPEG or WebP image (its first bytes are {data[:8]!r})")
    if declared and declared.lower() != sniffed:
        raise ValueError(f"{what}: declared as {declared} but the bytes are {sniffed}")
    return sniffed


def parse_data_url(url: str) -> tuple[str, bytes]:
    """(declared MIME type, bytes) of a base64 `data:` URL; ValueError for any other form."""
    header, comma, payload = url.partition(",")
    if not header.lower().startswith("data:") or not comma:
        raise ValueError("not a data: URL (expected data:<mime type>;base64,<data>)")
    media = header[len("data:") :].split(";")
    if "base64" not in (p.strip().lower() for p in media[1:]):
        raise ValueError("a data: URL of an image must be base64-encoded (data:image/png;base64,...)")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"the data: URL holds invalid base64 ({exc})") from None
    return media[0].strip().lower(), data


def encode_pil(image: Any, image_format: str) -> tuple[str, bytes]:
    """(MIME type, encoded bytes) of a PIL image; Pillow is imported only here, when it is used."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError("ImagePart.from_pil needs Pillow (pip install pillow)") from exc
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL.Image.Image, got {type(image).__name__}")
    name = image_format.upper()
    mime_type = _PIL_FORMATS.get(name)
    if mime_type is None:
        raise ValueError(f"image_format must be PNG, JPEG or WEBP, got {image_format!r}")
    if mime_type == JPEG and image.mode not in ("RGB", "L", "CMYK"):
        image = image.convert("RGB")  # JPEG has no alpha channel or palette
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG" if mime_type == JPEG else name)
    return mime_type, buffer.getvalue()
