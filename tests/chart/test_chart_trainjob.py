"""jobBackend: trainjob (Kubeflow Trainer v2): the chart installs the ClusterTrainingRuntime the operator's
TrainJobs refer to, valid against Trainer v2.3.0's CRD, grants rights on TrainJobs only, and the pods Trainer builds
from the runtime plus the operator's runtime patch pass Pod Security `restricted`."""

from __future__ import annotations

import copy
from datetime import datetime, timezone
from pathlib import Path

import yaml
from chart_common import ROOT, by_kind, one

from cpt_operator.kube.children import render as render_children
from cpt_operator.kube.defaults import PlanDefaults
from cpt_operator.kube.permissions import required_rules
from cpt_operator.planner import Observed, plan
from crdschema import crd_validator
from pss import violations

TESTDATA = ROOT / "tests" / "api" / "testdata"
TRAINJOB = {"jobBackend": "trainjob"}


def _grants(role: dict) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}


def test_default_backend_has_no_runtime_and_pytorchjob_rights(render):
    objects = render()
    assert not by_kind(objects, "ClusterTrainingRuntime")
    role = one(objects, "Role")
    assert ("kubeflow.org", "pytorchjobs", "create") in _grants(role)
    # TrainJobs are watched, never created: a switch of backend must see the other kind's jobs (issue 26)
    assert {v for g, _, v in _grants(role) if g == "trainer.kubeflow.org"} == {"list", "watch", "patch"}
    trainjob_role = one(render(TRAINJOB), "Role")
    assert {v for g, _, v in _grants(trainjob_role) if g == "kubeflow.org"} == {"list", "watch", "patch"}


def test_trainjob_backend_installs_a_valid_runtime_and_rights_on_trainjobs_only(render):
    objects = render(TRAINJOB)
    runtime = one(objects, "ClusterTrainingRuntime")
    schema = crd_validator(yaml.safe_load((TESTDATA / "trainer.kubeflow.org_clustertrainingruntimes.yaml").read_text()))
    errors = sorted(schema.iter_errors(runtime), key=str)
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]
    assert runtime["metadata"]["name"] == "cpt-learner" and "torch" in runtime["spec"]["mlPolicy"]
    role = one(objects, "Role")
    namespaced = {(g, r, v) for g, r, verbs in required_rules("trainjob") for v in verbs
                  if r not in ("customresourcedefinitions", "namespaces")}
    assert _grants(role) == namespaced
    env = {e["name"]: e.get("value") for e in one(objects, "Deployment")["spec"]["template"]["spec"]
           ["containers"][0]["env"]}
    assert env["CPT_JOB_BACKEND"] == "trainjob" and env["CPT_TRAINING_RUNTIME"] == "cpt-learner"
    assert not by_kind(render({**TRAINJOB, "trainingRuntime": {"name": "cpt-learner", "create": False}}),
                       "ClusterTrainingRuntime")


def _merged_pod(runtime: dict, trainjob: dict) -> dict:
    """The pod Trainer builds: the runtime's node template, the TrainJob's trainer fields on the `node` container,
    then the runtime patch (containers merged by name, lists and objects of the patch added or replaced)."""
    node = next(j for j in runtime["spec"]["template"]["spec"]["replicatedJobs"] if j["name"] == "node")
    pod = copy.deepcopy(node["template"]["spec"]["template"]["spec"])
    container = next(c for c in pod["containers"] if c["name"] == "node")
    trainer = trainjob["spec"]["trainer"]
    container.update(image=trainer["image"], command=trainer["command"], env=trainer["env"],
                     resources=trainer["resourcesPerNode"])
    patch = trainjob["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    patch_pod = patch["template"]["spec"]["template"]["spec"]
    for key, value in patch_pod.items():
        if key == "containers":
            for patched in value:
                target = next(c for c in pod["containers"] if c["name"] == patched["name"])
                target.update(patched)
        else:
            pod[key] = value
    return pod


def test_trainjob_pods_pass_restricted(render, chart):
    runtime = one(render(TRAINJOB), "ClusterTrainingRuntime")
    resource = yaml.safe_load((ROOT / "examples" / "cpt-trainjob.yaml").read_text())
    resource["metadata"]["uid"] = "0f7e4a5e-1111-2222-3333-444455556666"
    p = plan(resource, Observed(now=datetime.now(timezone.utc)))
    changes = render_children(p, resource, (), PlanDefaults(job_backend="trainjob"))
    (trainjob,) = [o for o in changes.create if o["kind"] == "TrainJob"]
    pod = _merged_pod(runtime, trainjob)
    assert violations(pod) == []
    assert pod["automountServiceAccountToken"] is False
    assert any(v.get("configMap") for v in pod["volumes"])
