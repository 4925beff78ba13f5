"""examples/cpt-trainjob.yaml (it names a queue) runs through all its tasks on the emulator with the PyTorchJob
backend: the operator (`python -m cpt_operator`, a separate process) creates, for each stage that generates with
vLLM, one AppWrapper around the servers' Job and the stage's PyTorchJob, and for the other stages a plain queued
PyTorchJob. This test plays Kueue (holds each new AppWrapper or job suspended, admits it once the run shows
Queued) and the AppWrapper controller (once admitted: the wrapped Job and PyTorchJob as the controller creates
them, owned by the AppWrapper, and their pods; when the learner is done, every pod of the unit gone and the
AppWrapper Succeeded) and the training operator for the plain jobs. While a unit is held, neither its servers nor
its learner (objects or pods) exist; after admission both do, and the stage proceeds."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import kubernetes
import yaml

from operator_harness import new_bucket, now, wait_for

REPO = Path(__file__).resolve().parents[2]
APPWRAPPERS = ("workload.codeflare.dev", "v1beta2", "appwrappers")
PYTORCHJOBS = ("kubeflow.org", "v1", "pytorchjobs")
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
AW_LABEL = "workload.codeflare.dev/appwrapper"


def _list(world, what, run: str) -> list[dict]:
    return world.co.list_namespaced_custom_object(*what[:2], world.namespace, what[2],
                                                  label_selector=f"cpt.dev/run={run}")["items"]


def _example(world) -> dict:
    body = yaml.safe_load((REPO / "examples" / "cpt-trainjob.yaml").read_text())
    body["metadata"]["namespace"] = world.namespace
    bucket = new_bucket(world.endpoint)
    body["spec"]["storage"].update(uri=f"s3://{bucket}/{body['metadata']['name']}/", endpoint=world.endpoint,
                                   pathStyle=True)
    body["spec"]["forgetting"]["onRegression"] = "alert"  # the fake accuracies drop after task 2
    body["spec"]["rif"]["mode"] = "prefilter"  # a filter stage too: two generating stages per task
    return body


def _credentials_secret(world, name: str) -> None:
    data = {k: base64.b64encode(b"testing").decode() for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    world.core.create_namespaced_secret(world.namespace, {"metadata": {"name": name}, "data": data})


def _run_pods(world, run: str) -> list[dict]:
    return world.core.list_namespaced_pod(world.namespace, label_selector=f"cpt.dev/run={run}").to_dict()["items"]


def _batch_jobs(world, run: str) -> list[dict]:
    return kubernetes.client.BatchV1Api(world.client).list_namespaced_job(
        world.namespace, label_selector=f"cpt.dev/run={run}").to_dict()["items"]


def _deploy(world, aw: dict) -> dict[str, int]:
    """The AppWrapper controller on admission: each component as is, in the AppWrapper's namespace, labelled with
    the AppWrapper's name, controlled by the AppWrapper; then the pods their controllers would make."""
    owner = {"apiVersion": "workload.codeflare.dev/v1beta2", "kind": "AppWrapper", "name": aw["metadata"]["name"],
             "uid": aw["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
    started = {}
    for component in aw["spec"]["components"]:
        obj = component["template"]
        assert "ownerReferences" not in obj["metadata"]
        obj["metadata"]["labels"][AW_LABEL] = aw["metadata"]["name"]
        obj["metadata"]["ownerReferences"] = [owner]
        if obj["kind"] == "Job":
            kubernetes.client.BatchV1Api(world.client).create_namespaced_job(world.namespace, obj)
            pods = [obj["spec"]["template"]] * obj["spec"]["parallelism"]
        else:
            assert obj["kind"] == "PyTorchJob"
            world.co.create_namespaced_custom_object(*PYTORCHJOBS[:2], world.namespace, PYTORCHJOBS[2], obj)
            pods = [spec["template"] for spec in obj["spec"]["pytorchReplicaSpecs"].values()
                    for _ in range(spec["replicas"])]
        for i, template in enumerate(pods):
            labels = dict(template["metadata"]["labels"], **{AW_LABEL: aw["metadata"]["name"]})
            world.core.create_namespaced_pod(world.namespace, {
                "metadata": {"name": f"{obj['metadata']['name']}-{obj['kind'].lower()}-{i}", "labels": labels,
                             "ownerReferences": [dict(owner, kind=obj["kind"], apiVersion=obj["apiVersion"],
                                                      name=obj["metadata"]["name"])]},
                "spec": {"containers": [{"name": "c", "image": "x"}]}})
        started[obj["kind"]] = len(pods)
    return started


def _patch(world, what, name: str, body: dict, status: bool = False) -> None:
    call = world.co.patch_namespaced_custom_object_status if status else world.co.patch_namespaced_custom_object
    call(*what[:2], world.namespace, what[2], name, body)


def test_example_runs_to_the_end_as_appwrappers_through_a_queue(emu_world, tmp_path):
    world = emu_world
    body = _example(world)
    run, queue = body["metadata"]["name"], body["spec"]["queue"]
    _credentials_secret(world, body["spec"]["storage"]["secretRef"])
    world.create(body)
    log = open(tmp_path / "operator.log", "w")
    env = dict(os.environ, CPT_JOB_BACKEND="pytorchjob", CPT_METRICS_PORT="0")
    proc = subprocess.Popen([sys.executable, "-m", "cpt_operator"], env=env, stdout=log, stderr=subprocess.STDOUT)
    units: dict[str, dict[str, int]] = {}  # AppWrapper -> pods started per wrapped kind on admission
    plain: set[str] = set()  # stages that are a queued PyTorchJob of their own
    admitted: set[str] = set()
    finished: set[str] = set()
    seen_held: set[str] = set()
    watched = {f"{run}-1-filter", f"{run}-2-train"}  # held until the run shows Queued; the others admitted at once
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            status = world.status(run)
            if status.get("phase") in ("Succeeded", "Failed"):
                break
            wrapped_names = set()
            for aw in _list(world, APPWRAPPERS, run):
                name = aw["metadata"]["name"]
                wrapped_names.add(name)
                if name in finished:
                    continue
                assert aw["metadata"]["labels"][QUEUE_LABEL] == queue
                if name not in admitted:
                    if not aw["spec"].get("suspend"):  # Kueue's webhook: held until admitted
                        _patch(world, APPWRAPPERS, name, {"spec": {"suspend": True}})
                        continue
                    _patch(world, APPWRAPPERS, name, {"status": {"phase": "Suspended"}}, status=True)
                    if name in watched:
                        if status.get("phase") != "Queued" or name not in (status.get("message") or ""):
                            continue
                        task = next(t for t in status["tasks"] if t.get("job") == name)
                        assert task["phase"] == "Queued"
                        # held: nothing of the stage exists, neither its servers nor its learner
                        # (earlier units' finished components stay until the controller's success TTL)
                        assert _run_pods(world, run) == []
                        assert f"{name}-rollout" not in {j["metadata"]["name"] for j in _batch_jobs(world, run)}
                        assert not [j for j in _list(world, PYTORCHJOBS, run) if j["metadata"]["name"] == name]
                        seen_held.add(name)
                    admitted.add(name)
                    _patch(world, APPWRAPPERS, name, {"spec": {"suspend": False}})  # admitted
                    units[name] = _deploy(world, world.co.get_namespaced_custom_object(
                        *APPWRAPPERS[:2], world.namespace, APPWRAPPERS[2], name))
                    _patch(world, APPWRAPPERS, name, {"status": {"phase": "Running"}}, status=True)
                    continue
                if aw["spec"].get("suspend"):
                    continue
                # both parts run: the servers' Job and the learner's PyTorchJob, as the controller made them
                assert {j["metadata"]["name"] for j in _batch_jobs(world, run)} >= {f"{name}-rollout"}
                assert name in {j["metadata"]["name"] for j in _list(world, PYTORCHJOBS, run)}
                wait_for(lambda: world.status(run).get("phase") == "Running", timeout=10, what="stage Running")
                # the learner ended and stopped its servers: every pod of the unit exited 0, then the controller
                # marks the AppWrapper Succeeded (its components are kept until the success TTL)
                for pod in _run_pods(world, run):
                    world.core.delete_namespaced_pod(pod["metadata"]["name"], world.namespace)
                labels = aw["metadata"]["labels"]
                if labels["cpt.dev/stage"] == "evaluate":
                    world.commit(world.get(run), int(labels["cpt.dev/task-index"]))
                _patch(world, APPWRAPPERS, name, {"status": {"phase": "Succeeded", "conditions": [
                    {"type": "QuotaReserved", "status": "False", "reason": "Succeeded", "message": "done",
                     "lastTransitionTime": now()}]}}, status=True)
                finished.add(name)
            for job in _list(world, PYTORCHJOBS, run):  # plain queued jobs: stages without servers
                name = job["metadata"]["name"]
                if name in wrapped_names or name in finished or AW_LABEL in job["metadata"]["labels"]:
                    continue
                assert job["metadata"]["labels"][QUEUE_LABEL] == queue
                plain.add(name)
                if name not in admitted:
                    if not job["spec"]["runPolicy"].get("suspend"):
                        _patch(world, PYTORCHJOBS, name, {"spec": {"runPolicy": {"suspend": True}}})
                        continue
                    admitted.add(name)
                    _patch(world, PYTORCHJOBS, name, {"spec": {"runPolicy": {"suspend": False}}})
                    continue
                labels = job["metadata"]["labels"]
                if labels["cpt.dev/stage"] == "evaluate":
                    world.commit(world.get(run), int(labels["cpt.dev/task-index"]))
                _patch(world, PYTORCHJOBS, name, {"status": {"conditions": [
                    {"type": "Succeeded", "status": "True", "reason": "done", "message": "done",
                     "lastTransitionTime": now()}], "completionTime": now()}}, status=True)
                finished.add(name)
            time.sleep(0.2)
        status = wait_for(lambda: world.status(run).get("phase") in ("Succeeded", "Failed") and world.status(run),
                          timeout=10, what="the run ends")
        assert status["phase"] == "Succeeded", (status.get("message"), (tmp_path / "operator.log").read_text()[-3000:])
        assert status["completedTasks"] == len(body["spec"]["tasks"]) == 3
        assert seen_held == watched
        # filter and train generate through servers (evaluation uses the hf engine): one unit each, with the
        # learner's ranks and the servers; evaluate stages are plain PyTorchJobs; no Deployment ever exists
        learners, servers = body["spec"]["learner"]["replicas"], body["spec"]["rollout"]["replicas"]
        assert sorted(n.rsplit("-", 1)[1] for n in units) == ["filter"] * 3 + ["train"] * 3
        assert all(started == {"Job": servers, "PyTorchJob": learners} for started in units.values()), units
        assert sorted(n.rsplit("-", 1)[1] for n in plain) == ["evaluate"] * 4
        assert len(admitted) == len(finished) == 4 + 6
        assert world.apps.list_namespaced_deployment(world.namespace).items == []
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
