"""The inference-gateway overlays (mesh/inference-gateway, overlays/inference-gateway[-gpu]), offline.

Every resource against the schema the API server would apply: core kinds strictly with
kubernetes-validate, Istio kinds with their CRDs, InferencePool / InferenceObjective with the GIE and
llm-d CRDs, Gateway / HTTPRoute with Gateway API's, ScaledObject with KEDA's, all with CEL rules; checkov;
and the cross-resource consistency in meshcheck.inference, which must fail on a wrong selector or port.
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from meshcheck import core, crd, inference, k8s, render
from meshcheck.render import Doc, of_kind, one
from meshcheck.tools import CHECKOV, REPO

OVERLAYS = ("inference-gateway", "inference-gateway-gpu")
SCHEMA_FOLDERS = {"gie": "*.yaml", "gateway-api": "*.yaml", "keda": "keda.sh_*.yaml"}


@pytest.fixture(scope="module")
def texts(kubectl: str) -> dict[str, str]:
    return {name: render.kustomize(kubectl, REPO / "mesh" / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(scope="module")
def docs(texts: dict[str, str]) -> dict[str, list[Doc]]:
    return {name: render.parse(text) for name, text in texts.items()}


@pytest.fixture(scope="module")
def crds(istio_crds: dict[tuple[str, str], crd.CrdVersion]) -> dict[tuple[str, str], crd.CrdVersion]:
    found = dict(istio_crds)
    for name, pattern in SCHEMA_FOLDERS.items():
        folder = crd.schemas_dir(name)
        if not folder.is_dir():
            pytest.skip(f"{name} CRD schemas not found at {folder} (set AUTOGLM_SHARED_SCHEMAS to their parent)")
        found.update(crd.load_crds(folder, pattern))
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_resources_validate_strictly(docs: dict[str, list[Doc]], overlay: str) -> None:
    core_docs = [d for d in docs[overlay] if core.is_core(d)]
    assert {"Deployment", "Service", "Role", "RoleBinding", "ConfigMap"} <= {d["kind"] for d in core_docs}
    assert [e for d in core_docs for e in core.validate_core(d)] == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_validate_against_their_crds_with_cel(
    docs: dict[str, list[Doc]], crds: dict[tuple[str, str], crd.CrdVersion], overlay: str
) -> None:
    custom = [d for d in docs[overlay] if not core.is_core(d)]
    kinds = {d["kind"] for d in custom}
    assert {"InferencePool", "InferenceObjective", "Gateway", "HTTPRoute", "AuthorizationPolicy"} <= kinds
    assert [e for d in custom for e in crd.validate_custom_resource(d, crds)] == []


def test_the_crd_check_rejects_a_pool_without_target_ports(
    docs: dict[str, list[Doc]], crds: dict[tuple[str, str], crd.CrdVersion]
) -> None:
    pool = copy.deepcopy(one(docs["inference-gateway"], "InferencePool"))
    pool["spec"]["targetPorts"] = [{"number": 8000}, {"number": 8000}]  # CEL: ports must be unique
    assert crd.validate_custom_resource(pool, crds) != []
    del pool["spec"]["targetPorts"]
    assert crd.validate_custom_resource(pool, crds) != []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pool_router_route_objectives_and_autoscaling_are_consistent(docs: dict[str, list[Doc]], overlay: str) -> None:
    assert inference.all_errors(docs[overlay]) == []


def test_the_gpu_overlay_scales_on_queue_and_kv_with_keda_only(docs: dict[str, list[Doc]]) -> None:
    gpu = docs["inference-gateway-gpu"]
    assert list(of_kind(gpu, "HorizontalPodAutoscaler")) == []
    targets = {s["spec"]["scaleTargetRef"]["name"] for s in of_kind(gpu, "ScaledObject")}
    assert targets == {
        d["metadata"]["name"] for d in of_kind(gpu, "Deployment") if d["metadata"]["name"] != "autoglm-router"
    }


def test_scale_down_drains_streams_before_the_pod_goes(docs: dict[str, list[Doc]]) -> None:
    """A pod removed by a scale-down gets preStop + the daemon's drain inside its grace period, and the
    sidecar outlives the drain, so a running stream is finished, not cut."""
    for deployment in of_kind(docs["inference-gateway-gpu"], "Deployment"):
        if deployment["metadata"]["name"] == "autoglm-router":
            continue
        spec = k8s.pod_template(deployment)["spec"]
        container = k8s.containers(deployment)[0]
        drain = float(k8s.env_value(container, "AUTOGLM_DRAIN_TIMEOUT") or 0)
        pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        proxy = json.loads(k8s.pod_template(deployment)["metadata"]["annotations"]["proxy.istio.io/config"])
        sidecar = float(proxy["terminationDrainDuration"].rstrip("s"))
        assert pre_stop + drain <= sidecar < spec["terminationGracePeriodSeconds"], deployment["metadata"]["name"]
    for scaled in of_kind(docs["inference-gateway-gpu"], "ScaledObject"):
        behavior = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
        assert behavior["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 300}]


def _pool_case(docs: list[Doc], change: str) -> list[Doc]:
    broken = copy.deepcopy(docs)
    pool = one(broken, "InferencePool")
    if change == "selector":
        pool["spec"]["selector"]["matchLabels"]["app"] = "autoglm-serverr"
    elif change == "port":
        pool["spec"]["targetPorts"] = [{"number": 8001}]
    elif change == "pod-label":
        for deployment in of_kind(broken, "Deployment"):
            k8s.pod_template(deployment)["metadata"]["labels"].pop("llm-d.ai/inference-serving", None)
    elif change == "container-port":
        for deployment in of_kind(broken, "Deployment"):
            for port in k8s.containers(deployment)[0].get("ports", []):
                if port["containerPort"] == 8000:
                    port["containerPort"] = 8080
    return broken


@pytest.mark.parametrize("change", ["selector", "port", "pod-label", "container-port"])
def test_the_consistency_check_fails_on_a_wrong_selector_or_port(docs: dict[str, list[Doc]], change: str) -> None:
    assert inference.pool_errors(docs["inference-gateway"]) == []
    assert inference.pool_errors(_pool_case(docs["inference-gateway"], change)) != []


def test_the_metrics_check_fails_when_someone_else_may_read_metrics(docs: dict[str, list[Doc]]) -> None:
    broken = copy.deepcopy(docs["inference-gateway"])
    policy = one(broken, "AuthorizationPolicy", "autoglm-server-inference-pool")
    policy["spec"]["rules"][-1]["from"][0]["source"]["principals"].append("cluster.local/ns/autoglm/sa/autoglm-client")
    assert inference.metrics_reader_errors(broken) != []


def test_checkov_passes_the_inference_gateway_overlays(texts: dict[str, str], tmp_path: Path) -> None:
    args: list[str] = [
        CHECKOV.require(),
        "--framework",
        "kubernetes",
        "--output",
        "json",
        "--skip-download",
        "--compact",
    ]
    for name, text in texts.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        args += ["--file", str(path)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    reports: Any = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [
        f"{c['check_id']} {c['resource']}: {c['check_name']}" for r in reports for c in r["results"]["failed_checks"]
    ]
    assert failed == []
    assert {c["check_id"] for r in reports for c in r["results"]["skipped_checks"]} == {"CKV_K8S_43"}
