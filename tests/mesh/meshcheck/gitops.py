"""mesh/gitops: the Argo CD and Flux objects that deliver mesh/'s entry points, read as delivery targets.

Each target says which repository, revision and folder a tool syncs into which namespace. The checks
here compare those targets with the repository (the folder exists and is a kustomization) and with what
the folder renders to (every namespaced object in the target namespace, the cluster-scoped ones allowed
by the Argo CD project); each returns problems a person can act on, like consistency.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .render import Doc, ident, of_kind, one

# Kinds without a namespace that a mesh/ entry point may render.
CLUSTER_SCOPED = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"})
_GO_VARIABLE = re.compile(r"\{\{\s*\.(\w+)\s*\}\}")


@dataclass(frozen=True)
class Target:
    """One environment's delivery: TOOL syncs PATH of REPO_URL at REVISION into NAMESPACE."""

    tool: str
    name: str
    repo_url: str
    revision: str
    path: str
    namespace: str


def _fill(node: Any, values: dict[str, str]) -> Any:
    """NODE with every `{{.key}}` of a goTemplate ApplicationSet replaced; an unknown key is an error."""
    if isinstance(node, str):
        return _GO_VARIABLE.sub(lambda m: values[m.group(1)], node)
    if isinstance(node, list):
        return [_fill(item, values) for item in node]
    if isinstance(node, dict):
        return {key: _fill(value, values) for key, value in node.items()}
    return node


def generated_applications(appset: Doc) -> list[Doc]:
    """The Applications a list-generator ApplicationSet makes, as Argo CD would create them."""
    spec = appset["spec"]
    if not spec.get("goTemplate"):
        raise ValueError(f"{ident(appset)}: only goTemplate ApplicationSets are read here")
    apps = []
    for generator in spec["generators"]:
        for element in generator["list"]["elements"]:
            template = _fill(spec["template"], element)
            metadata = {**template["metadata"], "namespace": appset["metadata"].get("namespace", "argocd")}
            apps.append({"apiVersion": appset["apiVersion"], "kind": "Application", "metadata": metadata,
                         "spec": template["spec"]})  # fmt: skip
    return apps


def argo_targets(apps: Iterable[Doc]) -> list[Target]:
    return [
        Target(
            "argocd",
            app["metadata"]["name"],
            app["spec"]["source"]["repoURL"],
            app["spec"]["source"]["targetRevision"],
            app["spec"]["source"]["path"],
            app["spec"]["destination"]["namespace"],
        )
        for app in apps
    ]


def flux_targets(docs: list[Doc]) -> list[Target]:
    """The Flux Kustomizations of one cluster's folder, each with the GitRepository it names."""
    targets = []
    for kustomization in of_kind(docs, "Kustomization"):
        spec = kustomization["spec"]
        source = one(docs, spec["sourceRef"]["kind"], spec["sourceRef"]["name"])
        ref = source["spec"].get("ref", {})
        revision = ref.get("branch") or ref.get("tag") or ref.get("commit") or ""
        targets.append(
            Target(
                "flux",
                kustomization["metadata"]["name"],
                source["spec"]["url"],
                revision,
                spec["path"].removeprefix("./"),
                spec.get("targetNamespace", ""),
            )
        )
    return targets


def path_errors(target: Target, repo: Path) -> list[str]:
    folder = repo / target.path
    if not folder.is_dir():
        return [f"{target.tool} {target.name}: path {target.path} does not exist in the repository"]
    if not (folder / "kustomization.yaml").is_file():
        return [f"{target.tool} {target.name}: {target.path} has no kustomization.yaml"]
    return []


def namespace_errors(target: Target, rendered: list[Doc]) -> list[str]:
    """Every namespaced object the path renders lives in the target namespace, and that Namespace is there."""
    errors = [
        f"{target.tool} {target.name}: {ident(d)} renders into namespace "
        f"{d['metadata'].get('namespace')!r}, the target is {target.namespace!r}"
        for d in rendered
        if d["kind"] not in CLUSTER_SCOPED and d["metadata"].get("namespace") != target.namespace
    ]
    names = {d["metadata"]["name"] for d in of_kind(rendered, "Namespace")}
    if target.namespace not in names:
        errors.append(f"{target.tool} {target.name}: {target.path} does not create namespace {target.namespace}")
    return errors


def project_errors(project: Doc, app: Doc, rendered: list[Doc]) -> list[str]:
    """The Application stays inside its AppProject: repository, destination namespace, cluster-scoped kinds."""
    spec = project["spec"]
    name = app["metadata"]["name"]
    errors = []
    if app["spec"]["project"] != project["metadata"]["name"]:
        errors.append(f"{name}: project {app['spec']['project']!r} is not {project['metadata']['name']!r}")
    if app["spec"]["source"]["repoURL"] not in spec.get("sourceRepos", []):
        errors.append(f"{name}: repository {app['spec']['source']['repoURL']} is not in the project's sourceRepos")
    namespaces = {d.get("namespace") for d in spec.get("destinations", [])}
    if app["spec"]["destination"]["namespace"] not in namespaces and "*" not in namespaces:
        errors.append(f"{name}: destination namespace is not one of the project's {sorted(map(str, namespaces))}")
    allowed = {(r["group"], r["kind"]) for r in spec.get("clusterResourceWhitelist", [])}
    for doc in rendered:
        if doc["kind"] in CLUSTER_SCOPED:
            group = doc["apiVersion"].rpartition("/")[0]
            if (group, doc["kind"]) not in allowed:
                errors.append(f"{name}: renders cluster-scoped {ident(doc)}, which the project does not allow")
    return errors


def _ignores_replicas(app: Doc) -> bool:
    return any(
        d.get("group") == "apps" and d.get("kind") == "Deployment" and "/spec/replicas" in d.get("jsonPointers", [])
        for d in app["spec"].get("ignoreDifferences", [])
    )


def argo_canary_sync_errors(app: Doc) -> list[str]:
    """Sync options a Flagger canary under an HPA needs: replicas ignored (and respected), no pruning."""
    name = app["metadata"]["name"]
    policy = app["spec"].get("syncPolicy", {})
    errors = []
    if policy.get("automated", {}).get("prune", False):
        errors.append(f"{name}: automated sync prunes, and would delete objects Flagger created or relabelled")
    if not _ignores_replicas(app):
        errors.append(f"{name}: Deployment /spec/replicas is not ignored; the HPA owns it")
    if "RespectIgnoreDifferences=true" not in policy.get("syncOptions", []):
        errors.append(f"{name}: without RespectIgnoreDifferences=true a sync resets the ignored replica count")
    return errors


def flux_canary_sync_errors(kustomization: Doc) -> list[str]:
    name = kustomization["metadata"]["name"]
    errors = []
    if kustomization["spec"].get("prune") is not False:
        errors.append(f"{name}: prune is on, and would garbage-collect the canary's objects")
    if kustomization["spec"].get("wait"):
        errors.append(f"{name}: wait is on; a Flagger analysis or a vLLM start-up outlasts the sync timeout")
    return errors
