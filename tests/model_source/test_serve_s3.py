"""Acceptance: `serve --model s3://...` on the built-in engine against SeaweedFS, then a cache-hit start.

The second start runs with keys that may list but not read objects, so it can only succeed if it
fetched nothing: that is the proof of "no GET of the weights", made by the server's own permissions.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from autoglm_client import Client
from tests.helpers.daemon import _daemon_env, running_daemon
from tests.helpers.scrape import scrape
from tests.helpers.seaweedfs import LISTER, READER, SeaweedFS

pytestmark = pytest.mark.timeout(240)


def _env(server: SeaweedFS, keys: tuple[str, str], cache: Path) -> dict[str, str]:
    return {**server.env(keys), "AUTOGLM_MODEL_CACHE_DIR": str(cache), "AUTOGLM_S3_ADDRESSING_STYLE": "path"}


def _answer_both_front_doors(target: str, http_url: str, model: str) -> None:
    with Client(target, timeout=60) as client:
        reply = client.generate_text("hello", max_new_tokens=4, ignore_eos=True)
        assert len(reply.token_ids) == 4
    response = httpx2.post(
        f"{http_url}/completions", json={"model": model, "prompt": "hi", "max_tokens": 3}, timeout=60
    )
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == 3


def test_serve_from_s3_then_restart_from_the_verified_cache(seaweedfs: SeaweedFS, release: str, tmp_path: Path) -> None:
    args = ("--auth", "disabled", "--model", release, "--served-model-name", "tiny")
    with running_daemon(*args, env=_env(seaweedfs, READER, tmp_path)) as cold:
        _answer_both_front_doors(cold.target, cold.http_url, "tiny")
        metrics = scrape(cold.admin_url)
        assert metrics.value("autoglm_model_cache_hit") == 0
        assert metrics.value("autoglm_model_fetched_bytes") == metrics.value("autoglm_model_size_bytes") > 10e6
        assert metrics.value("autoglm_model_load_seconds", phase="engine") > 0
        assert "fetching snapshot" in cold.log()
    # Without --served-model-name the model is named by its URI on both front doors, never by the
    # cache folder the engine loaded (it changes with each snapshot and tells clients about the node).
    named_by_uri = ("--auth", "disabled", "--model", release)
    with running_daemon(*named_by_uri, env=_env(seaweedfs, LISTER, tmp_path)) as warm:
        _answer_both_front_doors(warm.target, warm.http_url, release)
        listed = httpx2.get(f"{warm.http_url}/models", timeout=10).json()["data"]
        assert [m["id"] for m in listed] == [release]
        assert all("snapshots" not in str(m) for m in listed)
        with Client(warm.target, timeout=30) as client:
            assert client.model_info().model_id == release
        # Messages name it the same way (builtin:tiny has no chat template: a 400 that names the model).
        chat = {"model": release, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        refused = httpx2.post(f"{warm.http_url}/chat/completions", json=chat, timeout=30)
        assert refused.status_code == 400
        assert release in refused.text
        assert "snapshots" not in refused.text
        assert "verified cache hit" in warm.log()
        assert scrape(warm.admin_url).value("autoglm_model_cache_hit") == 1
        assert scrape(warm.admin_url).value("autoglm_model_fetched_bytes") == 0
        assert READER[1] not in warm.log()
        assert LISTER[1] not in warm.log()


def test_serve_exits_with_the_faults_code(seaweedfs: SeaweedFS, release: str, tmp_path: Path) -> None:
    """The daemon itself (not only `model fetch`) stops with the fault's exit code and one line."""
    env = _daemon_env(_env(seaweedfs, (READER[0], "not-the-secret-7f3a"), tmp_path))
    command = [sys.executable, "-m", "autoglm_server", "serve", "--auth", "disabled", "--model", release]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 77, output
    assert "cannot start: the S3 server refused the credentials for bucket 'models'" in output
    assert "not-the-secret-7f3a" not in output
    assert "Traceback" not in output
