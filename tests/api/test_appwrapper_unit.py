"""Issue 31 item 1, PyTorchJob backend: under a queue a stage's rollout servers and learner are one AppWrapper
(workload.codeflare.dev/v1beta2), the only object that carries the queue label, checked against the AppWrapper
CRD of v1.2.1 (tests/api/testdata/appwrapper-v1.2.1). Its components are what the AppWrapper controller creates on
admission: the servers' batch/v1 Job and the stage's PyTorchJob, both marked as the run's, owned by no one (the
controller owns them), and stopping together (servers stoppable, learner stopping them at its end)."""

from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from cpt_core import rollout
from cpt_core.results import CommittedTask
from cpt_core.stage import StageConfig
from cpt_core.validation import validate_resource
from cpt_operator.kube import jobs, observe, ownership, units, wrapped
from cpt_operator.kube.children import render
from cpt_operator.kube.defaults import PlanDefaults
from cpt_operator.kube.permissions import required_rules
from cpt_operator.planner import Observed, plan, task_spec_hash
from cpt_operator.planner.intents import RolloutServers, SetSuspended
from cpt_operator.planner.names import MAX_CHILD_NAME, job_name
from crdschema import crd_validator

DATA = Path(__file__).parent / "testdata" / "appwrapper-v1.2.1"
NOW = datetime(2026, 11, 1, 12, 0, 0, tzinfo=timezone.utc)
KEY = b"golden-files-key-" + b"0" * 32
PYTORCHJOB = PlanDefaults(job_backend="pytorchjob", child_key=KEY)
UID = "uid-1"


@pytest.fixture(scope="module")
def validator():
    return crd_validator(yaml.safe_load((DATA / "workload.codeflare.dev_appwrappers.yaml").read_text()))


def _errors(validator, obj) -> list[str]:
    return [f"{list(e.path)}: {e.message}" for e in sorted(validator.iter_errors(obj), key=str)[:5]]


def _queued(resource) -> dict:
    resource["metadata"]["uid"] = UID
    resource["spec"]["queue"] = "team-a"
    resource["spec"]["rif"] = {**resource["spec"].get("rif", {}), "mode": "prefilter"}  # a filter stage first
    resource["spec"]["rollout"] = {"engine": "vllm", "replicas": 3, "gpus": 2}
    resource["spec"]["learner"] = {"replicas": 2, "gpusPerReplica": 4}
    return resource


def _children(resource, committed=None):
    if committed is None:
        spec = validate_resource(resource).spec
        committed = {0: CommittedTask(0, "base", task_spec_hash(spec, 0), {"tasks": {"add": 0.3}, "general": {}})}
    return render(plan(resource, Observed(now=NOW, committed=committed, jobs=())), resource, (), PYTORCHJOB).create


def _env(container) -> dict:
    return {e["name"]: e.get("value") for e in container.get("env") or []}


