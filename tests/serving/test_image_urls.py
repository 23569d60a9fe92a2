"""http(s):// and file:// image URLs: refused by default (a real local listener proves it is never
contacted), fetched or read only where an operator allowed, with no redirect followed and sizes capped."""

from __future__ import annotations

import asyncio
import http.server
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoglm_server.errors import InvalidRequestError, PayloadTooLargeError
from autoglm_server.serving.images import ImageLimits, load_image_url
from autoglm_server.serving.images.settings import ImageSettings
from tests.serving import image_http
from tests.serving import image_samples as samples

FIELD = "messages[1].content[0].image_url"
PNG = samples.small("PNG", (120, 80))


@pytest.fixture
def listener() -> Iterator[image_http.Listener]:
    server = image_http.start()
    server.routes["/img/a.png"] = lambda handler: image_http.send_body(handler, PNG)
    server.routes["/secret.png"] = lambda handler: image_http.send_body(handler, PNG)
    yield server
    server.stop()


def allowing(*prefixes: str, **settings: object) -> ImageLimits:
    return ImageLimits.from_settings(ImageSettings(allowed_image_url_prefixes=list(prefixes), **settings))  # type: ignore[arg-type]


async def refused(url: str, limits: ImageLimits) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        await load_image_url(url, limits, field=FIELD)
    assert caught.value.field == FIELD
    return caught.value


# --- http(s): refused by default --------------------------------------------------------------------


async def test_http_urls_are_refused_by_default_and_never_contacted(listener: image_http.Listener) -> None:
    for url in (
        f"{listener.base}/img/a.png",
        f"HTTP://127.0.0.1:{listener.port}/img/a.png",
        f"https://127.0.0.1:{listener.port}/img/a.png",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    ):
        err = await refused(url, ImageLimits())
        assert err.reason == (
            "http(s) image URLs are refused: the server does not fetch URLs a caller names; send the image"
            " as a data: URL (an operator may allow prefixes with --allowed-image-url-prefixes)"
        )
    await asyncio.sleep(0.1)  # a connection attempt, had there been one, would have landed by now
    assert listener.connections == 0


async def test_urls_that_escape_an_allowed_prefix_are_never_contacted(listener: image_http.Listener) -> None:
    base, port = listener.base, listener.port
    below_img = allowing(f"{base}/img/")
    cases = [
        # '..' (raw, percent-encoded, double-encoded) out of /img/ to /secret.png
        (below_img, f"{base}/img/../secret.png", "'..' path segments"),
        (below_img, f"{base}/img/%2e%2e/secret.png", "'..' path segments"),
        (below_img, f"{base}/img/%252e%252e/secret.png", "'..' path segments"),
        (below_img, f"{base}/img/..%2fsecret.png", "'..' path segments"),
        (below_img, f"{base}/img\\..\\secret.png", "backslash"),
        (below_img, f"{base}/img/a.png#\u00e9", "non-ASCII"),
        # another path on the allowed host
        (below_img, f"{base}/secret.png", "not below any prefix"),
        # userinfo: the literal prefix matches, the host is 127.0.0.1
        (allowing("http://allowed.invalid"), f"http://allowed.invalid@127.0.0.1:{port}/img/a.png", "userinfo"),
        # a longer host name that starts with the allowed one (resolves to 127.0.0.1 with public DNS)
        (allowing("http://127.0.0.1"), f"http://127.0.0.1.nip.io:{port}/img/a.png", "not below any prefix"),
        # a prefix without a port (so port 80) does not allow another port on the same host
        (allowing("http://127.0.0.1/img/"), f"http://127.0.0.1:{port}/img/a.png", "not below any prefix"),
    ]
    for limits, url, why in cases:
        err = await refused(url, limits)
        assert why in err.reason, url
    await asyncio.sleep(0.1)
    assert listener.connections == 0


# --- http(s): an allowed prefix ---------------------------------------------------------------------


async def test_an_allowed_prefix_is_fetched(listener: image_http.Listener) -> None:
    image = await load_image_url(f"{listener.base}/img/a.png?v=2", allowing(f"{listener.base}/img/"), field=FIELD)
    assert (image.width, image.height, image.encoded_bytes) == (120, 80, len(PNG))
    assert listener.paths == ["/img/a.png?v=2"]


async def test_a_redirect_is_not_followed(listener: image_http.Listener) -> None:
    listener.routes["/img/moved.png"] = image_http.redirect("/secret.png")
    err = await refused(f"{listener.base}/img/moved.png", allowing(f"{listener.base}/img/"))
    assert err.reason == "the image URL answered HTTP 302 (a redirect); redirects are not followed"
    assert listener.paths == ["/img/moved.png"]


async def test_error_statuses_and_content_types(listener: image_http.Listener) -> None:
    limits = allowing(f"{listener.base}/img/")
    assert (await refused(f"{listener.base}/img/missing.png", limits)).reason == "the image URL answered HTTP 404"
    listener.routes["/img/gif"] = lambda handler: image_http.send_body(handler, PNG, "image/gif")
    assert "image/gif is not accepted" in (await refused(f"{listener.base}/img/gif", limits)).reason
    listener.routes["/img/jpeg"] = lambda handler: image_http.send_body(handler, PNG, "image/jpeg")
    assert (await refused(f"{listener.base}/img/jpeg", limits)).reason == "declared image/jpeg but the data is PNG"
    # A non-image Content-Type declares nothing: the bytes decide.
    listener.routes["/img/octets"] = lambda handler: image_http.send_body(handler, PNG, "application/octet-stream")
    assert (await load_image_url(f"{listener.base}/img/octets", limits, field=FIELD)).width == 120


