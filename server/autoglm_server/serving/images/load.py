"""The image parts of a chat request: from a URL or raw bytes to a checked, decoded ImageInput.

The request path calls `load_image_url` for each OpenAI `image_url` part and `load_image_bytes` for
each gRPC image given as bytes, with one `ImageBudget` per request. Every refusal is an
InvalidRequestError (or PayloadTooLargeError for a size cap) that names the field and the rule.

Which URLs load:
- `data:image/png;base64,...` (and image/jpeg, image/webp): always. The length of the base64 text is
  checked against --max-image-bytes before it is decoded, and the decoding is strict.
- `http(s)://`: only below a prefix in --allowed-image-url-prefixes (empty by default): the daemon
  never fetches a URL an untrusted caller names (SSRF into the pod network, cloud metadata).
- `file://`: only below --allowed-local-image-dir (empty by default).
Decoding (decode.py) runs in worker threads, in two steps: the header is read first (format,
size, the pixel cap), then the pixels are decoded once the process-wide decode budget
(gate.py, --max-decode-pixels) has room for them. A 1080x2400 PNG takes tens of milliseconds.
"""

from __future__ import annotations

import asyncio
import base64
import binascii

from autoglm_server.engine.types import ImageInput
from autoglm_server.errors import InvalidRequestError
from autoglm_server.serving.images import decode as image_decode
from autoglm_server.serving.images.decode import ImageFormat, Probe, format_for_mime
from autoglm_server.serving.images.fetch import fetch_http, read_local_file, too_large
from autoglm_server.serving.images.limits import ImageBudget, ImageLimits
from autoglm_server.serving.images.urls import match_prefix

__all__ = ["load_image_bytes", "load_image_url"]

_HTTP_REFUSED = (
    "http(s) image URLs are refused: the server does not fetch URLs a caller names; send the image as a"
    " data: URL (an operator may allow prefixes with --allowed-image-url-prefixes)"
)
# Longest "data:<media type>;<params>," header we read; the media types we take are far shorter.
_MAX_DATA_HEADER = 256


async def load_image_url(url: str, limits: ImageLimits, *, field: str, budget: ImageBudget | None = None) -> ImageInput:
    """Load one image named by a URL (see the module docstring for which URLs load)."""
    scheme = url[:8].partition(":")[0].lower() if ":" in url[:8] else ""
    if scheme == "data":
        declared, payload = _split_data_url(url, field)
        return await _decode_base64(payload, declared, limits, field, budget)
    if scheme in {"http", "https"}:
        data, content_type = await _fetch_allowed(url, limits, field)
        # A server's Content-Type is a declaration only when it names an image type.
        served = (
            format_for_mime(content_type.split(";")[0], field) if content_type.lower().startswith("image/") else None
        )
        return await _decode(data, served, limits, field, budget)
    if scheme == "file":
        data = await asyncio.to_thread(read_local_file, url, limits, field)
        return await _decode(data, None, limits, field, budget)
    raise InvalidRequestError(field, "an image URL must be a data: URL (data:image/png;base64,...)")


async def load_image_bytes(
    data: bytes, mime_type: str, limits: ImageLimits, *, field: str, budget: ImageBudget | None = None
) -> ImageInput:
    """Load one image sent as raw bytes; `mime_type` must agree with the bytes (empty: judged by them)."""
    declared = format_for_mime(mime_type, field) if mime_type.strip() else None
    return await _decode(data, declared, limits, field, budget)


def _split_data_url(url: str, field: str) -> tuple[ImageFormat, str]:
    """The declared format and the base64 text of a data: URL."""
    comma = url.find(",", 0, _MAX_DATA_HEADER)
    if comma < 0:
        raise InvalidRequestError(field, "a data: URL needs a ',' after its media type (data:image/png;base64,...)")
    media_type, *params = url[len("data:") : comma].split(";")
    if not media_type.strip():
        raise InvalidRequestError(field, "the data: URL names no media type; use data:image/png;base64,...")
    declared = format_for_mime(media_type, field)
    if not params or params[-1].strip().lower() != "base64":
        raise InvalidRequestError(field, "the data: URL is not base64; use data:image/png;base64,...")
    return declared, url[comma + 1 :]


async def _decode_base64(
    payload: str, declared: ImageFormat, limits: ImageLimits, field: str, budget: ImageBudget | None
) -> ImageInput:
    if not payload:
        raise InvalidRequestError(field, "the image data is empty")
    # The decoded size, from the text's length alone: refused before a byte is decoded.
    nbytes = len(payload) // 4 * 3 - (len(payload) - len(payload.rstrip("=")))
    if nbytes > limits.max_image_bytes:
        raise too_large(field, f"about {nbytes}", limits.max_image_bytes)
    if budget is not None:
        budget.charge(nbytes, field=field)
    data, probed = await asyncio.to_thread(_base64_then_probe, payload, declared, limits.max_image_pixels, field)
    return await _decode_probed(data, probed, limits, field)


def _base64_then_probe(payload: str, declared: ImageFormat, max_pixels: int, field: str) -> tuple[bytes, Probe]:
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII text
        raise InvalidRequestError(
            field, "the data: URL's payload is not valid base64 (standard alphabet, padded, no whitespace)"
        ) from None
    return data, image_decode.probe(data, declared, max_pixels, field)


async def _decode(
    data: bytes, declared: ImageFormat | None, limits: ImageLimits, field: str, budget: ImageBudget | None
) -> ImageInput:
    if len(data) > limits.max_image_bytes:
        raise too_large(field, len(data), limits.max_image_bytes)
    if not data:
        raise InvalidRequestError(field, "the image data is empty")
    if budget is not None:
        budget.charge(len(data), field=field)
    probed = await asyncio.to_thread(image_decode.probe, data, declared, limits.max_image_pixels, field)
    return await _decode_probed(data, probed, limits, field)


async def _decode_probed(data: bytes, probed: Probe, limits: ImageLimits, field: str) -> ImageInput:
    # decode_probed is looked up on its module at each call (not imported by name), so that a test can
    # wrap it and count the pixels really decoding at once.
    return await limits.decode_gate.run(probed.pixels, field, image_decode.decode_probed, data, probed, field)


async def _fetch_allowed(url: str, limits: ImageLimits, field: str) -> tuple[bytes, str]:
    if not limits.allowed_url_prefixes:
        raise InvalidRequestError(field, _HTTP_REFUSED)
    target, why_not = match_prefix(url, limits.allowed_url_prefixes)
    if target is None:
        raise InvalidRequestError(field, why_not)
    return await fetch_http(target, limits, field)
