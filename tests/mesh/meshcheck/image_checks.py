"""Checks that the Deployments fit the image they run: its writable places are writable in the pod.

The image's defaults are read from the Dockerfile (the runtime stages' ENV), never copied here: the root
filesystem is read-only, so the s3:// model cache (AUTOGLM_MODEL_CACHE_DIR) and Hugging Face's cache
(HF_HOME), wherever the manifest or the image puts them, must lie on a writable volume. A cache dir left on
the root would fail the first s3:// start with a read-only file system error, in the customer's rollout.
"""

from __future__ import annotations

import re
import shlex
from functools import cache

from . import k8s
from .consistency import check
from .render import Doc, ident, of_kind
from .tools import REPO

# The environment variables that name a place the daemon writes to.
WRITABLE_ENV = ("AUTOGLM_MODEL_CACHE_DIR", "HF_HOME")


@cache
def image_env(stage: str = "runtime-base") -> dict[str, str]:
    """The ENV of one Dockerfile stage (continuation lines joined; KEY=VALUE pairs only)."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    env: dict[str, str] = {}
    current = ""
    for line in (ln.strip() for ln in text.splitlines()):
        if line.startswith("FROM "):
            current = line.rsplit(" AS ", 1)[-1]
        elif current == stage and line.startswith("ENV "):
            env.update(pair.split("=", 1) for pair in shlex.split(line[4:]) if "=" in pair)
    return env


def _inside(path: str, mount: str) -> bool:
    return path == mount or path.startswith(mount.rstrip("/") + "/")


@check
def image_writable_paths_are_volumes(docs: list[Doc]) -> list[str]:
    """On a read-only root, each place the daemon writes is on a writable (not readOnly) volume mount."""
    problems = []
    defaults = image_env()
    for dep in of_kind(docs, "Deployment"):
        c = k8s.containers(dep)[0]
        if not c.get("securityContext", {}).get("readOnlyRootFilesystem", False):
            continue
        volumes = {v["name"]: v for v in k8s.pod_template(dep)["spec"].get("volumes", [])}
        writable = [
            m["mountPath"]
            for m in c.get("volumeMounts", [])
            if not m.get("readOnly", False) and not {"secret", "configMap", "projected"} & set(volumes[m["name"]])
        ]
        for name in WRITABLE_ENV:
            path = k8s.env_value(c, name) or defaults.get(name)
            if path is None:
                problems.append(f"{ident(dep)}: {name} is set neither in the manifest nor in the image")
            elif not any(_inside(path, mount) for mount in writable):
                problems.append(f"{ident(dep)}: {name} {path} is on the read-only root: mount a writable volume there")
    return problems
