"""Issue 15 item 4: every pod the chart renders and every pod the operator creates passes Pod Security
`restricted` (pss.py, written from the PSS rules), has resource requests and a sized /dev/shm."""

from __future__ import annotations

import kubernetes_validate
import pytest
from chart_common import CHART_DIR, FULL_VALUES, KUBE_VERSION, NAMESPACE, RELEASE, helm
from children_common import METHODS, children, example
from pss import pod_specs, violations, workload_report

import yaml


def _chart_objects(values: dict) -> list[dict]:
    with helm.Chart.load(str(CHART_DIR)) as chart:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    return [d for path, text in sorted(rendered.items()) if path.endswith(".yaml")
            for d in yaml.safe_load_all(text) if d]


@pytest.mark.parametrize("values", [{}, FULL_VALUES, {"clusterWide": True}], ids=["default", "full", "cluster"])
def test_every_pod_template_of_the_chart_is_restricted(values):
    workloads = [o for o in _chart_objects(values) if pod_specs(o)]
    assert workloads, "the chart renders the operator Deployment"
    for obj in workloads:
        assert workload_report(obj) == []


@pytest.mark.parametrize("method", METHODS)
def test_every_child_pod_is_restricted_with_requests_and_a_sized_shm(method):
    objects = children(example(method))
    pods = [(o, where, spec) for o in objects for where, spec, _ in pod_specs(o)]
    kinds = {o["kind"] for o, _, _ in pods}
    assert kinds == ({"PyTorchJob", "Deployment"} if method != "sft" else {"PyTorchJob"})
    for obj, where, spec in pods:
        assert violations(spec) == [], (obj["metadata"]["name"], where)
        assert spec["automountServiceAccountToken"] is False  # stage pods never call the API
        for c in spec["containers"]:
            requests = c["resources"]["requests"]
            assert requests["cpu"] and requests["memory"], f"{where} would be BestEffort"
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            writable = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
            assert {"/tmp", "/dev/shm"} <= writable
        shm = [v for v in spec["volumes"] if v["name"] == "dshm"]
        assert shm and shm[0]["emptyDir"]["medium"] == "Memory" and shm[0]["emptyDir"]["sizeLimit"]
        # The pod template is a valid v1 Pod (PyTorchJob is a CRD: kubernetes-validate has no schema for it).
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": spec},
                                     KUBE_VERSION, strict=True)


def test_every_builtin_child_validates_strictly():
    for method in METHODS:
        for obj in children(example(method)):
            if obj["kind"] != "PyTorchJob":
                kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


# ---- the checker itself catches what it claims to (otherwise the tests above could not fail)

GOOD = {"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "c", "image": "x", "securityContext": {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}]}


@pytest.mark.parametrize("mutate, rule", [
    (lambda s: s["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"), "allowPrivilegeEscalation"),
    (lambda s: s["containers"][0]["securityContext"].update(capabilities={}), "drop must include ALL"),
    (lambda s: s["containers"][0]["securityContext"].update(capabilities={"drop": ["ALL"], "add": ["SYS_ADMIN"]}),
     "capabilities"),
    (lambda s: s["securityContext"].pop("seccompProfile"), "seccompProfile"),
    (lambda s: s["securityContext"].update(runAsNonRoot=False), "runAsNonRoot"),
    (lambda s: s["containers"][0]["securityContext"].update(runAsUser=0), "runAsUser 0"),
    (lambda s: s.update(hostNetwork=True), "hostNetwork"),
    (lambda s: s.update(volumes=[{"name": "h", "hostPath": {"path": "/"}}]), "hostPath"),
    (lambda s: s["containers"][0]["securityContext"].update(privileged=True), "privileged"),
    (lambda s: s["containers"][0].update(ports=[{"containerPort": 80, "hostPort": 80}]), "hostPort"),
    (lambda s: s["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]), "sysctl"),
])
def test_the_checker_flags_each_rule(mutate, rule):
    import copy

    assert violations(GOOD) == []
    spec = copy.deepcopy(GOOD)
    mutate(spec)
    assert any(rule in v for v in violations(spec)), violations(spec)


def test_the_pods_of_the_previous_release_fail_the_checker():
    """The learner pod as issue 15 found it (no drop ALL, no seccomp) is refused by the checker."""
    old = {"containers": [{"name": "pytorch", "image": "x",
                           "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True}}]}
    found = violations(old)
    assert any("drop must include ALL" in v for v in found) and any("seccompProfile" in v for v in found)
