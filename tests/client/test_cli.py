"""The `autoglm` command line: flags and env defaults, output, streaming, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from autoglm_client import FileToken, StaticToken
from autoglm_client._metadata import SESSION_HEADER
from autoglm_client.cli import EXIT_NOT_SERVING, build_parser, main, tls_config, token_provider
from autoglm_client.cli_bench import length_range
from autoglm_client.v1 import generation_pb2 as pb
from tests.client.scripted_server import MODEL_ID, ScriptedServer


def test_defaults_and_env() -> None:
    args = build_parser({}).parse_args(["info"])
    assert args.target == "127.0.0.1:50051"
    assert args.timeout is None
    assert token_provider(args) is None
    assert tls_config(args) is None
    env = {"AUTOGLM_TARGET": "daemon:1234", "AUTOGLM_TOKEN": "tok"}
    args = build_parser(env).parse_args(["health"])
    assert args.target == "daemon:1234"
    assert isinstance(token_provider(args), StaticToken)
    # A flag wins over the environment.
    assert build_parser(env).parse_args(["info", "--target", "other:1"]).target == "other:1"


def test_generate_flags() -> None:
    args = build_parser({}).parse_args(
        [
            "generate",
            "hi",
            "--max-new-tokens",
            "8",
            "--temperature",
            "0.7",
            "--top-p",
            "0.9",
            "--top-k",
            "5",
            "--repetition-penalty",
            "1.1",
            "--seed",
            "3",
            "--stop",
            "x",
            "--stop",
            "y",
            "--stop-token-id",
            "7",
            "--priority",
            "2",
            "--ignore-eos",
            "--json",
            "--timeout",
            "2.5",
            "--presence-penalty",
            "0.5",
            "--frequency-penalty",
            "-0.2",
            "--session",
            "agent-1",
        ]
    )
    assert (args.prompt, args.max_new_tokens, args.temperature, args.top_p, args.top_k) == ("hi", 8, 0.7, 0.9, 5)
    assert (args.seed, args.stop, args.stop_token_id, args.priority) == (3, ["x", "y"], [7], 2)
    assert args.ignore_eos
    assert args.json
    assert args.timeout == 2.5
    assert (args.presence_penalty, args.frequency_penalty, args.session) == (0.5, -0.2, "agent-1")


def test_chat_flags() -> None:
    args = build_parser({}).parse_args(
        ["chat", "hi", "--image", "a.png", "--image", "b.jpg", "--system", "be brief", "--top-p", "0.85"]
    )
    assert (args.text, args.image, args.system, args.top_p) == ("hi", ["a.png", "b.jpg"], "be brief", 0.85)
    assert (args.session, args.frequency_penalty, args.json) == (None, None, False)


def test_tls_and_token_file_flags(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("abc", encoding="utf-8")
    args = build_parser({"AUTOGLM_TOKEN": "env"}).parse_args(
        ["info", "--tls-ca", "ca.pem", "--tls-server-name", "d.example", "--token-file", str(token)]
    )
    tls = tls_config(args)
    assert tls is not None
    assert (tls.root_ca, tls.server_name, tls.client_cert) == ("ca.pem", "d.example", None)
    provider = token_provider(args)
    assert isinstance(provider, FileToken)  # the file wins over the env token
    assert provider() == "abc"


def test_bench_flags_and_ranges() -> None:
    args = build_parser({}).parse_args(
        [
            "bench",
            "--concurrency",
            "8",
            "--requests",
            "40",
            "--prompt-tokens",
            "16:128",
            "--max-new-tokens",
            "32",
            "--rate",
            "2.5",
            "--seed",
            "9",
            "--json",
            "out.json",
        ]
    )
    assert (args.concurrency, args.requests, args.rate, args.seed) == (8, 40, 2.5, 9)
    assert args.prompt_tokens == (16, 128)
    assert args.max_new_tokens == (32, 32)
    assert args.json_file == "out.json"
    assert length_range("5") == (5, 5)


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "--prompt-tokens", "0"],
        ["bench", "--prompt-tokens", "9:3"],
        ["bench", "--prompt-tokens", "a:b"],
        ["bench", "--concurrency", "0"],
        ["bench", "--rate", "-1"],
        ["generate"],
        ["chat"],
        ["chat", "hi", "--image"],
        [],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser({}).parse_args(argv)
    assert exited.value.code == 2
    assert "error" in capsys.readouterr().err


def test_generate_prints_text_and_a_summary(scripted: ScriptedServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "A", "--target", scripted.target, "--max-new-tokens", "3"], {}) == 0
    out, err = capsys.readouterr()
    assert out == "66 67 68 \n"
    assert "finish_reason=length" in err
    assert "completion_tokens=3" in err


def test_generate_json_lines(scripted: ScriptedServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "A", "--target", scripted.target, "--max-new-tokens", "2", "--json"], {}) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["type"] for line in lines] == ["started", "chunk", "chunk", "finished"]
    assert lines[1]["token_ids"] == [66]
    assert lines[-1]["finish_reason"] == "length"


def test_info_tokenize_health(scripted: ScriptedServer, capsys: pytest.CaptureFixture[str]) -> None:
    target = ["--target", scripted.target]
    assert main(["info", *target, "--json"], {}) == 0
    assert json.loads(capsys.readouterr().out)["model_id"] == MODEL_ID
    assert main(["info", *target], {}) == 0
    shown = capsys.readouterr().out
    assert f"model_id: {MODEL_ID}" in shown
    assert "supports_chat: True\nsupports_images: True\nmax_images_per_request: 4\n" in shown
    assert main(["tokenize", "ab", *target], {}) == 0
    assert capsys.readouterr().out == "97 98\n"
    assert main(["health", *target], {}) == 0
    assert capsys.readouterr().out == "SERVING\n"
    assert main(["health", *target, "--service", "autoglm.v1.GenerationService"], {}) == EXIT_NOT_SERVING
    assert capsys.readouterr().out == "NOT_SERVING\n"


def _png(path: Path) -> Path:
    Image.new("RGB", (2, 2), (9, 9, 9)).save(path, format="PNG")
    return path


def test_chat_sends_system_image_and_text(
    scripted: ScriptedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = _png(tmp_path / "screen.webp")  # a PNG whatever its name says
    argv = ["chat", "A", "--image", str(image), "--system", "S", "--target", scripted.target]
    argv += ["--max-new-tokens", "2", "--frequency-penalty", "0.25", "--session", "agent-3"]
    assert main(argv, {}) == 0
    out, err = capsys.readouterr()
    assert out == "66 67 \n"
    assert "finish_reason=length" in err
    assert "prompt_tokens=2" in err  # the scripted prompt: the bytes of "S" and "A"
    request = scripted.recorder.chat_requests[-1]
    assert [m.role for m in request.messages] == [pb.CHAT_ROLE_SYSTEM, pb.CHAT_ROLE_USER]
    image_part, text_part = request.messages[1].content
    assert (image_part.image.mime_type, image_part.image.data) == ("image/png", image.read_bytes())
    assert text_part.text == "A"
    assert request.sampling.frequency_penalty == 0.25
    assert scripted.recorder.metadata[-1][SESSION_HEADER] == "agent-3"


def test_generate_sends_the_session(scripted: ScriptedServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "A", "--target", scripted.target, "--max-new-tokens", "1", "--session", "s-9"], {}) == 0
    assert scripted.recorder.metadata[-1][SESSION_HEADER] == "s-9"
    assert main(["generate", "A", "--target", scripted.target, "--max-new-tokens", "1"], {}) == 0
    assert SESSION_HEADER not in scripted.recorder.metadata[-1]
    capsys.readouterr()


def test_chat_with_a_bad_image_fails_in_one_line(
    scripted: ScriptedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    svg = tmp_path / "icon.png"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg"/>', encoding="utf-8")
    before = len(scripted.recorder.metadata)
    assert main(["chat", "hi", "--image", str(svg), "--target", scripted.target], {}) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"autoglm: error: {svg}: not a PNG, JPEG or WebP image")
    assert err.count("\n") == 1
    assert main(["chat", "hi", "--image", str(tmp_path / "none.png"), "--target", scripted.target], {}) == 1
    assert capsys.readouterr().err.startswith("autoglm: error: [Errno 2] No such file or directory")
    assert len(scripted.recorder.metadata) == before  # nothing was sent
    assert main(["chat", "invalid", "--target", scripted.target], {}) == 1
    assert capsys.readouterr().err == "autoglm: INVALID_ARGUMENT: max_new_tokens: must be in [1, 512], got 0\n"


def test_errors_are_one_line(scripted: ScriptedServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "invalid", "--target", scripted.target], {}) == 1
    assert capsys.readouterr().err == "autoglm: INVALID_ARGUMENT: max_new_tokens: must be in [1, 512], got 0\n"
    assert main(["info", "--target", scripted.target, "--token-file", "/nonexistent/token"], {}) == 1
    err = capsys.readouterr().err
    assert err.startswith("autoglm: error: cannot read the token file /nonexistent/token")
    assert err.count("\n") == 1


def test_bench_writes_json(scripted: ScriptedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "bench.json"
    argv = ["bench", "--target", scripted.target, "--concurrency", "3", "--requests", "7"]
    argv += ["--prompt-tokens", "2:5", "--max-new-tokens", "4", "--json", str(report), "--no-progress"]
    assert main(argv, {}) == 0
    assert "throughput" in capsys.readouterr().out
    document = json.loads(report.read_text())
    assert document["completed"] == 7
    assert document["generated_tokens"] == 28
    assert document["model_id"] == MODEL_ID
    assert set(document["itl_ms"]) >= {"p50", "p90", "p99"}


def test_generate_streams_before_the_end(slow_scripted: ScriptedServer) -> None:
    """Run the console script for real: the first chunk reaches the pipe while tokens keep coming."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOGLM_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "autoglm_client",
            "generate",
            "A",
            "--target",
            slow_scripted.target,
            "--max-new-tokens",
            "100",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None
    first = process.stdout.read(3)  # "66 ": the first token, 2 s before the last one
    still_running = process.poll() is None
    rest, err = process.communicate(timeout=60)
    assert first == b"66 "
    assert still_running
    assert process.returncode == 0, err
    assert len((first + rest).split()) == 100
    assert b"completion_tokens=100" in err


def test_chat_console_script_streams_with_an_image(slow_scripted: ScriptedServer, tmp_path: Path) -> None:
    """Run `python -m autoglm_client chat` for real: the reply streams to the pipe, the summary to stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOGLM_")}
    image = _png(tmp_path / "shot.png")
    argv = [sys.executable, "-m", "autoglm_client", "chat", "A", "--image", str(image), "--system", "S"]
    argv += ["--target", slow_scripted.target, "--max-new-tokens", "60", "--session", "agent-5"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert process.stdout is not None
    first = process.stdout.read(3)  # "66 ": the first token, about a second before the last one
    still_running = process.poll() is None
    rest, err = process.communicate(timeout=60)
    assert first == b"66 "
    assert still_running
    assert process.returncode == 0, err
    assert len((first + rest).split()) == 60
    assert b"completion_tokens=60" in err
    assert slow_scripted.recorder.metadata[-1][SESSION_HEADER] == "agent-5"
    assert slow_scripted.recorder.chat_requests[-1].messages[1].content[0].image.data == image.read_bytes()
