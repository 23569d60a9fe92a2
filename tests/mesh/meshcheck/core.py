"""Strict validation of core Kubernetes resources with kubernetes-validate's bundled schemas."""

from __future__ import annotations

import kubernetes_validate

from .render import Doc, ident

# The oldest Kubernetes release the manifests support (preStop `sleep`, probe `grpc`, topology
# `matchLabelKeys` are all on by default there) and the newest one the schemas cover.
K8S_VERSIONS = ("1.31.0", kubernetes_validate.latest_version())


# API groups under k8s.io that are CRDs, not built in: validated against their CRDs (meshcheck.crd).
CRD_GROUPS = frozenset({"gateway.networking.k8s.io", "inference.networking.k8s.io", "inference.networking.x-k8s.io"})


def is_core(doc: Doc) -> bool:
    """Built-in kinds (no dot in the API group); CRDs (istio.io, flagger.app, Gateway API) are validated elsewhere."""
    group = doc.get("apiVersion", "").rpartition("/")[0]
    return ("." not in group or group.endswith(".k8s.io")) and group not in CRD_GROUPS


def validate_core(doc: Doc) -> list[str]:
    errors: list[str] = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.absolute_path) or "."
            errors.append(f"{ident(doc)} (Kubernetes {version}): {where}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{ident(doc)}: {exc.message}")
    return errors
