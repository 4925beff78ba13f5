"""examples/cpt-trainjob.yaml runs through all its tasks on the emulator with the TrainJob backend and a Kueue
queue: the operator (`python -m cpt_operator`, CPT_JOB_BACKEND=trainjob, a separate process) creates TrainJobs
only; this test plays Kueue (holds each new job suspended, admits it once the run shows Queued) and Trainer with
JobSet (once admitted, the pods of every replicated job of the TrainJob's runtime; on completion they go; the job
marked Complete, the evaluate stage committing its results to S3). Each stage is one admission unit: while it is
held no pod of the run exists, learner ranks or rollout servers, and no rollout Deployment ever does."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from operator_harness import new_bucket, now, wait_for

from cpt_core.stage import stages_for
from cpt_core.validation import validate_resource

REPO = Path(__file__).resolve().parents[2]
TRAINJOBS = ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


def _trainjobs(world, run: str) -> list[dict]:
    return world.co.list_namespaced_custom_object(*TRAINJOBS[:2], world.namespace, TRAINJOBS[2],
                                                  label_selector=f"cpt.dev/run={run}")["items"]


def _example(world) -> dict:
    body = yaml.safe_load((REPO / "examples" / "cpt-trainjob.yaml").read_text())
    body["metadata"]["namespace"] = world.namespace
    bucket = new_bucket(world.endpoint)
    body["spec"]["storage"].update(uri=f"s3://{bucket}/{body['metadata']['name']}/", endpoint=world.endpoint,
                                   pathStyle=True)
    # The test's fake accuracies drop after task 2: the example's forgetting guard would pause the run there.
    body["spec"]["forgetting"]["onRegression"] = "alert"
    return body


def _credentials_secret(world, name: str) -> None:
    data = {k: base64.b64encode(b"testing").decode() for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    world.core.create_namespaced_secret(world.namespace, {"metadata": {"name": name}, "data": data})


def _start_pods(world, job: dict) -> dict[str, int]:
    """Trainer + JobSet once a TrainJob is admitted: the pods of each replicated job of its runtime (the chart's
    ClusterTrainingRuntime has the learner's `node` job only; a stage's own TrainingRuntime adds `rollout`)."""
    ref, started = job["spec"]["runtimeRef"], {}
    replicated = [{"name": "node", "template": {"spec": {"template": {"metadata": {"labels": {}}}}}}]
    if ref["kind"] == "TrainingRuntime":
        runtime = world.co.get_namespaced_custom_object("trainer.kubeflow.org", "v1alpha1", world.namespace,
                                                        "trainingruntimes", ref["name"])
        replicated = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    for rj in replicated:
        pod = rj["template"]["spec"]["template"]
        count = job["spec"]["trainer"]["numNodes"] if rj["name"] == "node" else rj["template"]["spec"]["parallelism"]
        labels = dict((pod.get("metadata") or {}).get("labels") or {})
        labels["jobset.sigs.k8s.io/jobset-name"] = job["metadata"]["name"]
        if rj["name"] == "node":  # the runtime patch's labels (the run's, the learner's)
            labels.update({"cpt.dev/run": job["metadata"]["labels"]["cpt.dev/run"],
                           "app.kubernetes.io/component": "learner"})
        for i in range(count):
            world.core.create_namespaced_pod(world.namespace, {
                "metadata": {"name": f"{job['metadata']['name']}-{rj['name']}-0-{i}", "labels": labels},
                "spec": {"containers": [{"name": "c", "image": "x"}]}})
        started[rj["name"]] = count
    return started


def _run_pods(world, run: str) -> list[dict]:
    return world.core.list_namespaced_pod(world.namespace, label_selector=f"cpt.dev/run={run}").to_dict()["items"]


def _patch(world, name: str, body: dict, status: bool = False) -> None:
    call = (world.co.patch_namespaced_custom_object_status if status else world.co.patch_namespaced_custom_object)
    call(*TRAINJOBS[:2], world.namespace, TRAINJOBS[2], name, body)


def test_example_runs_to_the_end_as_trainjobs_through_a_queue(emu_world, tmp_path):
    world = emu_world
    body = _example(world)
    run, queue = body["metadata"]["name"], body["spec"]["queue"]
    _credentials_secret(world, body["spec"]["storage"]["secretRef"])
    world.create(body)
    log = open(tmp_path / "operator.log", "w")
    env = dict(os.environ, CPT_JOB_BACKEND="trainjob", CPT_METRICS_PORT="0")
    proc = subprocess.Popen([sys.executable, "-m", "cpt_operator"], env=env, stdout=log, stderr=subprocess.STDOUT)
    seen_queued: set[str] = set()
    units: dict[str, dict[str, int]] = {}  # job -> pods started per replicated job on admission
    admitted: set[str] = set()
    finished: set[str] = set()
    # Two jobs wait until the run shows Queued (the first one and one mid-run); the others are admitted at once.
    watched = {f"{run}-0-evaluate", f"{run}-2-train"}
    try:
        deadline = time.monotonic() + 300  # ~15 s alone; generous for a loaded 2-core CI machine
        while time.monotonic() < deadline:
            status = world.status(run)
            if status.get("phase") in ("Succeeded", "Failed"):
                break
            for job in _trainjobs(world, run):
                name = job["metadata"]["name"]
                if name in finished:
                    continue
                assert job["metadata"]["labels"][QUEUE_LABEL] == queue
                if name not in admitted:
                    if not job["spec"].get("suspend"):  # Kueue's webhook: held until admitted
                        _patch(world, name, {"spec": {"suspend": True}})
                        continue
                    if name in watched:
                        if status.get("phase") != "Queued" or name not in (status.get("message") or ""):
                            continue
                        condition = next(c for c in status["conditions"] if c["type"] == "Queued")
                        assert condition["status"] == "True" and queue in condition["message"]
                        task = next(t for t in status["tasks"] if t.get("job") == name)
                        assert task["phase"] == "Queued"
                        # held: nothing of the stage runs, neither its learner ranks nor its rollout servers
                        assert _run_pods(world, run) == []
                        seen_queued.add(name)
                    admitted.add(name)
                    _patch(world, name, {"spec": {"suspend": False}})  # admitted
                    units[name] = _start_pods(world, job)
                    continue
                if job["spec"].get("suspend"):
                    continue  # the operator must not be the one to resume a queued job; wait for our admission
                labels = job["metadata"]["labels"]
                for pod in _run_pods(world, run):  # JobSet complete: its pods go, the servers' with the learner's
                    world.core.delete_namespaced_pod(pod["metadata"]["name"], world.namespace)
                if labels["cpt.dev/stage"] == "evaluate":
                    world.commit(world.get(run), int(labels["cpt.dev/task-index"]))
                _patch(world, name, {"status": {"conditions": [
                    {"type": "Complete", "status": "True", "reason": "JobsCompleted", "message": "done",
                     "lastTransitionTime": now()}]}}, status=True)
                finished.add(name)
            time.sleep(0.2)
        status = wait_for(lambda: world.status(run).get("phase") in ("Succeeded", "Failed") and world.status(run),
                          timeout=10, what="the run ends")
        assert status["phase"] == "Succeeded", (status.get("message"), (tmp_path / "operator.log").read_text()[-3000:])
        assert status["completedTasks"] == len(body["spec"]["tasks"]) == 3
        assert next(c for c in status["conditions"] if c["type"] == "Queued")["status"] == "False"
        # base evaluate + the stages of each task, each held by the queue and admitted once
        spec = validate_resource(body).spec
        per_task = len(stages_for(spec, 1))
        assert seen_queued == watched and len(admitted) == len(finished) == 1 + 3 * per_task
        # One unit per stage: the servers start with the learner in the stages that generate (RIF's filter and
        # GRPO's train; evaluation uses the hf engine), never as a Deployment of their own.
        learners = body["spec"]["learner"]["replicas"]
        for name, started in units.items():
            stage = name.rsplit("-", 1)[1]
            servers = {"rollout": body["spec"]["rollout"]["replicas"]} if stage in ("filter", "train") else {}
            assert started == {"node": learners, **servers}, (name, started)
        assert world.apps.list_namespaced_deployment(world.namespace).items == []
        pytorchjobs = world.co.list_namespaced_custom_object("kubeflow.org", "v1", world.namespace, "pytorchjobs")
        assert pytorchjobs["items"] == []
        queued_events = [e for e in world.events_with(run, "Queued") if e["reason"] == "Queued"]
        assert queued_events, "a Queued transition event"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_the_other_kind_refused_holds_nothing_back(emu_world, emulator, tmp_path):
    """With the TrainJob backend the operator also watches PyTorchJobs (never creates them), so that a switch of
    backend never runs a stage twice (tests/operator/test_backend_switch.py). A cluster whose RBAC does not grant
    them (a hand-written Role) answers 403: that stream is retried in the background and holds no pass back."""
    from kubeemu.faults import Fault

    world = emu_world
    emulator.inject(Fault(plural="pytorchjobs", status=403, times=-1,
                          agents=("kopf/", "cpt-operator/", "cpt-operator-watch/")))
    body = _example(world)
    _credentials_secret(world, body["spec"]["storage"]["secretRef"])
    world.create(body)
    env = dict(os.environ, CPT_JOB_BACKEND="trainjob", CPT_METRICS_PORT="0")
    with open(tmp_path / "operator.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "cpt_operator"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: _trainjobs(world, body["metadata"]["name"]), timeout=90, what="the first TrainJob")
        finally:
            proc.terminate()
            proc.wait(20)
    assert emulator.call(lambda e: e.stats.faults_injected) >= 1  # it did ask, and was refused
    assert not any(plural == "pytorchjobs" for plural, *_ in emulator.call(lambda e: list(e.stats.creates)))
    assert "watching PyTorchJob" in (tmp_path / "operator.log").read_text()  # the refusal is logged
