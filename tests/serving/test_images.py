"""Image parts: data: URLs and raw bytes through serving/images/, good images and hostile ones."""

from __future__ import annotations

import base64
import hashlib
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import ExifTags, Image

from autoglm_server.errors import InvalidRequestError, PayloadTooLargeError, StartupError
from autoglm_server.serving.images import ImageBudget, ImageLimits, load_image_bytes, load_image_url
from autoglm_server.serving.images.decode import decode_probed, probe
from autoglm_server.serving.images.settings import PILLOW_MAX_IMAGE_PIXELS, ImageSettings
from tests.serving import image_samples as samples

FIELD = "messages[1].content[0].image_url"
LIMITS = ImageLimits()


async def refused(url: str, limits: ImageLimits = LIMITS) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        await load_image_url(url, limits, field=FIELD)
    assert caught.value.field == FIELD
    assert str(caught.value).startswith(f"{FIELD}: ")
    return caught.value


# --- images that load ------------------------------------------------------------------------------


async def test_phone_screenshot_png_data_url_loads_fully_in_rgb() -> None:
    data = samples.encode(samples.screenshot(), "PNG")
    image = await load_image_url(samples.data_url(data, "image/png"), LIMITS, field=FIELD)
    assert (image.width, image.height) == (1080, 2400)
    assert image.image.mode == "RGB"
    assert image.image.size == (1080, 2400)
    assert image.mime_type == "image/png"
    assert image.encoded_bytes == len(data)
    assert image.digest == hashlib.sha256(data).hexdigest()
    # Fully decoded: the pixels are there, equal to what was encoded.
    assert image.image.getpixel((10, 10)) == (30, 30, 34)
    assert image.image.getpixel((540, 1000)) == samples.screenshot().getpixel((540, 1000))


@pytest.mark.parametrize(
    ("fmt", "mime"), [("JPEG", "image/jpeg"), ("JPEG", "image/jpg"), ("WEBP", "image/webp"), ("PNG", "IMAGE/PNG")]
)
async def test_jpeg_and_webp_load(fmt: str, mime: str) -> None:
    data = samples.small(fmt, (320, 200))
    image = await load_image_url(samples.data_url(data, mime), LIMITS, field=FIELD)
    assert (image.width, image.height, image.image.mode) == (320, 200, "RGB")
    assert image.mime_type == {"JPEG": "image/jpeg", "WEBP": "image/webp", "PNG": "image/png"}[fmt]


def _tagged(fmt: str, orientation: int) -> bytes:
    """A 64x48 white image with a red 16x16 block at its stored top-left, tagged with an EXIF Orientation."""
    stored = Image.new("RGB", (64, 48), (255, 255, 255))
    stored.paste((255, 0, 0), (0, 0, 16, 16))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    return samples.encode(stored, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))


# Where the stored top-left block is shown once upright, for each Orientation value (EXIF 2.3, 4.6.4).
_BLOCK_SHOWN_AT = {1: (8, 8), 3: (56, 40), 6: (40, 8), 8: (8, 56)}


