"""`autoglm generate` and `autoglm chat`: stream a completion or a chat reply to the terminal.

Both take the same sampling flags and print the same way: the text on stdout as it arrives, and
one summary line on stderr (`[finish_reason=... request_id=...]`), or one JSON object per event
with --json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Iterator
from typing import Any, TextIO

from autoglm_client.client import Client
from autoglm_client.messages import ContentPart, ImagePart, Message, Role, TextPart
from autoglm_client.types import Chunk, Finished, GenerateEvent, Started


def _add_generation_flags(command: argparse.ArgumentParser) -> None:
    command.add_argument("--max-new-tokens", type=int, help="most tokens to generate (server default)")
    command.add_argument("--temperature", type=float, help="sampling temperature; 0 or unset is greedy")
    command.add_argument("--top-p", type=float, help="nucleus sampling cut, in (0, 1]")
    command.add_argument("--top-k", type=int, help="keep the k most likely tokens; 0 is no cut")
    command.add_argument("--repetition-penalty", type=float, help="penalty for repeated tokens, > 0")
    command.add_argument("--presence-penalty", type=float, help="OpenAI's presence penalty, in [-2, 2]")
    command.add_argument("--frequency-penalty", type=float, help="OpenAI's frequency penalty, in [-2, 2]")
    command.add_argument("--seed", type=int, help="seed for reproducible sampling")
    command.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    command.add_argument("--stop-token-id", type=int, action="append", default=[], help="stop token id (repeatable)")
    command.add_argument("--request-id", default="", help="request id for logs and traces")
    command.add_argument("--priority", type=int, default=0, help="scheduling priority, higher first")
    command.add_argument("--ignore-eos", action="store_true", help="generate past end-of-sequence tokens")
    command.add_argument(
        "--session", metavar="ID", default=None, help="session id (x-autoglm-session) a mesh keeps on one replica"
    )
    command.add_argument("--json", action="store_true", help="print one JSON object per stream event")


def add_parsers(commands: Any, connection: argparse.ArgumentParser) -> None:
    """Add `generate` and `chat` to the subcommands."""
    generate = commands.add_parser(
        "generate", parents=[connection], help="stream generated text to stdout", description="Stream text."
    )
    generate.add_argument("prompt", help="the prompt text")
    _add_generation_flags(generate)
    chat = commands.add_parser(
        "chat",
        parents=[connection],
        help="stream the reply to a chat message (with images) to stdout",
        description="Send one user message, rendered with the model's chat template, and stream the reply.",
    )
    chat.add_argument("text", help="the user message")
    chat.add_argument(
        "--image", metavar="FILE", action="append", default=[], help="PNG, JPEG or WebP file to attach (repeatable)"
    )
    chat.add_argument("--system", metavar="TEXT", help="a system message before the user message")
    _add_generation_flags(chat)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "repetition_penalty": args.repetition_penalty,
        "presence_penalty": args.presence_penalty,
        "frequency_penalty": args.frequency_penalty,
        "seed": args.seed,
        "stop": args.stop,
        "stop_token_ids": args.stop_token_id,
        "request_id": args.request_id,
        "priority": args.priority,
        "ignore_eos": args.ignore_eos,
        "session_id": args.session,
    }


def chat_messages(args: argparse.Namespace) -> list[Message]:
    """The conversation `autoglm chat` sends: an optional system message, then images and text."""
    # Images first, then the text: the order Open-AutoGLM sends a step in.
    content: list[ContentPart] = [ImagePart.from_file(path) for path in args.image]
    content.append(TextPart(args.text))
    messages = [Message(Role.SYSTEM, args.system)] if args.system else []
    messages.append(Message(Role.USER, content))
    return messages


def run_generate(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    return _print_stream(client.generate(args.prompt, **_options(args)), args.json, out, err)


def run_chat(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    messages = chat_messages(args)  # a bad image fails here, before the call
    return _print_stream(client.chat(messages, **_options(args)), args.json, out, err)


def _print_stream(events: Iterator[GenerateEvent], as_json: bool, out: TextIO, err: TextIO) -> int:
    request_id, ended_with_newline = "", True
    for item in events:
        if as_json:
            out.write(json.dumps({"type": type(item).__name__.lower(), **dataclasses.asdict(item)}) + "\n")
        elif isinstance(item, Chunk) and item.text:
            out.write(item.text)
            ended_with_newline = item.text.endswith("\n")
        if isinstance(item, Started):
            request_id = item.request_id
        elif isinstance(item, Finished) and not as_json:
            if not ended_with_newline:
                out.write("\n")
            usage = item.usage
            err.write(
                f"[finish_reason={item.finish_reason} prompt_tokens={usage.prompt_tokens} "
                f"completion_tokens={usage.completion_tokens} "
                f"ttft_ms={usage.time_to_first_token_ms:.1f} request_id={request_id}]\n"
            )
        out.flush()  # show each chunk as it arrives
    return 0
