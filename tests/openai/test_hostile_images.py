"""Hostile images over HTTP, through the openai SDK, to a daemon that takes images.

The daemon is the real one, twice (conftest.py, `vision_backend`): over a STAND-IN for a vision engine
(vision_standin.py: builtin:tiny reporting supports_images, each image rendered as a `<image WxH>`
placeholder), and over builtin:glm4v-tiny (a real GLM-4.1V: its image processor and vision tower).
The codes are the same on both, and the same as on the vLLM engine, which shares the image pipeline
and the vision chat renderer. Its caps come from its own flags: --max-image-bytes 200000,
--limit-images-per-request 2, --max-request-bytes 1 MiB. A good image is served (the control), so that
each refusal below is an image rule's, with its status (400, or 413 for a size cap) and the field it names.
"""

from __future__ import annotations

import base64
import http.server
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from tests.helpers.daemon import Daemon
from tests.openai.conftest import IMAGES_PER_REQUEST, MAX_IMAGE_BYTES, MAX_REQUEST_BYTES
from tests.openai.support import SERVED, error_body, log_lines, root_url, sdk, wait_for
from tests.openai.vision_standin import placeholder
from tests.serving import image_http
from tests.serving import image_samples as samples

FIELD = "messages[1].content[0]"
TEXT = {"type": "text", "text": "** Screen Info **"}


def _image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def _messages(*images: str) -> list[Any]:
    return [
        {"role": "system", "content": "You operate a phone."},
        {"role": "user", "content": [*map(_image, images), TEXT]},
    ]


def _png(width: int = 64, height: int = 48) -> bytes:
    return samples.small("PNG", (width, height))


@pytest.fixture(scope="module")
def client(vision_daemon: Daemon) -> Iterator[openai.OpenAI]:
    with sdk(vision_daemon, "unused") as connected:
        yield connected


@pytest.fixture(scope="module")
def listener() -> Iterator[image_http.Listener]:
    """A real HTTP server on 127.0.0.1 serving a good PNG: any contact from the daemon is counted."""
    running = image_http.start()
    body = _png()

    def serve(handler: http.server.BaseHTTPRequestHandler) -> None:
        image_http.send_body(handler, body)

    running.routes["/screen.png"] = serve
    try:
        yield running
    finally:
        running.stop()


def _refused(client: openai.OpenAI, messages: list[Any], status: int) -> dict[str, Any]:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=SERVED, messages=messages, max_tokens=2)
    assert caught.value.status_code == status, error_body(caught.value)
    error = error_body(caught.value)
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(f"{error['param']}: ")
    return error


# --- the control: images the rules let through reach the engine ------------------------------------------------


