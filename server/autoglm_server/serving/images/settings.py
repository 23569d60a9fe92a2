"""Settings of the image parts of chat requests (part of config.Settings).

Images are attacker input: each cap below is checked before the work it bounds (bytes before base64
decoding, pixels from the header before any pixel is decoded, the pixels decoding at once over all
requests before a decode starts), and the daemon fetches nothing a caller names unless an operator
allowed it here.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from autoglm_server.serving.images.urls import parse_prefix

MIB = 1024 * 1024

# Pillow's own decompression-bomb threshold (PIL.Image.MAX_IMAGE_PIXELS; a test checks it stays equal).
# Image.open warns above it and raises above twice it; capping our limit here means an image that
# passes our check can never make Pillow warn, so no DecompressionBombWarning ever escapes.
PILLOW_MAX_IMAGE_PIXELS = 89_478_485


class ImageSettings(BaseModel):
    """Caps on the images of a request, and the image URLs an operator allows the daemon to read."""

    max_image_bytes: int = Field(
        16 * MIB,
        ge=1,
        description="largest encoded image, in bytes (after base64 decoding); the length of a data: URL is"
        " checked against it before decoding",
    )
    max_image_pixels: int = Field(
        40_000_000,
        ge=1,
        le=PILLOW_MAX_IMAGE_PIXELS,
        description="largest image in pixels (width x height), read from the image header before any pixel"
        " is decoded: a small file that claims a huge size (a decompression bomb) is refused",
    )
    limit_images_per_request: int = Field(
        10, ge=0, description="most images in one request, over all its messages (the vLLM engine uses it too)"
    )
    max_request_image_bytes: int = Field(
        64 * MIB, ge=1, description="most encoded image bytes in one request, over all its images"
    )
    max_decode_pixels: int = Field(
        4 * 40_000_000,
        ge=1,
        description="most pixels being decoded at once over all requests (four images at the default"
        " --max-image-pixels: about 0.5-1 GB of decode memory); a decode waits for room in arrival order."
        " Must be at least --max-image-pixels",
    )
    image_decode_wait: float = Field(
        10.0,
        gt=0,
        description="seconds an image may wait for room under --max-decode-pixels; longer gets"
        " RESOURCE_EXHAUSTED (HTTP 429) with a retry hint",
    )
    allowed_image_url_prefixes: list[str] = Field(
        default_factory=list,
        description="http(s):// URL prefixes (e.g. https://cdn.example.com/screens/) the daemon may fetch"
        " images from. Empty (the default) refuses every http(s) image URL: fetching a URL a caller names"
        " is server-side request forgery into the pod network and cloud metadata endpoints. End each prefix"
        " with '/'; redirects are never followed",
    )
    allowed_local_image_dir: str = Field(
        "",
        description="directory below which file:// image URLs may be read (symlinks resolved, the file must"
        " stay inside). Empty (the default) refuses every file:// URL: a caller must never read the"
        " server's local files",
    )
    image_fetch_timeout: float = Field(
        10.0, gt=0, description="seconds one fetch of an allowed http(s) image URL may take in all"
    )

    @field_validator("allowed_image_url_prefixes")
    @classmethod
    def _check_prefixes(cls, prefixes: list[str]) -> list[str]:
        for prefix in prefixes:
            parse_prefix(prefix)  # raises ValueError naming what is wrong
        return prefixes
