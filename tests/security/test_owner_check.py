"""Issue 15 item 6: a 409 on create counts as success only for this run's own object. A planted object with a
child's name (a ConfigMap that would feed a stage its config, a Service that would receive its rollouts) is
never adopted: the pass stops before anything uses it, Ready=False/ForeignObject names it, one Warning event.
Runs against the project's strict API emulator (tests/support/kubeemu)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from kubeemu import EmulatorThread  # noqa: E402

from children_common import example  # noqa: E402
from cpt_operator.kube.children import render  # noqa: E402
from cpt_operator.kube.controller.apply import World, apply  # noqa: E402
from cpt_operator.kube.rest.client import ForeignObject, Kube  # noqa: E402
from cpt_operator.kube.defaults import PlanDefaults  # noqa: E402
from cpt_operator.kube.manifests import stage_config_name  # noqa: E402
from cpt_operator.planner import Observed, plan  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((ROOT / "crds" / "continualposttraining.yaml").read_text())
NOW = datetime(2026, 11, 1, 12, 0, 0, tzinfo=timezone.utc)
NS = "default"


@pytest.fixture
def kube(tmp_path):
    with EmulatorThread(crds=[CRD]) as emu:
        client = Kube.connect(emu.kubeconfig(str(tmp_path)))
        yield client
        client.close()


def _run(kube: Kube) -> dict:
    body = example("sft", name="demo", namespace=NS)
    for key in ("uid", "generation"):
        body["metadata"].pop(key)
    kube.request("POST", f"/apis/cpt.dev/v1alpha1/namespaces/{NS}/continualposttrainings", body=body)
    return kube.get_resource(NS, "demo")


def _pass(kube: Kube) -> None:
    resource = kube.get_resource(NS, "demo")
    p = plan(resource, Observed(now=NOW))
    apply(kube, World(resource, {}, Observed(now=NOW)), render(p, resource, ()), p, NOW)


def _warnings(kube: Kube) -> list[dict]:
    events = kube.request("GET", f"/api/v1/namespaces/{NS}/events")["items"]
    return [e for e in events if e.get("reason") == "ForeignObject"]


def test_a_planted_configmap_is_not_adopted_and_is_reported(kube):
    """Planted under the stage ConfigMap's private name (as if it had leaked; it is not derivable from the run's
    name, see test_forged_owner.py), without the run's mark."""
    resource = _run(kube)
    cm_name = stage_config_name(resource, "demo-0-evaluate", PlanDefaults())
    planted = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": cm_name},
               "data": {"stage.yaml": "attacker: config"}}
    kube.request("POST", f"/api/v1/namespaces/{NS}/configmaps", body=planted)
    for _ in range(2):  # the retried pass reports the same thing once
        with pytest.raises(ForeignObject, match=f"ConfigMap/{cm_name}"):
            _pass(kube)
    jobs = kube.request("GET", f"/apis/kubeflow.org/v1/namespaces/{NS}/pytorchjobs")["items"]
    assert jobs == [], "the stage job must not start on a planted config"
    cm = kube.request("GET", f"/api/v1/namespaces/{NS}/configmaps/{cm_name}")
    assert cm["data"] == planted["data"] and not cm["metadata"].get("ownerReferences")
    status = kube.get_resource(NS, "demo")["status"]
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "ForeignObject")
    assert f"ConfigMap/{cm_name}" in ready["message"] and "not adopted" in ready["message"]
    assert len(_warnings(kube)) == 1
    # Once the planted object is gone, the same pass goes on and creates the run's own children.
    kube.delete(("v1", "configmaps"), NS, cm_name)  # the REST client names a kind by (apiVersion, plural)
    _pass(kube)
    jobs = kube.request("GET", f"/apis/kubeflow.org/v1/namespaces/{NS}/pytorchjobs")["items"]
    assert [j["metadata"]["name"] for j in jobs] == ["demo-0-evaluate"]


def test_the_runs_own_objects_on_409_are_success(kube):
    resource = _run(kube)
    _pass(kube)
    _pass(kube)  # everything (NetworkPolicy included, which is never listed) answers 409: ours, so fine
    policy = kube.request("GET", f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/demo-pods")
    assert policy["metadata"]["ownerReferences"][0]["uid"] == resource["metadata"]["uid"]
    assert _warnings(kube) == []


def test_a_foreign_object_of_another_owner_is_not_adopted(kube):
    """An object owned by something else (here: another run's uid) is as foreign as an unowned one."""
    resource = _run(kube)
    foreign = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {
        "name": "demo-pods", "ownerReferences": [{"apiVersion": "cpt.dev/v1alpha1", "kind": "ContinualPostTraining",
                                                  "name": "demo", "uid": "someone-else"}]},
               "spec": {"podSelector": {}, "ingress": [{}]}}  # allow-all: would void the run's isolation
    kube.request("POST", f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies", body=foreign)
    assert resource["metadata"]["uid"] != "someone-else"
    with pytest.raises(ForeignObject, match="NetworkPolicy/demo-pods"):
        _pass(kube)
    assert kube.request("GET", f"/api/v1/namespaces/{NS}/configmaps")["items"] == []