@pytest.mark.parametrize(("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
def test_a_good_image_is_served(
    vision_daemon: Daemon, vision_backend: str, client: openai.OpenAI, fmt: str, mime: str
) -> None:
    url = samples.data_url(samples.small(fmt, (64, 48)), mime)
    text_only = client.chat.completions.create(model=SERVED, messages=_messages(), max_tokens=2)
    reply = client.chat.completions.create(
        model=SERVED, messages=_messages(url), max_tokens=2, extra_body={"ignore_eos": True}
    )
    assert reply.usage is not None
    assert text_only.usage is not None
    assert reply.usage.completion_tokens == 2
    assert reply.usage.prompt_tokens > text_only.usage.prompt_tokens
    # The engine was given the decoded image, not the URL: the stand-in names its size in a placeholder,
    # GLM-4.1V's template writes its image token (which the engine expands into the image's patches).
    mark = placeholder(64, 48) if vision_backend == "standin" else "<|begin_of_image|><|image|><|end_of_image|>"
    line = wait_for(
        lambda: next((entry for entry in log_lines(vision_daemon) if mark in str(entry.get("prompt_text"))), None),
        timeout=10,
        what=f"a logged prompt with {mark}",
    )
    assert "data:" not in line["prompt_text"]


# --- hostile images ----------------------------------------------------------------------------------------------


def test_a_png_decompression_bomb_is_413_from_its_header(client: openai.OpenAI) -> None:
    for bomb in (samples.png_bomb(30_000, 30_000), samples.png_bomb(20_000, 20_000, with_data=True)):
        assert len(bomb) < 10_000
        error = _refused(client, _messages(samples.data_url(bomb, "image/png")), 413)
        assert error["param"] == FIELD
        assert "--max-image-pixels" in error["message"]
    claimed = _refused(client, _messages(samples.data_url(samples.png_bomb(), "image/png")), 413)
    assert "30000x30000" in claimed["message"]


def test_a_truncated_png_is_400(client: openai.OpenAI) -> None:
    data = samples.encode(samples.screenshot(200, 400), "PNG")
    error = _refused(client, _messages(samples.data_url(data[: len(data) // 2], "image/png")), 400)
    assert (error["param"], error["message"]) == (FIELD, f"{FIELD}: the PNG data is truncated")


def test_jpeg_bytes_sent_as_png_are_400(client: openai.OpenAI) -> None:
    error = _refused(client, _messages(samples.data_url(samples.small("JPEG"), "image/png")), 400)
    assert error["message"] == f"{FIELD}: declared image/png but the data is JPEG"


def test_svg_is_400_whatever_its_label(client: openai.OpenAI) -> None:
    error = _refused(client, _messages(samples.data_url(samples.SVG, "image/svg+xml")), 400)
    assert error["message"] == f"{FIELD}: image/svg+xml is not accepted; send PNG, JPEG or WebP"
    error = _refused(client, _messages(samples.data_url(samples.SVG, "image/png")), 400)
    assert "SVG is not accepted" in error["message"]


def test_an_image_over_max_image_bytes_is_413(client: openai.OpenAI) -> None:
    data = samples.PNG_SIGNATURE + b"\x00" * MAX_IMAGE_BYTES  # over the cap by the signature's 8 bytes
    url = samples.data_url(data, "image/png")
    assert len(url) < MAX_REQUEST_BYTES  # the body is within its cap: this is the image's
    error = _refused(client, _messages(url), 413)
    assert error["param"] == FIELD
    assert f"the limit is {MAX_IMAGE_BYTES} bytes per image (--max-image-bytes)" in error["message"]


def test_too_many_images_is_413_before_any_is_decoded(client: openai.OpenAI) -> None:
    good = samples.data_url(_png(), "image/png")
    bomb = samples.data_url(samples.png_bomb(), "image/png")
    # One more than the limit, the first a bomb: the count is refused first, so the bomb is never looked at.
    messages = _messages(bomb, *[good] * IMAGES_PER_REQUEST)
    error = _refused(client, messages, 413)
    assert error["param"] == "messages"
    assert error["message"] == (
        f"messages: the request has {IMAGES_PER_REQUEST + 1} images; the limit is {IMAGES_PER_REQUEST} per request"
        " (--limit-images-per-request)"
    )
    # Spread over two messages, they still count together.
    split = [*_messages(good), {"role": "user", "content": [_image(good), _image(good)]}]
    assert _refused(client, split, 413)["param"] == "messages"


def test_http_and_file_urls_are_refused_and_never_contacted(
    client: openai.OpenAI, listener: image_http.Listener, tmp_path: Path
) -> None:
    local = tmp_path / "screen.png"
    local.write_bytes(_png())
    host = f"127.0.0.1:{listener.port}"
    urls = {
        f"{listener.base}/screen.png": "http(s) image URLs are refused",
        f"https://{host}/screen.png": "http(s) image URLs are refused",
        f"HTTP://{host}/screen.png": "http(s) image URLs are refused",
        "http://169.254.169.254/latest/meta-data/": "http(s) image URLs are refused",
        local.as_uri(): "file:// image URLs are refused",
        f"file://{host}/screen.png": "file:// image URLs are refused",
        f"ftp://{host}/screen.png": "must be a data: URL",
    }
    for url, says in urls.items():
        error = _refused(client, _messages(url), 400)
        assert error["param"] == FIELD
        assert says in error["message"], url
    # The listener itself serves (so a fetch would have been seen), and saw no connection but ours.
    assert listener.connections == 0
    assert listener.paths == []
    with httpx2.Client() as own:
        assert own.get(f"{listener.base}/screen.png").status_code == 200
    assert listener.connections == 1


def test_a_body_over_max_request_bytes_is_413(vision_daemon: Daemon, client: openai.OpenAI) -> None:
    big = samples.data_url(b"\x00" * MAX_REQUEST_BYTES, "image/png")  # ~1.4 MB of base64: over the body cap
    error = _refused(client, _messages(big), 413)
    assert error["param"] == "body"
    assert error["message"].endswith(f"at most {MAX_REQUEST_BYTES} (--max-request-bytes)")
    # Sent without a Content-Length (chunked), it is cut while it is read.
    chunk = b'{"model": "' + SERVED.encode() + b'", "messages": [], "pad": "' + b"x" * 65536

    def body() -> Iterator[bytes]:
        yield chunk
        for _ in range(MAX_REQUEST_BYTES // 65536 + 1):
            yield b"x" * 65536
        yield b'"}'

    with httpx2.Client(timeout=60) as http:
        response = http.post(
            f"{root_url(vision_daemon)}/v1/chat/completions",
            content=body(),
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 413
    assert "content-length" not in {key.lower() for key in response.request.headers}
    expected = f"body: the body is over {MAX_REQUEST_BYTES} bytes (--max-request-bytes)"
    assert response.json()["error"]["message"] == expected


def test_raw_base64_garbage_is_400(client: openai.OpenAI) -> None:
    payload = base64.b64encode(_png()).decode()[:-3] + "*=="
    error = _refused(client, _messages(f"data:image/png;base64,{payload}"), 400)
    assert "not valid base64" in error["message"]


def test_an_image_the_models_processor_refuses_is_400(vision_backend: str, client: openai.OpenAI) -> None:
    """GLM-4.1V's image processor refuses an aspect ratio over 200; the stand-in has no processor."""
    if vision_backend == "standin":
        pytest.skip("the stand-in renders images as text: no image processor to refuse one")
    strip = samples.data_url(samples.encode(samples.screenshot(5000, 20), "PNG"), "image/png")
    error = _refused(client, _messages(strip), 400)
    assert error["param"] == "messages"
    assert "the model's image processor refused an image" in error["message"]
    assert "200" in error["message"]