def test_a_stage_with_servers_is_one_appwrapper(resource, validator):
    resource = _queued(resource)
    created = _children(resource)
    kinds = [o["kind"] for o in created]
    assert "Deployment" not in kinds and "PyTorchJob" not in kinds, "nothing Kueue would admit apart"
    aw = next(o for o in created if o["kind"] == "AppWrapper")
    service = next(o for o in created if o["kind"] == "Service")
    assert kinds.index("Service") < kinds.index("AppWrapper") and "Secret" in kinds and "NetworkPolicy" in kinds
    assert not _errors(validator, aw)
    job = aw["metadata"]["name"]
    assert job == "demo-1-filter" and aw["spec"]["suspend"] is False
    # Only the AppWrapper is queued; the operator's retries replace the controller's.
    assert [o["kind"] for o in created if jobs.QUEUE_LABEL in o["metadata"].get("labels", {})] == ["AppWrapper"]
    assert aw["metadata"]["annotations"][wrapped.RETRY_LIMIT] == "0"
    servers, learner = (c["template"] for c in aw["spec"]["components"])
    assert (servers["apiVersion"], servers["kind"]) == ("batch/v1", "Job")
    assert (learner["apiVersion"], learner["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    assert learner["metadata"]["name"] == job and servers["metadata"]["name"] == f"{job}-rollout"
    for obj in (servers, learner):
        meta = obj["metadata"]
        # embedded resources: the controller creates them as they are, in the AppWrapper's namespace
        assert obj["apiVersion"] and obj["kind"] and meta["namespace"] == aw["metadata"]["namespace"]
        assert "ownerReferences" not in meta, "the AppWrapper controller makes itself the only controller"
        assert jobs.QUEUE_LABEL not in meta["labels"], "a wrapped object is never a workload of its own"
        assert meta["labels"]["cpt.dev/run"] == "demo" and meta["labels"]["cpt.dev/stage"] == "filter"
        assert ownership.proven(KEY, obj, UID), "marked as the run's own"
        assert not ownership.proven(KEY, obj, "another-uid")
    # servers: every one a pod that exits 0 when stopped, selected by the stage's Service
    spec = servers["spec"]
    assert spec["parallelism"] == spec["completions"] == 3
    pod = spec["template"]
    assert pod["spec"]["restartPolicy"] == "OnFailure"
    (vllm,) = pod["spec"]["containers"]
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == 2 and _env(vllm)[rollout.STOPPABLE_ENV] == "1"
    assert all(pod["metadata"]["labels"][k] == v for k, v in service["spec"]["selector"].items())
    assert service["spec"]["clusterIP"] == "None"
    # learner: Master + Worker, each rank stopping the stage's servers at its end, reaching them by the Service
    replicas = learner["spec"]["pytorchReplicaSpecs"]
    assert set(replicas) == {"Master", "Worker"} and replicas["Worker"]["replicas"] == 1
    for replica in replicas.values():
        env = _env(replica["template"]["spec"]["containers"][0])
        assert env[rollout.STOP_AT_END_ENV] == "1"
    config = next(o for o in created if o["kind"] == "ConfigMap" and "stage.yaml" in o.get("data", {}))
    assert yaml.safe_load(config["data"]["stage.yaml"])["rollout_url"] == f"dns+http://{job}-rollout.ml.svc:8000"


def test_stages_without_servers_stay_a_plain_queued_pytorchjob(resource):
    """The base model's evaluation with the hf engine generates in-process: its PyTorchJob alone, queued."""
    resource = _queued(resource)
    created = _children(resource, committed={})
    assert [o["kind"] for o in created if o["kind"] in ("PyTorchJob", "AppWrapper", "Deployment")] == ["PyTorchJob"]
    job = next(o for o in created if o["kind"] == "PyTorchJob")
    assert job["metadata"]["labels"][jobs.QUEUE_LABEL] == "team-a"
    assert not any(o["kind"] == "Secret" for o in created), "no servers, no rollout key"


def test_without_a_queue_servers_stay_a_deployment(resource):
    resource = _queued(resource)
    del resource["spec"]["queue"]
    kinds = [o["kind"] for o in _children(resource)]
    assert "AppWrapper" not in kinds and kinds.count("Deployment") == 1 and kinds.count("PyTorchJob") == 1


def _aw(phase: str = "", suspend: bool = False, conditions=(), annotations=None) -> dict:
    return {"kind": "AppWrapper", "metadata": {
        "name": "demo-1-filter", "annotations": annotations or {},
        "labels": {"cpt.dev/run": "demo", "cpt.dev/task-index": "1", "cpt.dev/stage": "filter",
                   "cpt.dev/attempt": "0"}},
        "spec": {"suspend": suspend}, "status": {"phase": phase, "conditions": list(conditions)}}


def test_the_appwrapper_is_observed_as_the_stage_job():
    """Held by Kueue: queued; running; Succeeded once every pod of it did; Failed with the controller's reason."""
    held = observe.observed_job(_aw("Suspended", suspend=True))
    assert (held.phase, held.suspended, held.queued) == ("Pending", True, True)
    ours = observe.observed_job(_aw("Suspended", suspend=True, annotations={jobs.SUSPENDED_BY: "true"}))
    assert (ours.suspended, ours.queued) == (True, False)
    assert observe.observed_job(_aw("Resuming")).phase == "Pending"
    assert observe.observed_job(_aw("Running")).phase == "Running"
    done = observe.observed_job(_aw("Succeeded", conditions=[
        {"type": "QuotaReserved", "status": "False", "reason": "Succeeded", "message": "5 pods succeeded",
         "lastTransitionTime": "2026-11-01T12:00:00Z"}]))
    assert done.phase == "Succeeded" and done.finished_at == NOW
    failed = observe.observed_job(_aw("Failed", conditions=[
        {"type": "Unhealthy", "status": "True", "reason": "FailedComponent", "message": "Found 1 failed components",
         "lastTransitionTime": "2026-11-01T12:00:00Z"}]))
    assert failed.phase == "Failed" and failed.message == "Found 1 failed components"


def test_suspending_a_run_suspends_its_appwrapper(resource):
    """A run's spec.suspend patches the AppWrapper (its controller then deletes servers and learner: quota back)."""
    resource = _queued(resource)
    p = plan(resource, Observed(now=NOW, committed={}, jobs=()))
    p.suspend = [SetSuspended("demo-1-filter", True)]
    changes = render(p, resource, [("AppWrapper", "demo-1-filter")], PYTORCHJOB)
    ((ref, body),) = [(r, b) for r, b in changes.patch if r.name == "demo-1-filter"]
    assert (ref.kind, ref.api_version) == ("AppWrapper", "workload.codeflare.dev/v1beta2")
    assert body == {"metadata": {"annotations": {jobs.SUSPENDED_BY: "true"}}, "spec": {"suspend": True}}


def test_rbac_for_appwrappers_only_with_the_pytorchjob_backend():
    def groups(backend):
        return {(g, r) for g, r, _ in required_rules(backend)}
    assert ("workload.codeflare.dev", "appwrappers") in groups("pytorchjob")
    assert ("batch", "jobs") in groups("pytorchjob")  # the AppWrapper webhook's SubjectAccessReview
    assert not {("workload.codeflare.dev", "appwrappers"), ("batch", "jobs")} & groups("trainjob")


def test_longest_names_fit(resource, validator):
    """The longest run (63) and task names, attempts into the hundreds: every AppWrapper and wrapped object name is
    a DNS label of at most 63 characters (the stage job's cap is 50), the servers' Job leaves room for its pods'
    job-name label, and each AppWrapper passes the CRD."""
    resource["metadata"].update(name="r" + "x" * 61 + "9", uid=UID)
    resource["spec"].update(queue="q" * 63, rollout={"engine": "vllm", "replicas": 64, "gpus": 1},
                            learner={"replicas": 512, "gpusPerReplica": 1})
    cpt = validate_resource(resource)
    run = resource["metadata"]["name"]
    for index in (0, 99, 100):
        for stage in ("filter", "train"):
            for attempt in (0, 999):
                job = job_name(run, index, stage, attempt)
                cfg = StageConfig(run=run, task_index=index, stage=stage, attempt=attempt, spec=cpt.spec,
                                  spec_hash="h", world_size=cpt.spec.learner.world_size)
                servers = RolloutServers(index, cpt.spec.model)
                service, aw = wrapped.stage_unit(resource, job, units.with_stage_url(resource, job, cfg, servers,
                                                                                     PYTORCHJOB), servers, PYTORCHJOB)
                assert not _errors(validator, aw) and len(aw["metadata"]["name"]) <= MAX_CHILD_NAME
                for obj in (service, *(c["template"] for c in aw["spec"]["components"])):
                    assert len(obj["metadata"]["name"]) <= 63, obj["metadata"]["name"]
