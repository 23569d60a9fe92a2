"""mesh/gitops: the Argo CD and Flux objects render, validate strictly against their CRDs (structural
schema with unknown fields rejected, plus CEL rules, as the Istio resources are), and agree with the
overlays they deliver: the paths exist, the namespaces match, the sync options suit the Flagger canary,
and both tools deliver the same entry points from the same repository and branch."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from meshcheck import crd, gitops, render
from meshcheck.render import Doc
from meshcheck.tools import REPO

GITOPS = REPO / "mesh" / "gitops"
CLUSTERS = ("staging", "production", "gpu")
CrdMap = dict[tuple[str, str], crd.CrdVersion]


def _crds(project: str, pattern: str) -> CrdMap:
    folder = crd.schemas_dir(project)
    if not folder.is_dir():
        pytest.skip(f"{project} CRD schemas not found at {folder} (set AUTOGLM_{project.upper()}_SCHEMAS)")
    return crd.load_crds(folder, pattern)


@pytest.fixture(scope="module")
def argocd_crds() -> CrdMap:
    found = _crds("argocd", "*-crd.yaml")
    assert {k for _, k in found} == {"Application", "ApplicationSet", "AppProject"}
    return found


@pytest.fixture(scope="module")
def flux_crds() -> CrdMap:
    found = _crds("flux", "*.toolkit.fluxcd.io_*.yaml")
    assert {"Kustomization", "GitRepository"} <= {k for _, k in found}
    return found


@pytest.fixture(scope="module")
def argocd_docs(kubectl: str) -> list[Doc]:
    return render.parse(render.kustomize(kubectl, GITOPS / "argocd"))


@pytest.fixture(scope="module")
def applications(argocd_docs: list[Doc]) -> list[Doc]:
    return gitops.generated_applications(render.one(argocd_docs, "ApplicationSet"))


@pytest.fixture(scope="module")
def flux_docs(kubectl: str) -> dict[str, list[Doc]]:
    return {name: render.parse(render.kustomize(kubectl, GITOPS / "flux" / "clusters" / name)) for name in CLUSTERS}


@pytest.fixture(scope="module")
def delivered(kubectl: str, applications: list[Doc], flux_docs: dict[str, list[Doc]]) -> dict[str, list[Doc]]:
    """Each delivered path, rendered as the tools would render it."""
    paths = {t.path for t in gitops.argo_targets(applications)}
    paths |= {t.path for docs in flux_docs.values() for t in gitops.flux_targets(docs)}
    return {path: render.parse(render.kustomize(kubectl, REPO / path)) for path in sorted(paths)}


# ------------------------------------------------------------------ strict validation against the CRDs
def test_argocd_objects_validate_against_their_crds(argocd_docs: list[Doc], argocd_crds: CrdMap) -> None:
    assert {d["kind"] for d in argocd_docs} == {"AppProject", "ApplicationSet"}
    assert [e for d in argocd_docs for e in crd.validate_custom_resource(d, argocd_crds)] == []


def test_generated_applications_validate_against_the_application_crd(
    applications: list[Doc], argocd_crds: CrdMap
) -> None:
    assert [a["metadata"]["name"] for a in applications] == [f"autoglm-{c}" for c in CLUSTERS]
    assert [e for a in applications for e in crd.validate_custom_resource(a, argocd_crds)] == []


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_flux_objects_validate_against_their_crds(
    flux_docs: dict[str, list[Doc]], flux_crds: CrdMap, cluster: str
) -> None:
    docs = flux_docs[cluster]
    assert sorted(d["kind"] for d in docs) == ["GitRepository", "Kustomization"]
    assert all(d["metadata"]["namespace"] == "flux-system" for d in docs)
    assert [e for d in docs for e in crd.validate_custom_resource(d, flux_crds)] == []


def _set(doc: Doc, path: str, value: object) -> Doc:
    broken = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node = broken
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return broken


@pytest.mark.parametrize(
    ("kind", "path", "value", "expected"),
    [
        ("ApplicationSet", "spec.template.spec.syncPolicy.automated.prunee", False, "prunee"),
        ("ApplicationSet", "spec.template.spec.project", None, "'project' is a required property"),
        ("AppProject", "spec.destinations", "autoglm", "is not of type 'array'"),
        ("Kustomization", "spec.prune", None, "'prune' is a required property"),
        ("Kustomization", "spec.sourceRef.kind", "HelmRepository", "is not one of"),
        ("GitRepository", "spec.ref.branches", "main", "branches"),
    ],
)
def test_the_validation_rejects_what_the_api_server_would(
    argocd_docs: list[Doc],
    flux_docs: dict[str, list[Doc]],
    argocd_crds: CrdMap,
    flux_crds: CrdMap,
    kind: str,
    path: str,
    value: object,
    expected: str,
) -> None:
    docs = argocd_docs + flux_docs["production"]
    errors = crd.validate_custom_resource(_set(render.one(docs, kind), path, value), argocd_crds | flux_crds)
    assert any(expected in e for e in errors), errors


def test_flux_cel_rule_is_evaluated(flux_docs: dict[str, list[Doc]], flux_crds: CrdMap) -> None:
    """GitRepository: serviceAccountName only with provider azure or aws (a CEL rule, not JSON schema)."""
    source = render.one(flux_docs["production"], "GitRepository")
    errors = crd.validate_custom_resource(_set(source, "spec.serviceAccountName", "autoglm"), flux_crds)
    assert any("CEL" in e or "serviceAccountName" in e for e in errors), errors


# ----------------------------------------------------------------------- consistency with the overlays
def _all_targets(applications: list[Doc], flux_docs: dict[str, list[Doc]]) -> list[gitops.Target]:
    return gitops.argo_targets(applications) + [t for docs in flux_docs.values() for t in gitops.flux_targets(docs)]


def test_every_path_exists_and_is_a_kustomization(applications: list[Doc], flux_docs: dict[str, list[Doc]]) -> None:
    assert [e for t in _all_targets(applications, flux_docs) for e in gitops.path_errors(t, REPO)] == []


def test_every_target_namespace_matches_what_its_path_renders(
    applications: list[Doc], flux_docs: dict[str, list[Doc]], delivered: dict[str, list[Doc]]
) -> None:
    targets = _all_targets(applications, flux_docs)
    assert {t.namespace for t in targets} == {"autoglm"}
    assert [e for t in targets for e in gitops.namespace_errors(t, delivered[t.path])] == []


def test_applications_stay_inside_their_project(
    argocd_docs: list[Doc], applications: list[Doc], delivered: dict[str, list[Doc]]
) -> None:
    project = render.one(argocd_docs, "AppProject")
    errors = [
        e for a in applications for e in gitops.project_errors(project, a, delivered[a["spec"]["source"]["path"]])
    ]
    assert errors == []


def test_both_tools_deliver_the_same_paths_from_the_same_repository(
    applications: list[Doc], flux_docs: dict[str, list[Doc]]
) -> None:
    argo = {t.name.removeprefix("autoglm-"): t for t in gitops.argo_targets(applications)}
    flux = {t.name.removeprefix("autoglm-"): t for docs in flux_docs.values() for t in gitops.flux_targets(docs)}
    assert set(argo) == set(flux) == set(CLUSTERS)
    for env in CLUSTERS:
        assert (argo[env].repo_url, argo[env].revision, argo[env].path) == (
            flux[env].repo_url,
            flux[env].revision,
            flux[env].path,
        ), env
    # The Flagger canary is one of the delivered entry points.
    assert argo["production"].path == "mesh/progressive/flagger"


def test_sync_options_suit_the_flagger_canary(applications: list[Doc], flux_docs: dict[str, list[Doc]]) -> None:
    assert [e for a in applications for e in gitops.argo_canary_sync_errors(a)] == []
    kustomizations = [k for docs in flux_docs.values() for k in render.of_kind(docs, "Kustomization")]
    assert [e for k in kustomizations for e in gitops.flux_canary_sync_errors(k)] == []


def test_the_ignored_replica_count_is_really_left_to_the_hpa(delivered: dict[str, list[Doc]]) -> None:
    """Ignoring /spec/replicas only helps if no manifest sets it and an HPA scales every Deployment."""
    for path, docs in delivered.items():
        deployments = {d["metadata"]["name"]: d for d in render.of_kind(docs, "Deployment")}
        assert deployments, path
        assert [n for n, d in deployments.items() if "replicas" in d["spec"]] == [], path
        scaled = {h["spec"]["scaleTargetRef"]["name"] for h in render.of_kind(docs, "HorizontalPodAutoscaler")}
        assert set(deployments) <= scaled, path


# -------------------------------------------------------------------- the checks catch what they should
def test_the_consistency_checks_catch_drift(applications: list[Doc], delivered: dict[str, list[Doc]]) -> None:
    target = gitops.argo_targets(applications)[0]
    moved = gitops.Target(**{**target.__dict__, "path": "mesh/overlays/canary-v2"})
    assert "does not exist" in " ".join(gitops.path_errors(moved, REPO))
    not_a_kustomization = gitops.Target(**{**target.__dict__, "path": "mesh/base/istio"})
    assert "has no kustomization.yaml" in " ".join(gitops.path_errors(not_a_kustomization, REPO))
    elsewhere = gitops.Target(**{**target.__dict__, "namespace": "autoglm-staging"})
    errors = gitops.namespace_errors(elsewhere, delivered[target.path])
    assert any("renders into namespace 'autoglm'" in e for e in errors)
    assert any("does not create namespace autoglm-staging" in e for e in errors)


def test_the_sync_checks_catch_pruning_and_a_reset_replica_count(
    applications: list[Doc], flux_docs: dict[str, list[Doc]]
) -> None:
    app = applications[0]
    pruning = _set(app, "spec.syncPolicy.automated.prune", True)
    assert any("prunes" in e for e in gitops.argo_canary_sync_errors(pruning))
    unignored = _set(app, "spec.ignoreDifferences", [])
    assert any("replicas" in e for e in gitops.argo_canary_sync_errors(unignored))
    kustomization = render.one(flux_docs["production"], "Kustomization")
    assert gitops.flux_canary_sync_errors(_set(kustomization, "spec.prune", True))


def test_the_project_check_catches_a_foreign_repository(
    argocd_docs: list[Doc], applications: list[Doc], delivered: dict[str, list[Doc]]
) -> None:
    project = render.one(argocd_docs, "AppProject")
    rendered = delivered[applications[0]["spec"]["source"]["path"]]
    app = _set(applications[0], "spec.source.repoURL", "https://github.com/someone/else.git")
    assert any("sourceRepos" in e for e in gitops.project_errors(project, app, rendered))
    locked = _set(project, "spec.clusterResourceWhitelist", [])
    assert any("cluster-scoped Namespace" in e for e in gitops.project_errors(locked, applications[0], rendered))


def test_docs_say_how_a_release_flows(mesh_dir: Path) -> None:
    readme = (mesh_dir / "README.md").read_text()
    section = readme[readme.index("## GitOps delivery") :]
    for step in ("kustomize edit set image", "git commit", "sync", "Flagger", "promot"):
        assert step in section, step
