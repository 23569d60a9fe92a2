"""Render a kustomize overlay with `kubectl kustomize` and index the resulting resources."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

Doc = dict[str, Any]

# The overlays under mesh/overlays that the suite renders and validates.
OVERLAYS = ("single", "canary", "gpu")


def kustomize(kubectl: str, overlay: Path) -> str:
    """The YAML that `kubectl kustomize OVERLAY` prints; raises with kubectl's message on failure."""
    proc = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {overlay} failed: {proc.stderr.strip()}")
    return proc.stdout


def parse(text: str) -> list[Doc]:
    """Every non-empty document of a YAML stream."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def of_kind(docs: Iterable[Doc], kind: str) -> Iterator[Doc]:
    return (d for d in docs if d.get("kind") == kind)


def one(docs: Iterable[Doc], kind: str, name: str | None = None) -> Doc:
    """The single resource of KIND (and NAME); fails loudly when there are none or several."""
    found = [d for d in of_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    if len(found) != 1:
        raise LookupError(f"expected one {kind}{' ' + name if name else ''}, found {len(found)}")
    return found[0]


def ident(doc: Doc) -> str:
    """kind/namespace/name, for messages."""
    meta = doc.get("metadata", {})
    return f"{doc.get('kind')}/{meta.get('namespace', '-')}/{meta.get('name')}"
