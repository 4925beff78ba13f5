"""Suspend under the chart's own RBAC (issue 26): the emulator answers 403 to every operator request that the
Role and ClusterRole rendered by the chart do not grant, exactly as a cluster's authorizer would. A run with
rollout servers is suspended (job paused, rollout Deployment scaled to 0: its GPUs are released), resumed, then
given an invalid edit, whose InvalidSpec message must show (not a 403 behind it)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import helm_python as helm
import pytest
import yaml
from kubeemu import semantics as sem
from kubeemu.faults import Fault
from operator_harness import cpt_body, new_bucket, suspended, wait_for

REPO = Path(__file__).resolve().parents[2]
OPERATOR_AGENTS = ("kopf/", "cpt-operator/", "cpt-operator-watch/")  # the last: the informer's streams
VERBS = {"fetch": "get", "list": "list", "watch": "watch", "create": "create", "update": "patch",
         "replace": "update", "delete": "delete"}


def chart_objects(values: dict, namespace: str = "cpt-system") -> list[dict]:
    with helm.Chart.load(str(REPO / "charts" / "cpt-operator")) as chart:
        rendered = chart.render(values, name="cpt-operator", namespace=namespace)
    return [doc for path, text in sorted(rendered.items()) if path.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]


def _grants(rules: list[dict]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


@dataclass
class ChartAuthorizer(Fault):
    """A Fault that refuses (403) what the rendered RBAC does not grant the operator's service account."""

    cluster: set = field(default_factory=set)
    namespaced: dict = field(default_factory=dict)  # namespace -> grants of the Role bound there
    denied: list = field(default_factory=list)

    def matches(self, action: str, path: sem.Path, agent: str = "") -> bool:
        if not agent.startswith(OPERATOR_AGENTS):
            return False
        want = (path.group, path.plural + (f"/{path.subresource}" if path.subresource else ""), VERBS[action])
        allowed = want in self.cluster or (path.namespace is not None and want in self.namespaced.get(path.namespace, ()))
        if not allowed:
            self.denied.append((*want, path.namespace))
        return not allowed


def authorizer(objects: list[dict]) -> ChartAuthorizer:
    cluster = {t for o in objects if o["kind"] == "ClusterRole" for t in _grants(o["rules"])}
    namespaced = {o["metadata"]["namespace"]: _grants(o["rules"]) for o in objects if o["kind"] == "Role"}
    return ChartAuthorizer(status=403, times=-1, cluster=cluster, namespaced=namespaced)


def _replicas(world, name: str):
    return world.apps.read_namespaced_deployment(name, world.namespace).spec.replicas


@pytest.fixture
def chart_operator(emu_world, emulator, tmp_path):
    """The operator as a separate process, with the environment and RBAC the chart renders for `default`."""
    objects = chart_objects({"watchNamespaces": [emu_world.namespace]})
    rbac = authorizer(objects)
    emulator.inject(rbac)
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    chart_env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
                 if "value" in e and e["name"] in ("CPT_NAMESPACES", "CPT_JOB_BACKEND")}
    env = dict(os.environ, CPT_METRICS_PORT="0", **chart_env)
    log = open(tmp_path / "operator.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "cpt_operator"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield rbac, tmp_path / "operator.log"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_suspend_with_rollout_servers_under_the_charts_rbac(emu_world, emulator, chart_operator):
    world = emu_world
    rbac, log = chart_operator
    world.core.create_namespaced_secret(world.namespace, {"metadata": {"name": "s3"}, "data": {
        k: base64.b64encode(b"testing").decode() for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}})
    body = cpt_body("gpus", world.endpoint, new_bucket(world.endpoint), tasks=1, method="grpo")
    body["spec"]["storage"]["secretRef"] = "s3"
    world.create(body)
    wait_for(lambda: world.jobs("gpus"), timeout=90, what="the base evaluate job")
    world.play_trainer("gpus")  # task 0 committed: task 1 trains with rollout servers
    wait_for(lambda: any(j["metadata"]["name"] == "gpus-1-train" for j in world.jobs("gpus")), what="train job")
    wait_for(lambda: _replicas(world, "gpus-1-rollout") == 1, what="rollout servers")

    world.patch_spec("gpus", {"suspend": True})
    wait_for(lambda: _replicas(world, "gpus-1-rollout") == 0, what="rollout servers scaled to 0",
             timeout=30)
    wait_for(lambda: all(suspended(j) for j in world.jobs("gpus") if j["metadata"]["name"] == "gpus-1-train"),
             what="train job suspended")
    wait_for(lambda: world.status("gpus").get("phase") == "Suspended", what="phase Suspended")

    world.patch_spec("gpus", {"suspend": False})
    wait_for(lambda: _replicas(world, "gpus-1-rollout") == 1, what="rollout servers back")
    wait_for(lambda: not any(suspended(j) for j in world.jobs("gpus")), what="train job resumed")

    world.patch_spec("gpus", {"rif": {"rollouts": 4}})  # rif without rif-grpo: invalid
    status = wait_for(lambda: world.status("gpus").get("phase") == "Failed" and world.status("gpus"),
                      what="the invalid edit refused")
    valid = next(c for c in status["conditions"] if c["type"] == "SpecValid")
    assert valid["reason"] == "InvalidSpec" and "spec.rif" in valid["message"], valid
    assert "403" not in status["message"] and "spec.rif" in status["message"], status["message"]
    wait_for(lambda: _replicas(world, "gpus-1-rollout") == 0, what="rollout servers stopped by the invalid edit")
    wait_for(lambda: all(suspended(j) for j in world.jobs("gpus") if j["metadata"]["name"] == "gpus-1-train"),
             what="train job suspended by the invalid edit")
    denied = emulator.call(lambda e: list(rbac.denied))
    assert denied == [], (denied, log.read_text()[-3000:])