async def test_a_compressed_body_is_refused(listener: image_http.Listener) -> None:
    def gzipped(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Encoding", "gzip")
        handler.send_header("Content-Length", "4")
        handler.end_headers()
        handler.wfile.write(b"\x1f\x8b\x08\x00")

    listener.routes["/img/gz"] = gzipped
    err = await refused(f"{listener.base}/img/gz", allowing(f"{listener.base}/img/"))
    assert err.reason == "the image URL sent Content-Encoding 'gzip'; only identity is read"


async def test_an_oversize_body_is_refused_from_content_length(listener: image_http.Listener) -> None:
    big = PNG + b"\x00" * 5000
    listener.routes["/img/big.png"] = lambda handler: image_http.send_body(handler, big)
    err = await refused(f"{listener.base}/img/big.png", allowing(f"{listener.base}/img/", max_image_bytes=4096))
    assert isinstance(err, PayloadTooLargeError)
    assert err.reason == f"the image is {len(big)} bytes; the limit is 4096 bytes per image (--max-image-bytes)"


async def test_an_endless_body_is_cut_at_the_cap(listener: image_http.Listener) -> None:
    listener.routes["/img/endless.png"] = image_http.endless(listener, "endless", PNG[:8] + b"\x00" * 65528)
    limits = allowing(f"{listener.base}/img/", max_image_bytes=256 * 1024)
    err = await refused(f"{listener.base}/img/endless.png", limits)
    assert isinstance(err, PayloadTooLargeError)
    assert "more than 262144 bytes" in err.reason
    assert await asyncio.to_thread(listener.body_done.wait, 5)
    # The client hung up near the cap; socket buffers let the server write a few MB more at most.
    assert listener.sent["endless"] < 16 * 2**20


async def test_a_slow_drip_is_cut_by_the_total_timeout(listener: image_http.Listener) -> None:
    listener.routes["/img/slow.png"] = image_http.endless(listener, "slow", b"\x00" * 64, delay_s=0.05)
    limits = allowing(f"{listener.base}/img/", image_fetch_timeout=0.5)
    started = time.monotonic()
    err = await refused(f"{listener.base}/img/slow.png", limits)
    assert err.reason == "fetching the image URL took longer than 0.5 s (--image-fetch-timeout)"
    assert time.monotonic() - started < 3


async def test_a_closed_port_is_a_clear_error() -> None:
    server = image_http.start()
    base = server.base
    server.stop()  # nothing listens there now
    err = await refused(f"{base}/img/a.png", allowing(f"{base}/img/"))
    assert err.reason == "could not fetch the image URL (ConnectError)"


# --- file:// -----------------------------------------------------------------------------------------


@pytest.fixture
def image_dirs(tmp_path: Path) -> tuple[Path, Path]:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "shot.png").write_bytes(PNG)
    (allowed / "sub").mkdir()
    (allowed / "sub" / "deep.png").write_bytes(PNG)
    (outside / "secret.png").write_bytes(PNG)
    (allowed / "escape.png").symlink_to(outside / "secret.png")
    (allowed / "escape_dir").symlink_to(outside)
    (allowed / "alias.png").symlink_to(allowed / "sub" / "deep.png")
    os.mkfifo(allowed / "fifo.png")
    return allowed, outside


def local(allowed: Path, **settings: object) -> ImageLimits:
    return ImageLimits.from_settings(ImageSettings(allowed_local_image_dir=str(allowed), **settings))  # type: ignore[arg-type]


async def test_file_urls_are_refused_by_default(image_dirs: tuple[Path, Path]) -> None:
    allowed, _ = image_dirs
    err = await refused(f"file://{allowed}/shot.png", ImageLimits())
    assert err.reason.startswith("file:// image URLs are refused: the server does not read local files")
    assert "--allowed-local-image-dir" in err.reason


async def test_files_inside_the_allowed_dir_load(image_dirs: tuple[Path, Path]) -> None:
    allowed, _ = image_dirs
    limits = local(allowed)
    for name in ("shot.png", "sub/deep.png", "alias.png", "sub/de%65p.png"):
        image = await load_image_url(f"file://{allowed}/{name}", limits, field=FIELD)
        assert image.width == 120
    assert (await load_image_url(f"file://localhost{allowed}/shot.png", limits, field=FIELD)).width == 120


async def test_files_outside_the_allowed_dir_are_refused(image_dirs: tuple[Path, Path]) -> None:
    allowed, outside = image_dirs
    limits = local(allowed)
    not_below = (
        "the file:// URL does not name a readable file below the directory the operator allows"
        " (--allowed-local-image-dir)"
    )
    for url in (
        f"file://{outside}/secret.png",  # plainly outside
        f"file://{allowed}/escape.png",  # a symlink out
        f"file://{allowed}/escape_dir/secret.png",  # a directory symlink out
        f"file://{allowed}/missing.png",  # missing: the same answer, so nothing can be probed
        "file:///etc/passwd",
        f"file://{allowed}/sub",  # a directory
        f"file://{allowed}/fifo.png",  # a FIFO: refused, not a hang
    ):
        assert (await refused(url, limits)).reason == not_below, url
    for url in (f"file://{allowed}/../outside/secret.png", f"file://{allowed}/%2e%2e/outside/secret.png"):
        assert "'..' segments" in (await refused(url, limits)).reason
    assert "without host" in (await refused(f"file://otherhost{allowed}/shot.png", limits)).reason


async def test_an_oversize_local_file_is_refused_before_reading(image_dirs: tuple[Path, Path]) -> None:
    allowed, _ = image_dirs
    (allowed / "big.png").write_bytes(PNG + b"\x00" * 10_000)
    err = await refused(f"file://{allowed}/big.png", local(allowed, max_image_bytes=8192))
    assert isinstance(err, PayloadTooLargeError)
    assert "the limit is 8192 bytes per image (--max-image-bytes)" in err.reason
