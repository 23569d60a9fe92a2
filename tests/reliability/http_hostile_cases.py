"""The hand-written hostile HTTP requests of scenario 12 and the status each must get.

Bodies are raw bytes (or a chunk iterator: chunked transfer encoding, no Content-Length), so that
a case can be invalid JSON, invalid UTF-8 or a JSON extension (NaN) no encoder would write.
builtin:tiny has no vision, so every image case must get 400 naming the image part ("takes no
images") before anything is decoded or fetched; the decoders themselves are tested in
tests/serving against the same hostile files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.serving import image_samples as samples

MODEL = "builtin:tiny"
MAX_REQUEST_BYTES = 4 * 2**20  # the daemon's --max-request-bytes here: a 1080x2400 screenshot (~1.2 MB) fits
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
JSON = {"content-type": "application/json"}
NO_IMAGES = "takes no images"


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes | tuple[bytes, ...]  # a tuple is sent chunked, one chunk per item
    status: int
    param: str | None = None  # the error body's `param` must start with this
    path: str = CHAT
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))
    contains: str | None = None  # the error message must contain this

    def content(self) -> bytes | Iterator[bytes]:
        return iter(self.body) if isinstance(self.body, tuple) else self.body


def chat(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    return {**base, **fields}


def raw(value: Any) -> bytes:
    return json.dumps(value).encode()


def _with(template: dict[str, Any], key: str, literal: str) -> bytes:
    """The body with `key` set to a raw JSON literal (NaN, 1e400, a lone surrogate escape)."""
    marker = "__LITERAL__"
    return raw({**template, key: marker}).replace(f'"{marker}"'.encode(), literal.encode())


def _image(url: str, text: str = "what is on the screen?") -> bytes:
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}]
    return raw(chat(messages=[{"role": "user", "content": content}]))


def json_cases() -> list[Case]:
    deep_array = b"[" * 100_000 + b"]" * 100_000
    deep_extra = b'{"model":"builtin:tiny","messages":[{"role":"user","content":"hi"}],"x":' + b'{"a":' * 5000
    deep_extra += b"1" + b"}" * 5000 + b"}"
    return [
        Case("invalid JSON", b"{bad", 400, "body"),
        Case("empty body", b"", 400, "body"),
        Case("truncated JSON", b'{"model": "builtin:tiny", "messages": [', 400, "body"),
        Case("a JSON array", b"[]", 400),
        Case("a JSON string", b'"chat"', 400),
        Case("JSON null", b"null", 400),
        Case("100k-deep array as messages", b'{"model":"builtin:tiny","messages":' + deep_array + b"}", 400),
        Case("5000-deep object in an unknown field", deep_extra, 400),
        Case("max_tokens 10**400", _with(chat(), "max_tokens", "1" + "0" * 400), 400, "max_tokens"),
        Case("max_tokens -1", raw(chat(max_tokens=-1)), 400, "max_tokens"),
        Case("max_tokens 0", raw(chat(max_tokens=0)), 400, "max_tokens"),
        Case("temperature 1e400", _with(chat(), "temperature", "1e400"), 400, "temperature"),
        Case("temperature NaN", _with(chat(), "temperature", "NaN"), 400, "temperature"),
        Case("top_p Infinity", _with(chat(), "top_p", "Infinity"), 400, "top_p"),
        Case("frequency_penalty -Infinity", _with(chat(), "frequency_penalty", "-Infinity"), 400, "frequency_penalty"),
        # JSON integers are unbounded (gRPC's are not): each must be refused or served, never reach
        # the engine thread out of range. seed 2**64 with sampling used to kill the engine (exit 70).
        Case("seed 2**64, sampling", raw(chat(seed=2**64, temperature=1.0)), 400, "seed"),
        Case("seed 2**64, greedy", raw(chat(seed=2**64)), 400, "seed"),
        Case("seed -1, sampling", raw(chat(seed=-1, temperature=1.0)), 400, "seed"),
        Case("seed 2**64 - 1, sampling", raw(chat(seed=2**64 - 1, temperature=1.0)), 200),
        Case("top_k 10**20, sampling (no cut)", raw(chat(top_k=10**20, temperature=1.0)), 200),
        Case("priority +-10**30", raw(chat(priority=-(10**30))), 200),
        Case("stop_token_ids [10**20]", raw(chat(stop_token_ids=[10**20])), 400, "stop_token_ids"),
        Case("top_logprobs 10**20", raw(chat(logprobs=True, top_logprobs=10**20)), 400, "top_logprobs"),
        Case("max_completion_tokens 10**20", raw(chat(max_completion_tokens=10**20)), 400, "max_tokens"),
        Case("messages as a string", raw(chat(messages="hi")), 400, "messages"),
        Case("no messages", raw(chat(messages=[])), 400, "messages"),
        Case("max_tokens as a string", raw(chat(max_tokens="8")), 400, "max_tokens"),
        Case("stream as a string", raw(chat(stream="yes")), 400, "stream"),
        Case("model as a number", raw(chat(model=5)), 400, "model"),
        Case("role as a number", raw(chat(messages=[{"role": 5, "content": "hi"}])), 400, "messages"),
        Case("unknown role", raw(chat(messages=[{"role": "robot", "content": "hi"}])), 400, "messages[0].role"),
        Case("content as a number", raw(chat(messages=[{"role": "user", "content": 5}])), 400, "messages"),
        Case("audio content part", raw(chat(messages=[{"role": "user", "content": [{"type": "input_audio"}]}])), 400),
        Case("stop as a number", raw(chat(stop=5)), 400, "stop"),
        Case("n 2", raw(chat(n=2)), 400, "n"),
        Case("tools", raw(chat(tools=[{"type": "function", "function": {"name": "f"}}])), 400, "tools"),
        Case("unknown model", raw(chat(model="gpt-9")), 404, "model"),
        Case("invalid UTF-8 in a string", raw(chat()).replace(b'"hi"', b'"h\xff\xfei"'), 400, "body"),
        Case("overlong UTF-8 encoding", raw(chat()).replace(b'"hi"', b'"\xc0\xaf"'), 400, "body"),
        Case("lone surrogate escape", _with(chat(), "messages", '[{"role":"user","content":"\\ud800"}]'), 400),
        Case(
            "NUL, RTL and zero-width characters",
            raw(chat(messages=[{"role": "user", "content": "a\0\u202e\u200b"}])),
            200,
        ),
        Case("emoji and combining marks", raw(chat(messages=[{"role": "user", "content": "👩‍👩‍👧e\u0301" * 50}])), 200),
        Case("prompt empty", raw({"model": MODEL, "prompt": "", "max_tokens": 4}), 400, "prompt", COMPLETIONS),
        Case(
            "prompt id out of vocab",
            raw({"model": MODEL, "prompt": [10**9], "max_tokens": 4}),
            400,
            "prompt",
            COMPLETIONS,
        ),
        Case("two prompts", raw({"model": MODEL, "prompt": ["a", "b"], "max_tokens": 4}), 400, "prompt", COMPLETIONS),
        Case("echo", raw({"model": MODEL, "prompt": "a", "echo": True}), 400, "echo", COMPLETIONS),
    ]


def transport_cases() -> list[Case]:
    big = raw(chat(messages=[{"role": "user", "content": "a" * (MAX_REQUEST_BYTES + 1)}]))
    big_chunks = tuple(big[i : i + 65536] for i in range(0, len(big), 65536))
    valid = raw(chat())
    return [
        Case("body over --max-request-bytes", big, 413, "body"),
        Case("chunked body over the limit, no Content-Length", big_chunks, 413, "body"),
        Case("chunked valid body, no Content-Length", (valid[:10], valid[10:]), 200),
        # Only application/json: a web page cannot make a browser send it without a CORS preflight.
        Case("valid JSON as text/plain", valid, 415, "content-type", headers={"content-type": "text/plain"}),
        Case("no content-type", valid, 415, "content-type", headers={}),
        Case("JSON with a charset", valid, 200, headers={"content-type": "application/json; charset=utf-8"}),
        Case(
            "multipart form",
            b"--x\r\ncontent-disposition: form-data; name=model\r\n\r\nm\r\n--x--\r\n",
            415,
            "content-type",
            headers={"content-type": "multipart/form-data; boundary=x"},
        ),
        Case("GET on chat/completions", b"", 405, method="GET"),
        Case("POST on models", b"", 405, path="/v1/models"),
        Case("unknown path", valid, 404, path="/v1/embeddings"),
        Case("path traversal", b"", 404, path="/v1/../../etc/passwd", method="GET"),
    ]


def image_cases(listener_base: str) -> list[Case]:
    png = samples.small("PNG", (120, 80))
    return [
        Case(f"image: {name}", _image(url), 400, "messages[0].content[0]", contains=NO_IMAGES)
        for name, url in (
            ("PNG decompression bomb", samples.data_url(samples.png_bomb(with_data=True), "image/png")),
            ("JPEG header bomb", samples.data_url(samples.jpeg_bomb(), "image/jpeg")),
            ("truncated PNG", samples.data_url(png[: len(png) // 2], "image/png")),
            ("SVG", samples.data_url(samples.SVG, "image/svg+xml")),
            ("PNG labelled image/gif", samples.data_url(png, "image/gif")),
            ("invalid base64", "data:image/png;base64,!!!not base64!!!"),
            ("http URL to a local listener", f"{listener_base}/screen.png"),
            ("cloud metadata URL", "http://169.254.169.254/latest/meta-data/"),
            ("file URL", "file:///etc/passwd"),
            ("full-size screenshot", samples.data_url(samples.encode(samples.screenshot(), "PNG"), "image/png")),
        )
    ]
