"""Stages as Kubeflow Trainer v2 TrainJobs (CPT_JOB_BACKEND=trainjob): the same intents rendered as TrainJobs that
validate against the Trainer v2.3.0 CRD schema (tests/api/testdata), read back into the same observed jobs, with
Kueue's queue label and suspension handled both ways."""

from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from cpt_core.results import CommittedTask
from cpt_core.validation import validate_resource
from cpt_operator.kube import jobs
from cpt_operator.kube.children import render
from cpt_operator.kube.defaults import PlanDefaults
from cpt_operator.kube.observe import observed_job
from cpt_operator.planner import Observed, plan, task_spec_hash
from crdschema import crd_validator

HERE = Path(__file__).parent
NOW = datetime(2026, 11, 1, 12, 0, 0, tzinfo=timezone.utc)
TRAINJOB = PlanDefaults(job_backend="trainjob", child_key=b"golden-files-key-" + b"0" * 32)


@pytest.fixture(scope="module")
def trainjob_schema():
    return crd_validator(yaml.safe_load((HERE / "testdata" / "trainer.kubeflow.org_trainjobs.yaml").read_text()))


def _base_done(resource):
    spec = validate_resource(resource).spec
    return {0: CommittedTask(0, "base", task_spec_hash(spec, 0), {"tasks": {"add": 0.3}, "general": {}})}


def _children(resource, committed=None, jobs_=()):
    p = plan(resource, Observed(now=NOW, committed=committed or {}, jobs=tuple(jobs_)))
    return p, render(p, resource, (), TRAINJOB)


def test_stage_is_a_valid_trainjob_on_the_operators_runtime(resource, trainjob_schema):
    resource["spec"]["queue"] = "team-a"
    resource["spec"]["rif"] = {"mode": "prefilter"}  # task 1 starts with its filter stage
    _, changes = _children(resource, _base_done(resource))
    kinds = [o["kind"] for o in changes.create]
    assert "PyTorchJob" not in kinds and kinds.count("TrainJob") == 1 and "ConfigMap" in kinds
    tj = next(o for o in changes.create if o["kind"] == "TrainJob")
    errors = sorted(trainjob_schema.iter_errors(tj), key=str)
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]
    assert tj["metadata"]["name"] == "demo-1-filter" and tj["spec"]["suspend"] is False
    # with a queue and rollout servers: the stage's own runtime (its servers inside), else the chart's runtime
    assert tj["spec"]["runtimeRef"] == {"name": "demo-1-filter", "kind": "TrainingRuntime",
                                        "apiGroup": "trainer.kubeflow.org"}
    trainer = tj["spec"]["trainer"]
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 4  # learner.replicas, gpusPerReplica
    assert trainer["command"][:3] == ["torchrun", "-m", "cpt_trainer.cli"]  # PET_* from the torch runtime
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == 4
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in trainer["env"]  # the learner's env, as on a PyTorchJob
    pod = tj["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    pod_spec = pod["template"]["spec"]["template"]["spec"]
    assert any(v.get("configMap", {}).get("name") == "demo-1-filter-4aaa7c445e" for v in pod_spec["volumes"])
    assert pod_spec["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod_spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert tj["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    # under a queue the stage's rollout servers are in its TrainJob's own runtime (tests/api/test_admission_unit.py)
    assert "Deployment" not in kinds


def test_golden_trainjob(resource, trainjob_schema):
    """The whole TrainJob of the first stage, as a reviewed file (regenerate with CPT_UPDATE_GOLDEN=1)."""
    import os

    resource["spec"]["queue"] = "team-a"
    _, changes = _children(resource)
    tj = next(o for o in changes.create if o["kind"] == "TrainJob")
    assert not list(trainjob_schema.iter_errors(tj))
    path = HERE / "golden" / "trainjob-0-evaluate.yaml"
    if os.environ.get("CPT_UPDATE_GOLDEN") or not path.exists():
        path.write_text(yaml.safe_dump(tj, sort_keys=False, width=120))
        if not os.environ.get("CPT_UPDATE_GOLDEN"):
            pytest.fail(f"golden file {path.name} was missing and has been written; review it and rerun")
    assert tj == yaml.safe_load(path.read_text())


@pytest.mark.parametrize("status, phase", [
    ({}, "Pending"),
    ({"conditions": [{"type": "Created", "status": "True"}]}, "Pending"),
    ({"jobsStatus": [{"name": "node", "active": 2, "ready": 2, "succeeded": 0, "failed": 0}]}, "Running"),
    ({"conditions": [{"type": "Complete", "status": "True", "message": "done"}]}, "Succeeded"),
    ({"conditions": [{"type": "Complete", "status": "False"}, {"type": "Failed", "status": "True"}]}, "Failed"),
])
def test_trainjob_conditions_map_to_job_phases(status, phase):
    obj = {"kind": "TrainJob", "metadata": {"name": "x-1-train", "labels": {
        "cpt.dev/task-index": "1", "cpt.dev/stage": "train", "cpt.dev/attempt": "0"}}, "spec": {}, "status": status}
    assert observed_job(obj).phase == phase


def test_suspension_both_ways_for_both_kinds():
    for backend, where in ((jobs.TRAINJOB, ("spec",)), (jobs.PYTORCHJOB, ("spec", "runPolicy"))):
        patch = jobs.suspend_patch(backend, True)
        node = patch
        for key in where:
            node = node[key]
        assert node == {"suspend": True}
        assert patch["metadata"]["annotations"][jobs.SUSPENDED_BY] == "true"
        assert jobs.suspend_patch(backend, False)["metadata"]["annotations"][jobs.SUSPENDED_BY] is None
    labels = {"cpt.dev/task-index": "1", "cpt.dev/stage": "train"}
    by_kueue = {"kind": "TrainJob", "metadata": {"name": "j", "labels": labels}, "spec": {"suspend": True}}
    by_us = {"kind": "TrainJob", "metadata": {"name": "j", "labels": labels,
                                              "annotations": {jobs.SUSPENDED_BY: "true"}}, "spec": {"suspend": True}}
    assert observed_job(by_kueue).queued and observed_job(by_kueue).suspended
    assert observed_job(by_us).suspended and not observed_job(by_us).queued


def test_the_operator_creates_only_the_kind_in_use_and_watches_the_other():
    """The other kind is read (a backend switch must see its jobs, issue 26), never created."""
    from cpt_operator.kube.permissions import required_rules

    for backend, other in (("trainjob", "pytorchjobs"), ("pytorchjob", "trainjobs")):
        verbs = {r: set(v) for _, r, v in required_rules(backend)}
        assert "create" in verbs[jobs.BACKENDS[backend].plural]
        assert verbs[other] == {"list", "watch", "patch"}
