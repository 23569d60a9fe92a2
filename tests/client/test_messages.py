"""Chat messages and images, without a network: typed values and OpenAI dicts to protobuf, and bad input."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from autoglm_client import ImagePart, Message, Role, TextPart
from autoglm_client._convert import GenerateOptions, chat_request, generate_request
from autoglm_client._images import sniff_mime_type
from autoglm_client._metadata import MAX_SESSION_ID_CHARS, SESSION_HEADER, CallMetadata, check_session_id
from autoglm_client.messages import as_messages
from autoglm_client.v1 import generation_pb2 as pb
from autoglm_server import names as server_names

SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>'
GIF = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"


def _encoded(image_format: str, mode: str = "RGB", size: tuple[int, int] = (4, 3)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, (200, 10, 30)).save(buffer, format=image_format)
    return buffer.getvalue()


def _data_url(data: bytes, mime_type: str = "image/png") -> str:
    return f"data:{mime_type};base64,{base64.b64encode(data).decode()}"


PNG, JPEG, WEBP = _encoded("PNG"), _encoded("JPEG"), _encoded("WEBP")


@pytest.mark.parametrize(
    ("data", "expected"),
    [(PNG, "image/png"), (JPEG, "image/jpeg"), (WEBP, "image/webp"), (GIF, None), (SVG, None), (b"", None)],
    ids=["png", "jpeg", "webp", "gif", "svg", "empty"],
)
def test_mime_type_comes_from_the_magic_bytes(data: bytes, expected: str | None) -> None:
    assert sniff_mime_type(data) == expected


def test_from_file_reads_the_type_from_the_bytes_not_the_extension(tmp_path: Path) -> None:
    disguised = tmp_path / "screenshot.jpg"
    disguised.write_bytes(PNG)
    part = ImagePart.from_file(disguised)
    assert (part.mime_type, part.data, part.url) == ("image/png", PNG, "")
    svg = tmp_path / "icon.png"
    svg.write_bytes(SVG)
    with pytest.raises(ValueError, match=r"icon\.png: not a PNG, JPEG or WebP image"):
        ImagePart.from_file(svg)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        ImagePart.from_file(empty)
    with pytest.raises(FileNotFoundError):
        ImagePart.from_file(tmp_path / "missing.png")


def test_from_bytes_checks_a_declared_type() -> None:
    assert ImagePart.from_bytes(WEBP).mime_type == "image/webp"
    assert ImagePart.from_bytes(bytearray(JPEG), "IMAGE/JPEG").data == JPEG
    with pytest.raises(ValueError, match="declared as image/png but the bytes are image/jpeg"):
        ImagePart.from_bytes(JPEG, "image/png")
    with pytest.raises(ValueError, match="not a PNG, JPEG or WebP"):
        ImagePart.from_bytes(GIF)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({}, ValueError),
        ({"data": PNG, "url": "https://x.test/a.png"}, ValueError),
        ({"url": "https://x.test/a.png", "mime_type": "image/png"}, ValueError),
        ({"data": "not bytes"}, TypeError),
    ],
    ids=["neither", "both", "url-with-mime", "str-data"],
)
def test_an_image_part_needs_exactly_one_source(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        ImagePart(**kwargs)


def test_from_pil_encodes_and_round_trips() -> None:
    original = Image.new("RGBA", (5, 7), (1, 2, 3, 128))
    png = ImagePart.from_pil(original)
    assert png.mime_type == "image/png"
    decoded = Image.open(io.BytesIO(png.data))
    assert (decoded.size, decoded.mode, decoded.getpixel((0, 0))) == ((5, 7), "RGBA", (1, 2, 3, 128))
    # JPEG has no alpha: the image is converted rather than refused.
    assert ImagePart.from_pil(original, "jpeg").mime_type == "image/jpeg"
    assert ImagePart.from_pil(Image.new("RGB", (2, 2)), "WEBP").mime_type == "image/webp"


def test_from_pil_refuses_other_formats_and_objects() -> None:
    with pytest.raises(ValueError, match="PNG, JPEG or WEBP"):
        ImagePart.from_pil(Image.new("RGB", (2, 2)), "GIF")
    with pytest.raises(TypeError, match=r"PIL\.Image\.Image"):
        ImagePart.from_pil(PNG)


def test_from_url_decodes_data_urls_and_keeps_others() -> None:
    part = ImagePart.from_url(_data_url(PNG))
    assert (part.data, part.mime_type, part.url) == (PNG, "image/png", "")
    remote = ImagePart.from_url("https://images.example/shot.png")
    assert (remote.url, remote.data) == ("https://images.example/shot.png", b"")
    assert "bytes>" in repr(part)  # a screenshot's bytes stay out of reprs
    assert len(repr(ImagePart(url="https://x.test/" + "a" * 500))) < 100


@pytest.mark.parametrize(
    ("url", "match"),
    [
        (_data_url(JPEG, "image/png"), "declared as image/png but the bytes are image/jpeg"),
        ("data:image/png," + "abc", "base64"),
        ("data:image/png;base64,@@@not-base64", "invalid base64"),
        (_data_url(SVG, "image/svg+xml"), "not a PNG, JPEG or WebP"),
        ("data:image/png;base64", "not a data: URL"),
        ("", "non-empty"),
    ],
    ids=["wrong-mime", "not-base64", "bad-base64", "svg", "no-comma", "empty"],
)
def test_bad_data_urls_raise_value_error(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ImagePart.from_url(url)


def test_message_normalises_role_and_content() -> None:
    message = Message("USER", ["look", ImagePart.from_bytes(PNG), TextPart("here")])
    assert message.role is Role.USER
    assert message.content == (TextPart("look"), ImagePart.from_bytes(PNG), TextPart("here"))
    assert Message(role=Role.SYSTEM, content="be brief").content == (TextPart("be brief"),)
    assert Message("assistant", "a") == Message(Role.ASSISTANT, [TextPart("a")])  # a value type


@pytest.mark.parametrize(
    ("role", "content", "error", "match"),
    [
        ("robot", "hi", ValueError, "system, user, assistant, tool"),
        (3, "hi", TypeError, "role must be str"),
        ("user", b"bytes", TypeError, "content must be a str or a list"),
        ("user", 42, TypeError, "content must be a str or a list"),
        ("user", [3.5], TypeError, r"content\[0\] must be"),
    ],
)
def test_bad_messages_raise(role: Any, content: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Message(role, content)


def test_an_open_autoglm_step_converts_to_protobuf() -> None:
    # The shape Open-AutoGLM sends each step: system prompt, then a screenshot data URL and text.
    messages = [
        {"role": "system", "content": "You are a phone agent."},
        {"role": "user", "content": "Open settings"},
        {"role": "assistant", "content": [{"type": "text", "text": "do(action='Launch')"}]},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": _data_url(PNG), "detail": "high"}},
                {"type": "text", "text": "** Screen Info **"},
            ],
        },
    ]
    request = chat_request(as_messages(messages), GenerateOptions(max_new_tokens=3000, temperature=0.0, top_p=0.85))
    roles = [m.role for m in request.messages]
    assert roles == [pb.CHAT_ROLE_SYSTEM, pb.CHAT_ROLE_USER, pb.CHAT_ROLE_ASSISTANT, pb.CHAT_ROLE_USER]
    assert request.messages[0].content[0].text == "You are a phone agent."
    image, text = request.messages[3].content
    assert image.image.data == PNG  # decoded from the data URL: a third fewer bytes on the wire
    assert image.image.mime_type == "image/png"
    assert text.text == "** Screen Info **"
    assert request.max_new_tokens == 3000
    assert request.sampling.HasField("temperature")  # 0.0 is sent, not left unset
    assert request.sampling.temperature == 0.0
    assert not request.sampling.HasField("frequency_penalty")


def test_typed_and_dict_messages_mix_and_urls_pass_through() -> None:
    messages = [
        Message("user", [ImagePart.from_bytes(JPEG)]),
        {"role": "user", "content": [{"type": "image_url", "image_url": "https://cdn.example/a.webp"}]},
        {"role": "tool", "content": [TextPart("42"), "and text"]},
    ]
    request = chat_request(as_messages(messages), GenerateOptions())
    assert request.messages[0].content[0].image.mime_type == "image/jpeg"
    assert request.messages[1].content[0].image.url == "https://cdn.example/a.webp"
    assert request.messages[1].content[0].image.WhichOneof("source") == "url"
    assert [p.text for p in request.messages[2].content] == ["42", "and text"]
    assert request.messages[2].role == pb.CHAT_ROLE_TOOL


@pytest.mark.parametrize(
    ("messages", "error", "match"),
    [
        ("hello", TypeError, "list of Message values or dicts"),
        ({"role": "user", "content": "hi"}, TypeError, "list of Message values or dicts"),
        (Message("user", "hi"), TypeError, "list of Message values or dicts"),
        ([7], TypeError, r"messages\[0\] must be a Message or a dict"),
        ([{"content": "hi"}], ValueError, r'messages\[0\] needs "role" and "content"'),
        ([{"role": "user", "content": "hi", "name": "bob"}], ValueError, r"unsupported key\(s\) name"),
        ([{"role": "user", "content": None}], TypeError, r"messages\[0\]\.content must be"),
        (
            [{"role": "user", "content": "a"}, {"role": "user", "content": [{"type": "audio"}]}],
            ValueError,
            r'messages\[1\]\.content\[0\]: "type" must be "text" or "image_url"',
        ),
        ([{"role": "user", "content": [{"type": "text"}]}], ValueError, 'needs a str "text"'),
        ([{"role": "user", "content": [{"type": "image_url"}]}], ValueError, 'needs a non-empty "url"'),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x", "size": 1}}]}],
            ValueError,
            r"image_url: unsupported key\(s\) size",
        ),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": _data_url(GIF, "image/gif")}}]}],
            ValueError,
            r"messages\[0\]\.content\[0\]: data: URL: not a PNG, JPEG or WebP",
        ),
        ([{"role": "bot", "content": "hi"}], ValueError, r"messages\[0\]\.role must be one of"),
    ],
)
def test_bad_conversations_name_the_culprit(messages: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        as_messages(messages)


def test_penalties_and_sampling_reach_both_requests() -> None:
    options = GenerateOptions(presence_penalty=0.5, frequency_penalty=-0.25, top_k=4, seed=9, stop="x")
    for request in (generate_request("hi", options), chat_request(as_messages([Message("user", "hi")]), options)):
        assert request.sampling.presence_penalty == 0.5
        assert request.sampling.frequency_penalty == -0.25
        assert (request.sampling.top_k, request.sampling.seed, list(request.stop)) == (4, 9, ["x"])
        assert not request.sampling.HasField("temperature")
        assert not request.HasField("max_new_tokens")


def test_session_ids_are_checked_and_sent_as_metadata() -> None:
    assert check_session_id("agent-7:step") == "agent-7:step"
    assert check_session_id(None) is None
    assert check_session_id("") is None
    for bad in ("a b", "tab\t", "new\nline", "café", "x" * (MAX_SESSION_ID_CHARS + 1)):
        with pytest.raises(ValueError, match="session_id"):
            check_session_id(bad)
    metadata = CallMetadata(lambda: "tok", propagate_trace=False)
    assert metadata("s-1") == ((SESSION_HEADER, "s-1"), ("authorization", "Bearer tok"))
    assert metadata() == (("authorization", "Bearer tok"),)


def test_the_session_header_matches_the_server() -> None:
    # The SDK cannot import the server (it must work where the server is not installed), so it
    # keeps its own copy of the header name; here, where both are installed, they must agree.
    assert server_names.SESSION_HEADER == SESSION_HEADER
