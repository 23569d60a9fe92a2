"""Validate custom resources the way the API server would: the CRD's openAPIV3Schema as a structural
schema (unknown fields rejected, int32 ranges, nullable) plus its CEL rules (x-kubernetes-validations).

The CRDs are read from ../shared/schemas/<project> (istio; argocd and flux for mesh/gitops; gie,
gateway-api and keda for the inference gateway), see schemas_dir(); they are data this repository must
not copy.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import celpy
import jsonschema
import yaml
from celpy.adapter import json_to_cel

from .render import Doc, ident
from .tools import REPO

Schema = dict[str, Any]

INT32 = (-(2**31), 2**31 - 1)
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
METADATA_KEYS = {"name", "namespace", "labels", "annotations"}


def schemas_dir(project: str = "istio") -> Path:
    """../shared/schemas/PROJECT (istio, argocd, flux, gie, gateway-api, keda, ...): the folder named by
    AUTOGLM_<PROJECT>_SCHEMAS if set, else PROJECT under AUTOGLM_SHARED_SCHEMAS, else under ../shared/schemas."""
    override = os.environ.get(f"AUTOGLM_{project.upper().replace('-', '_')}_SCHEMAS")
    if override:
        return Path(override)
    return Path(os.environ.get("AUTOGLM_SHARED_SCHEMAS", str(REPO.parent / "shared" / "schemas"))) / project


@dataclass(frozen=True)
class CrdVersion:
    kind: str
    api_version: str
    schema: Schema


@cache
def load_crds(folder: Path, pattern: str = "crd-*.yaml") -> dict[tuple[str, str], CrdVersion]:
    """(apiVersion, kind) -> the served version's schema, for every CRD file in FOLDER named like PATTERN."""
    found: dict[tuple[str, str], CrdVersion] = {}
    for path in sorted(folder.glob(pattern)):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                api_version = f"{group}/{version['name']}"
                schema = version["schema"]["openAPIV3Schema"]
                found[(api_version, kind)] = CrdVersion(kind, api_version, schema)
    return found


def structural(schema: Schema) -> Schema:
    """openAPIV3Schema -> JSON Schema with the API server's strictness made explicit."""
    out = copy.deepcopy(schema)
    _tighten(out)
    return out


def _tighten(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _tighten(item)
        return
    if not isinstance(node, dict):
        return
    if node.pop("nullable", False) and "type" in node:
        node["type"] = [node["type"], "null"]
    if node.get("x-kubernetes-int-or-string"):
        node.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("format") == "int32":
        node.setdefault("minimum", INT32[0])
        node.setdefault("maximum", INT32[1])
    # The API server prunes or rejects fields a structural schema does not declare.
    declares_object = node.get("type") == "object" or node.get("type") == ["object", "null"]
    if declares_object and not node.get("x-kubernetes-preserve-unknown-fields"):
        node.setdefault("additionalProperties", "properties" not in node)
    for key, value in node.items():
        if key not in ("enum", "default", "example", "x-kubernetes-validations"):
            _tighten(value)


def _url_scheme(value: Any) -> celpy.celtypes.StringType:
    return celpy.celtypes.StringType(urlparse(str(value)).scheme)


# Kubernetes adds CEL libraries to the standard ones; these are the ones the Istio rules use.
CEL_FUNCTIONS = {"url": lambda v: v, "getScheme": _url_scheme}


@cache
def _program(rule: str) -> celpy.Runner:
    env = celpy.Environment()
    return env.program(env.compile(rule), functions=CEL_FUNCTIONS)


def cel_errors(schema: Schema, value: Any, path: str = "") -> list[str]:
    """Evaluate every x-kubernetes-validations rule on the value it governs."""
    if value is None:
        return []
    errors: list[str] = []
    for check in schema.get("x-kubernetes-validations", []):
        rule = check["rule"]
        if "oldSelf" in rule:  # transition rules need a stored object; on create they do not run
            continue
        try:
            ok = _program(rule).evaluate({"self": json_to_cel(value)})
        except Exception as exc:  # an evaluation error is a rejection too
            errors.append(f"{path or '.'}: CEL rule {rule!r} could not be evaluated: {exc}")
            continue
        if not bool(ok):
            errors.append(f"{path or '.'}: {check.get('message', 'CEL rule failed')} (rule: {rule})")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, sub in value.items():
            sub_schema = props.get(key, extra if isinstance(extra, dict) else None)
            if sub_schema is not None:
                errors += cel_errors(sub_schema, sub, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            errors += cel_errors(schema["items"], item, f"{path}[{i}]")
    return errors


def _metadata_errors(doc: Doc) -> list[str]:
    meta = doc.get("metadata") or {}
    errors = [f"metadata.{k}: field not allowed here" for k in sorted(set(meta) - METADATA_KEYS)]
    name = meta.get("name", "")
    if not DNS1123_SUBDOMAIN.match(name) or len(name) > 253:
        errors.append(f"metadata.name {name!r}: not a DNS-1123 subdomain")
    return errors


def validate_custom_resource(doc: Doc, crds: dict[tuple[str, str], CrdVersion]) -> list[str]:
    """Problems the API server would report for DOC, each prefixed with the resource it is in."""
    key = (doc.get("apiVersion", ""), doc.get("kind", ""))
    crd = crds.get(key)
    if crd is None:
        return [f"{ident(doc)}: no served CRD version for apiVersion {key[0]} kind {key[1]}"]
    # apiVersion, kind and metadata are the API server's own, checked by it (here: _metadata_errors);
    # a schema that declares them (Argo CD's requires `metadata`) sees them too.
    declared = crd.schema.get("properties", {})
    body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata") or k in declared}
    validator = jsonschema.Draft202012Validator(structural(crd.schema))
    errors = [
        f"{'.'.join(str(p) for p in err.absolute_path) or '.'}: {err.message}" for err in validator.iter_errors(body)
    ]
    if not errors:  # CEL runs only on objects that passed the schema, as in the API server
        errors = cel_errors(crd.schema, body)
    return [f"{ident(doc)}: {e}" for e in _metadata_errors(doc) + errors]