@pytest.mark.parametrize(("fmt", "mime"), [("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("PNG", "image/png")])
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
async def test_exif_orientation_is_applied_as_the_tag_says(fmt: str, mime: str, orientation: int) -> None:
    # The pixel cap is exactly the image's pixels: turning it keeps the count, so it still loads.
    limits = ImageLimits(max_image_pixels=64 * 48)
    image = await load_image_bytes(_tagged(fmt, orientation), mime, limits, field=FIELD)
    turned = orientation in {6, 8}  # a phone held upright: 90 degrees, so width and height swap
    assert (image.width, image.height) == ((48, 64) if turned else (64, 48))
    assert image.image.size == (image.width, image.height)
    red, green, blue = image.image.getpixel(_BLOCK_SHOWN_AT[orientation])
    assert red > 200, (red, green, blue)
    assert max(green, blue) < 60, (red, green, blue)


async def test_an_unusable_orientation_tag_leaves_the_image_as_stored() -> None:
    image = await load_image_bytes(_tagged("JPEG", 9), "image/jpeg", LIMITS, field=FIELD)
    assert (image.width, image.height) == (64, 48)


async def test_transparent_pixels_become_white_and_palette_transparency_warns_nothing() -> None:
    rgba = Image.new("RGBA", (8, 8), (200, 10, 10, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    for data in (samples.encode(rgba, "PNG"), samples.encode(rgba.convert("P"), "PNG")):
        image = await load_image_bytes(data, "image/png", LIMITS, field=FIELD)  # warnings are errors here
        assert image.image.mode == "RGB"
        assert image.image.getpixel((5, 5)) == (255, 255, 255)
        assert image.image.getpixel((0, 0)) == (0, 0, 255)


@pytest.mark.parametrize("mode", ["L", "LA", "I;16", "1", "P"])
async def test_other_png_modes_come_out_rgb(mode: str) -> None:
    data = samples.encode(Image.new(mode, (6, 4)), "PNG")
    image = await load_image_bytes(data, "image/png", LIMITS, field=FIELD)
    assert (image.image.mode, image.image.size) == ("RGB", (6, 4))


async def test_cmyk_jpeg_comes_out_rgb() -> None:
    data = samples.encode(Image.new("CMYK", (6, 4), (0, 255, 255, 0)), "JPEG")
    image = await load_image_bytes(data, "image/jpeg", LIMITS, field=FIELD)
    assert image.image.mode == "RGB"
    red, green, blue = image.image.getpixel((2, 2))  # type: ignore[misc]
    assert red > 200
    assert max(green, blue) < 60


async def test_grpc_bytes_without_a_mime_type_are_judged_by_their_magic() -> None:
    data = samples.small("WEBP")
    image = await load_image_bytes(data, "", LIMITS, field=FIELD)
    assert image.mime_type == "image/webp"


# --- hostile images --------------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(30_000, 30_000), (10_000, 10_000), (100_000, 100_000), (1, 40_000_001)])
async def test_decompression_bomb_is_refused_from_the_header(width: int, height: int) -> None:
    # 10000x10000 lies between Pillow's warning and error thresholds: its warning must not escape
    # (warnings are errors in this suite, so an escaping warning would fail the test).
    bomb = samples.png_bomb(width, height)
    assert len(bomb) < 100
    with pytest.raises(PayloadTooLargeError) as caught:
        await load_image_bytes(bomb, "image/png", LIMITS, field=FIELD)
    assert f"{width}x{height}" in caught.value.reason
    assert "40000000 pixels" in caught.value.reason
    assert "--max-image-pixels" in caught.value.reason


async def test_bomb_with_compressed_data_is_refused_quickly_without_decoding() -> None:
    bomb = samples.png_bomb(20_000, 20_000, with_data=True)
    assert len(bomb) < 10_000
    started = time.perf_counter()
    with pytest.raises(PayloadTooLargeError, match="--max-image-pixels"):
        await load_image_url(samples.data_url(bomb, "image/png"), LIMITS, field=FIELD)
    # Decoding 400M pixels would take seconds and 1.2 GB; the header check takes microseconds.
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    ("bomb", "mime", "claim"),
    [
        (samples.jpeg_bomb(60_000, 60_000), "image/jpeg", "60000x60000"),
        (samples.webp_bomb(10_000, 10_000), "image/webp", "10000x10000"),  # between Pillow's thresholds
        (samples.webp_bomb(16_383, 16_383), "image/webp", "more than 178956970 pixels"),  # past them
    ],
)
async def test_jpeg_and_webp_bombs_are_refused_from_the_header(bomb: bytes, mime: str, claim: str) -> None:
    with pytest.raises(PayloadTooLargeError) as caught:
        await load_image_url(samples.data_url(bomb, mime), LIMITS, field=FIELD)
    assert claim in caught.value.reason
    assert caught.value.reason.endswith("the limit is 40000000 pixels per image (--max-image-pixels)")


async def test_png_text_chunk_bomb_is_refused_by_pillows_guard() -> None:
    bomb = samples.png_text_bomb()
    assert len(bomb) < 100_000
    err = await refused(samples.data_url(bomb, "image/png"))
    assert err.reason.startswith("the PNG data is corrupt (ValueError: Decompressed data too large")


async def test_bomb_under_a_lower_operator_limit() -> None:
    data = samples.small("PNG", (200, 100))
    limits = ImageLimits(max_image_pixels=19_999)
    with pytest.raises(PayloadTooLargeError, match=r"200x100 = 20000 pixels; the limit is 19999"):
        await load_image_bytes(data, "image/png", limits, field=FIELD)
    assert (await load_image_bytes(data, "image/png", ImageLimits(max_image_pixels=20_000), field=FIELD)).width == 200


@pytest.mark.parametrize(("fmt", "label"), [("PNG", "PNG"), ("JPEG", "JPEG"), ("WEBP", "WebP")])
async def test_truncated_images_fail_here_with_a_clear_message(fmt: str, label: str) -> None:
    data = samples.small(fmt, (400, 300))
    truncated = data[: len(data) * 2 // 3]
    with pytest.raises(InvalidRequestError) as caught:
        await load_image_bytes(truncated, "", LIMITS, field=FIELD)
    assert not isinstance(caught.value, PayloadTooLargeError)
    assert caught.value.reason.startswith(f"the {label} data is ")
    assert "truncated" in caught.value.reason or "corrupt" in caught.value.reason


async def test_png_cut_inside_its_pixel_data_says_truncated() -> None:
    data = samples.encode(samples.screenshot(200, 400), "PNG")
    err = await refused(samples.data_url(data[: len(data) // 2], "image/png"))
    assert err.reason == "the PNG data is truncated"


async def test_png_with_a_broken_header_checksum_is_corrupt() -> None:
    data = bytearray(samples.small("PNG"))
    data[29] ^= 0xFF  # inside the IHDR CRC
    err = await refused(samples.data_url(bytes(data), "image/png"))
    assert err.reason.startswith("the PNG data is corrupt")


async def test_jpeg_bytes_labelled_png_are_refused() -> None:
    err = await refused(samples.data_url(samples.small("JPEG"), "image/png"))
    assert err.reason == "declared image/png but the data is JPEG"
    with pytest.raises(InvalidRequestError, match="declared image/webp but the data is PNG"):
        await load_image_bytes(samples.small("PNG"), "image/webp", LIMITS, field=FIELD)


@pytest.mark.parametrize(
    ("mime", "expected"),
    [
        ("image/svg+xml", "image/svg+xml is not accepted; send PNG, JPEG or WebP"),
        ("image/gif", "image/gif is not accepted; send PNG, JPEG or WebP"),
        ("image/bmp", "image/bmp is not accepted; send PNG, JPEG or WebP"),
        ("image/tiff", "image/tiff is not accepted; send PNG, JPEG or WebP"),
        ("text/html", "text/html is not accepted; send PNG, JPEG or WebP"),
        ("image/<script>", "this media type is not accepted; send PNG, JPEG or WebP"),
    ],
)
async def test_refused_types_are_named(mime: str, expected: str) -> None:
    err = await refused(samples.data_url(samples.SVG, mime))
    assert err.reason == expected


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (samples.SVG, "SVG"),
        (b"\xef\xbb\xbf  <svg/>", "SVG"),
        (samples.small("GIF"), "GIF"),
        (samples.small("BMP"), "BMP"),
        (samples.small("TIFF"), "TIFF"),
        (samples.small("ICO"), "ICO"),
    ],
)
async def test_refused_formats_are_named_from_their_bytes_whatever_the_label(data: bytes, name: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        await load_image_bytes(data, "image/png", LIMITS, field=FIELD)
    assert f"{name} is not accepted; send PNG, JPEG or WebP" in caught.value.reason


async def test_unknown_bytes_and_empty_data() -> None:
    with pytest.raises(InvalidRequestError, match="is not a PNG, JPEG or WebP image"):
        await load_image_bytes(b"hello world", "", LIMITS, field=FIELD)
    with pytest.raises(InvalidRequestError, match="the image data is empty"):
        await load_image_bytes(b"", "image/png", LIMITS, field=FIELD)
    assert (await refused("data:image/png;base64,")).reason == "the image data is empty"


async def test_oversize_image_is_refused_before_its_base64_is_decoded() -> None:
    limits = ImageLimits(max_image_bytes=1000)
    # Not base64 at all: a size error (not a base64 error) proves the length was checked first.
    err = await refused("data:image/png;base64," + "!" * 4000, limits)
    assert isinstance(err, PayloadTooLargeError)
    assert err.reason == "the image is about 3000 bytes; the limit is 1000 bytes per image (--max-image-bytes)"
    with pytest.raises(PayloadTooLargeError, match="1001 bytes; the limit is 1000"):
        await load_image_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 993, "", limits, field=FIELD)


async def test_an_image_of_exactly_the_byte_cap_loads() -> None:
    data = samples.small("PNG")
    image = await load_image_url(
        samples.data_url(data, "image/png"), ImageLimits(max_image_bytes=len(data)), field=FIELD
    )
    assert image.encoded_bytes == len(data)
    await refused(samples.data_url(data, "image/png"), ImageLimits(max_image_bytes=len(data) - 1))


@pytest.mark.parametrize(
    "payload",
    [
        "iVBORw0KGgo*AAAA",  # a character outside the alphabet
        "iVBORw0KGgoAAA",  # bad padding
        "iVBORw0K\nGgoAAAAA",  # whitespace
        "iVBORw0K-_oAAAAA",  # the URL-safe alphabet
        "iVBORw0KGgoAAAé",  # non-ASCII
    ],
)
async def test_bad_base64_is_refused(payload: str) -> None:
    err = await refused("data:image/png;base64," + payload)
    assert "not valid base64" in err.reason


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("data:image/png," + "iVBORw0KGgo", "the data: URL is not base64; use data:image/png;base64,..."),
        ("data:image/png;charset=utf-8,abc", "the data: URL is not base64; use data:image/png;base64,..."),
        ("data:;base64,iVBORw0KGgo=", "the data: URL names no media type; use data:image/png;base64,..."),
        ("data:image/png;base64" + "A" * 300, "a data: URL needs a ',' after its media type"),
        ("ftp://example.com/a.png", "an image URL must be a data: URL (data:image/png;base64,...)"),
        ("javascript:alert(1)", "an image URL must be a data: URL (data:image/png;base64,...)"),
        ("", "an image URL must be a data: URL (data:image/png;base64,...)"),
    ],
)
async def test_malformed_urls(url: str, reason: str) -> None:
    err = await refused(url)
    assert err.reason.startswith(reason)


async def test_data_url_parameters_before_base64_are_allowed() -> None:
    data = samples.small("PNG")
    url = "DATA:image/png;name=shot.png;BASE64," + base64.b64encode(data).decode()
    assert (await load_image_url(url, LIMITS, field=FIELD)).encoded_bytes == len(data)


_SEEDS = {fmt: samples.small(fmt, (40, 30)) for fmt in ("PNG", "JPEG", "WEBP")}


@settings(max_examples=300, deadline=None)
@given(
    fmt=st.sampled_from(sorted(_SEEDS)),
    cut=st.integers(min_value=0, max_value=2000),
    flips=st.lists(st.tuples(st.integers(min_value=0, max_value=2000), st.integers(1, 255)), max_size=6),
)
def test_mangled_images_only_ever_fail_as_bad_requests(fmt: str, cut: int, flips: list[tuple[int, int]]) -> None:
    """Any truncation and byte flips of a real image: decoded, or refused as a bad request; nothing else."""
    data = bytearray(_SEEDS[fmt][: max(1, len(_SEEDS[fmt]) - cut)])
    for offset, mask in flips:
        data[offset % len(data)] ^= mask
    try:
        raw = bytes(data)
        image = decode_probed(raw, probe(raw, None, LIMITS.max_image_pixels, FIELD), FIELD)
    except InvalidRequestError:
        return  # refused with a message; anything else escaping would fail the test
    assert image.image.mode == "RGB"


# --- the per-request budget ------------------------------------------------------------------------


async def test_budget_counts_images_and_bytes_before_decoding() -> None:
    data = samples.small("PNG")
    limits = ImageLimits(max_images_per_request=3, max_request_image_bytes=2 * len(data) + 10)
    budget = ImageBudget(limits)
    budget.check_count(3, field="messages")
    with pytest.raises(PayloadTooLargeError) as caught:
        budget.check_count(4, field="messages")
    assert caught.value.reason == "the request has 4 images; the limit is 3 per request (--limit-images-per-request)"
    url = samples.data_url(data, "image/png")
    await load_image_url(url, limits, field=FIELD, budget=budget)
    await load_image_bytes(data, "image/png", limits, field=FIELD, budget=budget)
    assert (budget.images, budget.bytes) == (2, 2 * len(data))
    # The third is over the bytes cap; a bomb proves it was refused before decoding (it would fail on
    # pixels otherwise) and the budget is unchanged.
    bomb_url = samples.data_url(samples.png_bomb() + b"\x00" * len(data), "image/png")
    with pytest.raises(PayloadTooLargeError, match=r"more than \d+ bytes.*--max-request-image-bytes"):
        await load_image_url(bomb_url, limits, field=FIELD, budget=budget)
    assert (budget.images, budget.bytes) == (2, 2 * len(data))


async def test_budget_refuses_one_image_too_many_even_without_check_count() -> None:
    limits = ImageLimits(max_images_per_request=1)
    budget = ImageBudget(limits)
    data = samples.small("JPEG")
    await load_image_bytes(data, "image/jpeg", limits, field=FIELD, budget=budget)
    with pytest.raises(PayloadTooLargeError, match="--limit-images-per-request"):
        await load_image_bytes(data, "image/jpeg", limits, field=FIELD, budget=budget)


# --- settings --------------------------------------------------------------------------------------


def test_settings_defaults_and_limits() -> None:
    settings = ImageSettings()
    assert settings.max_image_bytes == 16 * 2**20
    assert settings.max_image_pixels == 40_000_000
    assert settings.limit_images_per_request == 10
    assert settings.max_request_image_bytes == 64 * 2**20
    assert settings.allowed_image_url_prefixes == []
    assert settings.allowed_local_image_dir == ""
    assert ImageLimits.from_settings(settings) == ImageLimits()


def test_our_pixel_cap_stays_within_pillows_guard() -> None:
    assert Image.MAX_IMAGE_PIXELS == PILLOW_MAX_IMAGE_PIXELS
    with pytest.raises(ValueError, match="less than or equal to 89478485"):
        ImageSettings(max_image_pixels=PILLOW_MAX_IMAGE_PIXELS + 1)


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("ftp://cdn.example.com/", "must be http:// or https:// with a host"),
        ("https:///path/", "must be http:// or https:// with a host"),
        ("https://user@cdn.example.com/", "must not carry userinfo"),
        ("https://cdn.example.com/a/../b/", "must not contain '.' or '..' segments"),
        ("https://cdn.example.com/?x=1", "must not carry a query or fragment"),
        ("https://cdn.example.com/ a/", "contains whitespace"),
    ],
)
def test_bad_prefixes_are_refused_at_start_up(prefix: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ImageSettings(allowed_image_url_prefixes=[prefix])


def test_local_dir_must_exist(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="is not a directory"):
        ImageLimits.from_settings(ImageSettings(allowed_local_image_dir="/nonexistent/images"))
    limits = ImageLimits.from_settings(ImageSettings(allowed_local_image_dir=str(tmp_path)))
    assert limits.allowed_local_dir == Path(str(tmp_path)).resolve()
