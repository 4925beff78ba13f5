"""Issue 26, Medium-high: a planted child whose ownerReference carries the run's uid (anyone who may create the
object can write that field), labelled cpt.dev/run=<run> so the operator's informer sees it, is never adopted
or used: the real operator (kopf, informer, passes) against the emulator and moto reports ForeignObject and
starts nothing that would use it. Only a child carrying the run's mark under the operator's key counts."""

from __future__ import annotations

import kubernetes
import pytest

from cpt_operator.kube import manifests
from cpt_operator.kube.defaults import PlanDefaults
from operator_harness import JOB_KIND, cpt_body, new_bucket, running_operator, wait_for

KEY = "forged-owner-test-key-" + "k" * 32
RUN = "demo"


@pytest.fixture
def world(emu_world, monkeypatch):
    monkeypatch.setenv("CPT_CHILD_KEY", KEY)  # the operator's key, so the test can name the private children
    return emu_world


def _forged(resource: dict, kind: str, api_version: str, name: str, **body) -> dict:
    meta = resource["metadata"]
    return {"apiVersion": api_version, "kind": kind, **body, "metadata": {
        "name": name, "labels": {manifests.LABEL_RUN: RUN},
        "ownerReferences": [{"apiVersion": resource["apiVersion"], "kind": resource["kind"], "name": RUN,
                             "uid": meta["uid"], "controller": True}]}}


def _refused(world, kind: str, name: str) -> dict:
    def ready():
        conditions = {c["type"]: c for c in world.status(RUN).get("conditions") or []}
        ready = conditions.get("Ready") or {}
        return ready if ready.get("reason") == "ForeignObject" else None
    ready = wait_for(ready, 30, what="Ready=False/ForeignObject")
    assert f"{kind}/{name}" in ready["message"] and "not adopted" in ready["message"]
    return ready


def _run(world, **spec) -> dict:
    return world.create(cpt_body(RUN, world.endpoint, new_bucket(world.endpoint), **spec))


def test_a_planted_allow_all_network_policy_with_the_runs_uid_is_refused(world):
    resource = _run(world)
    name = manifests.network_policy_name(RUN)
    planted = _forged(resource, "NetworkPolicy", "networking.k8s.io/v1", name,
                      spec={"podSelector": {}, "ingress": [{}], "egress": [{}]})  # allow-all
    kubernetes.client.NetworkingV1Api(world.client).create_namespaced_network_policy(world.namespace, planted)
    with running_operator():
        _refused(world, "NetworkPolicy", name)
        assert world.jobs(RUN) == [], "no stage pod may start behind a planted policy"
        assert not any(k == "ConfigMap" for k, _ in world.children(RUN))
    policy = kubernetes.client.NetworkingV1Api(world.client).read_namespaced_network_policy(name, world.namespace)
    assert policy.spec.pod_selector.match_labels is None  # untouched: still the planter's, never patched


def test_a_planted_stage_configmap_with_the_runs_uid_is_refused(world):
    """Planted under the private name (as if the key had leaked); another storage in its config."""
    resource = _run(world)
    name = manifests.stage_config_name(resource, f"{RUN}-0-evaluate", PlanDefaults(child_key=KEY.encode()))
    planted = _forged(resource, "ConfigMap", "v1", name, data={"stage.yaml": "spec: {storage: {uri: s3://evil}}"})
    world.core.create_namespaced_config_map(world.namespace, planted)
    with running_operator():
        _refused(world, "ConfigMap", name)
        assert world.jobs(RUN) == [], "the stage job must not start on a planted config"
    assert world.core.read_namespaced_config_map(name, world.namespace).data == planted["data"]


def test_a_planted_rollout_key_with_the_runs_uid_is_refused(world):
    """The rollout key Secret holding a token of the planter's choosing: no rollout server or job is started
    with it (row 0 gets rollout servers with evaluation.engine vllm)."""
    resource = _run(world, evaluation={"engine": "vllm"})
    name = manifests.rollout_key_name(resource, PlanDefaults(child_key=KEY.encode()))
    planted = _forged(resource, "Secret", "v1", name, stringData={manifests.ROLLOUT_KEY: "planters-token"})
    world.core.create_namespaced_secret(world.namespace, planted)
    with running_operator():
        _refused(world, "Secret", name)
        assert world.jobs(RUN) == []
        assert not any(k in ("Deployment", JOB_KIND) for k, _ in world.children(RUN))


def test_without_plants_the_same_run_starts_and_its_children_carry_the_mark(world):
    """The control: the operator's own children pass its proof, pass after pass (no ForeignObject)."""
    resource = _run(world)
    with running_operator():
        job = wait_for(lambda: world.jobs(RUN), 30, what="the first stage job")[0]
        assert job["metadata"]["annotations"][manifests.api.GROUP + "/mark"]
        cm = manifests.stage_config_name(resource, f"{RUN}-0-evaluate", PlanDefaults(child_key=KEY.encode()))
        assert ("ConfigMap", cm) in world.children(RUN)
        reasons = {c["reason"] for c in world.status(RUN).get("conditions") or []}
        assert "ForeignObject" not in reasons
