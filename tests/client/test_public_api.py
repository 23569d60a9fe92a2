"""The package surface: a complete, importable __all__, and an SDK that works without torch or Pillow."""

from __future__ import annotations

import dataclasses
import inspect
import os
import subprocess
import sys
import textwrap
from types import ModuleType

import pytest

import autoglm_client
from autoglm_client import AsyncClient, Client, _convert, errors, messages, tokens, types
from tests.client.scripted_server import ScriptedServer


def _public_classes(module: ModuleType) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and inspect.isclass(value) and value.__module__ == module.__name__
    }


def test_all_names_resolve_and_star_import_works() -> None:
    for name in autoglm_client.__all__:
        assert getattr(autoglm_client, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from autoglm_client import *", namespace)  # noqa: S102 - a fixed statement
    assert set(autoglm_client.__all__) <= set(namespace)
    assert len(autoglm_client.__all__) == len(set(autoglm_client.__all__))


@pytest.mark.parametrize("module", [errors, types, tokens, messages])
def test_all_exports_every_error_value_type_and_token_provider(module: ModuleType) -> None:
    missing = _public_classes(module) - set(autoglm_client.__all__)
    assert not missing, f"{module.__name__} defines public classes missing from __all__: {sorted(missing)}"


def test_all_exports_the_clients_and_connection_types() -> None:
    assert {
        "Client",
        "AsyncClient",
        "TlsConfig",
        "RetryPolicy",
        "GenerateEvent",
        "TokenProvider",
        "ContentPart",
    } <= set(autoglm_client.__all__)


def test_every_error_class_derives_from_the_base() -> None:
    for name in _public_classes(errors):
        assert issubclass(getattr(errors, name), errors.AutoglmError)


def test_generate_keyword_lists_stay_in_step() -> None:
    # The arguments of generate() and chat() are spelled out four times (two signatures,
    # GenerateOptions, GenerateKwargs) so that each is typed; this keeps a new argument from being
    # added to only some of them. timeout and session_id are call options, not request fields.
    arguments = set(inspect.signature(Client.generate).parameters) - {"self", "prompt"}
    assert set(inspect.signature(Client.chat).parameters) - {"self", "messages"} == arguments
    assert set(_convert.GenerateKwargs.__optional_keys__) == arguments
    fields = {field.name for field in dataclasses.fields(_convert.GenerateOptions)}
    assert fields == arguments - {"timeout", "session_id"}


@pytest.mark.parametrize(
    "method", ["generate", "generate_text", "chat", "chat_text", "tokenize", "model_info", "health", "__init__"]
)
def test_sync_and_async_clients_take_the_same_arguments(method: str) -> None:
    sync, asynchronous = inspect.signature(getattr(Client, method)), inspect.signature(getattr(AsyncClient, method))
    assert list(sync.parameters.values()) == list(asynchronous.parameters.values())


# A finder that makes the heavy and server-side packages unimportable, as in a service that only
# installed autoglm-client. Run in a fresh interpreter so nothing is imported already.
_BLOCKED_SCRIPT = """
import importlib.abc, sys

BLOCKED = {blocked!r}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked in this test")
        return None

sys.meta_path.insert(0, Block())
import autoglm_client
from autoglm_client import Client
from autoglm_client.cli import main

from autoglm_client import ImagePart

with Client({target!r}, timeout=10, token_provider=lambda: "t", session_id="s") as client:
    result = client.generate_text([1], max_new_tokens=3)
    assert result.token_ids == (2, 3, 4), result
    assert client.model_info().vocab_size > 0
    # Images from bytes need no Pillow; only from_pil does, and says so.
    image = ImagePart.from_bytes(b"\\x89PNG\\r\\n\\x1a\\n" + bytes(8))
    reply = client.chat_text([{{"role": "user", "content": [image, "A"]}}], max_new_tokens=2)
    assert reply.token_ids == (66, 67), reply
    try:
        ImagePart.from_pil(object())
    except ImportError as exc:
        assert "Pillow" in str(exc), exc
    else:
        raise AssertionError("from_pil worked without Pillow")
assert main(["tokenize", "hi", "--target", {target!r}], {{}}) == 0
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not loaded, loaded
print("ok")
"""


@pytest.mark.parametrize(
    "blocked",
    [
        ("torch", "transformers", "autoglm_server", "PIL"),
        ("torch", "transformers", "autoglm_server", "PIL", "opentelemetry", "hvac"),
    ],
    ids=["without-torch-or-pillow", "without-torch-and-optional-deps"],
)
def test_sdk_works_without_torch(scripted: ScriptedServer, blocked: tuple[str, ...]) -> None:
    script = textwrap.dedent(_BLOCKED_SCRIPT).format(blocked=set(blocked), target=scripted.target)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOGLM_")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["104 105", "ok"]
