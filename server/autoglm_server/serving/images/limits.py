"""The image caps as the request path uses them, and the per-request budget of images and bytes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from autoglm_server.errors import PayloadTooLargeError, StartupError
from autoglm_server.serving.images.gate import DecodeGate
from autoglm_server.serving.images.settings import ImageSettings
from autoglm_server.serving.images.urls import UrlPrefix, parse_prefix


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """ImageSettings, parsed once at start-up (prefixes parsed, the local directory resolved)."""

    max_image_bytes: int = ImageSettings.model_fields["max_image_bytes"].default
    max_image_pixels: int = ImageSettings.model_fields["max_image_pixels"].default
    max_images_per_request: int = ImageSettings.model_fields["limit_images_per_request"].default
    max_request_image_bytes: int = ImageSettings.model_fields["max_request_image_bytes"].default
    allowed_url_prefixes: tuple[UrlPrefix, ...] = ()
    # Resolved (no symlinks) and known to be a directory; None refuses every file:// URL.
    allowed_local_dir: Path | None = None
    fetch_timeout_s: float = ImageSettings.model_fields["image_fetch_timeout"].default
    max_decode_pixels: int = ImageSettings.model_fields["max_decode_pixels"].default
    decode_wait_s: float = ImageSettings.model_fields["image_decode_wait"].default
    # Shared by every request that uses these limits: the daemon builds one ImageLimits, so one gate.
    decode_gate: DecodeGate = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "decode_gate", DecodeGate(self.max_decode_pixels, self.decode_wait_s))

    @classmethod
    def from_settings(cls, settings: ImageSettings) -> ImageLimits:
        """Raises StartupError when --allowed-local-image-dir is not an existing directory."""
        local_dir: Path | None = None
        if settings.allowed_local_image_dir:
            local_dir = Path(settings.allowed_local_image_dir).resolve()
            if not local_dir.is_dir():
                raise StartupError(f"--allowed-local-image-dir {settings.allowed_local_image_dir!r} is not a directory")
        if settings.max_decode_pixels < settings.max_image_pixels:
            raise StartupError(
                f"--max-decode-pixels {settings.max_decode_pixels} is below --max-image-pixels"
                f" {settings.max_image_pixels}: the budget must hold one image of the largest size allowed"
            )
        return cls(
            max_image_bytes=settings.max_image_bytes,
            max_image_pixels=settings.max_image_pixels,
            max_images_per_request=settings.limit_images_per_request,
            max_request_image_bytes=settings.max_request_image_bytes,
            allowed_url_prefixes=tuple(parse_prefix(p) for p in settings.allowed_image_url_prefixes),
            allowed_local_dir=local_dir,
            fetch_timeout_s=settings.image_fetch_timeout,
            max_decode_pixels=settings.max_decode_pixels,
            decode_wait_s=settings.image_decode_wait,
        )


class ImageBudget:
    """What one request may still spend on images: a count and encoded bytes, over all its messages.

    The request path makes one per request, calls `check_count` with the number of image parts before
    loading any, and passes the budget to each load, which charges the image's size once it is known
    and before it is decoded (for a data: URL, before the base64 is decoded).
    """

    def __init__(self, limits: ImageLimits) -> None:
        self._limits = limits
        self.images = 0
        self.bytes = 0

    def check_count(self, count: int, *, field: str) -> None:
        """Raise PayloadTooLargeError when a request holds more images than allowed."""
        limit = self._limits.max_images_per_request
        if count > limit:
            raise PayloadTooLargeError(
                field,
                f"the request has {count} images; the limit is {limit} per request (--limit-images-per-request)",
            )

    def charge(self, nbytes: int, *, field: str) -> None:
        """Count one more image of `nbytes` encoded bytes; raise before it is decoded when over a cap."""
        self.check_count(self.images + 1, field=field)
        limit = self._limits.max_request_image_bytes
        if self.bytes + nbytes > limit:
            raise PayloadTooLargeError(
                field,
                f"the request's images come to more than {limit} bytes, the limit per request"
                " (--max-request-image-bytes)",
            )
        self.images += 1
        self.bytes += nbytes
