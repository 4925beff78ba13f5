"""Pods the cluster refuses (Pod Security admission, a quota) surface on the run, not as a silent Pending.

Through the running operator on the emulator: the job controller's FailedCreate event on a stage job that stays
Pending, and a rollout Deployment's ReplicaFailure condition, each become condition PodsRejected (with the
admission message), the status message and a Warning event; and go away when the pods are created after all.
"""

from __future__ import annotations

import time
import uuid

import pytest
from operator_harness import JOB_KIND, cpt_body, new_bucket, now, running_operator, wait_for

PSS = ('pods "{pod}" is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false '
       '(container "learner" must set securityContext.allowPrivilegeEscalation=false)')


def _condition(world, run, ctype):
    return next((c for c in world.status(run).get("conditions") or [] if c["type"] == ctype), None)


def _warning_event(world, kind: str, name: str, uid: str, reason: str, message: str) -> None:
    """What the job controller (Kubeflow's for a PyTorchJob, the batch Job controller under a TrainJob) posts."""
    stamp = now()
    world.core.create_namespaced_event(world.namespace, {
        "metadata": {"name": f"{name}.{uuid.uuid4().hex[:8]}"},
        "involvedObject": {"kind": kind, "name": name, "namespace": world.namespace, "uid": uid},
        "type": "Warning", "reason": reason, "message": message, "count": 1,
        "firstTimestamp": stamp, "lastTimestamp": stamp, "source": {"component": "job-controller"}})


@pytest.fixture
def quick_admission(world, monkeypatch):
    """Looks after 1 s; no storage resync in the test's time (600 s, the default): a refused job sends no event,
    so only the job's first sight and the sweep can bring the refusal to the run."""
    monkeypatch.setenv("CPT_ADMISSION_GRACE", "1")
    monkeypatch.setenv("CPT_RECONCILE_INTERVAL", "600")
    with running_operator() as runner:
        yield runner


def test_refused_job_pods_become_a_condition_then_clear(world, quick_admission):
    world.create(cpt_body("refused", world.endpoint, new_bucket(world.endpoint), tasks=1))
    job = wait_for(lambda: world.jobs("refused"), what="the evaluate job")[0]
    name, uid = job["metadata"]["name"], job["metadata"]["uid"]
    if JOB_KIND == "PyTorchJob":  # Kubeflow's job controller: on the PyTorchJob itself
        _warning_event(world, JOB_KIND, name, uid, "FailedCreatePod",
                       "Error creating: " + PSS.format(pod=f"{name}-worker-0"))
    else:  # a TrainJob's JobSet makes Jobs <trainjob>-node-<i>; the batch Job controller reports on those
        _warning_event(world, "Job", f"{name}-node-0", str(uuid.uuid4()), "FailedCreate",
                       "Error creating: " + PSS.format(pod=f"{name}-node-0-0-abcde"))
    cond = wait_for(lambda: (_condition(world, "refused", "PodsRejected") or {}).get("status") == "True"
                    and _condition(world, "refused", "PodsRejected"), timeout=30, what="PodsRejected=True")
    assert cond["reason"] == "AdmissionRejected"
    assert name in cond["message"] and "violates PodSecurity" in cond["message"]
    status = world.status("refused")
    assert status["phase"] == "Running" and "refused pods of" in status["message"]
    progressing = _condition(world, "refused", "Progressing")
    assert progressing["reason"] == "PodsRejected"
    warnings = [e for e in world.events_with("refused", "PodsRejected") if e["type"] == "Warning" and e["reason"] == "PodsRejected"]
    assert len(warnings) == 1 and "violates PodSecurity" in warnings[0]["message"]

    world.start_job(name)  # the namespace's policy was fixed: the pods exist now
    wait_for(lambda: (_condition(world, "refused", "PodsRejected") or {}).get("status") == "False",
             timeout=30, what="PodsRejected=False once the job runs")
    assert "refused pods" not in world.status("refused")["message"]


def test_refused_rollout_pods_become_a_condition(world, quick_admission):
    world.create(cpt_body("rfroll", world.endpoint, new_bucket(world.endpoint), tasks=2, method="grpo"))
    wait_for(lambda: world.jobs("rfroll"), what="base job")
    world.play_trainer("rfroll")
    wait_for(lambda: ("Deployment", "rfroll-1-rollout") in world.children("rfroll"), what="rollout Deployment")
    message = PSS.format(pod="rfroll-1-rollout-5d9f7-x2x4q").replace('"learner"', '"vllm"')
    world.apps.patch_namespaced_deployment_status("rfroll-1-rollout", world.namespace, {"status": {"conditions": [
        {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": message,
         "lastTransitionTime": now(), "lastUpdateTime": now()}]}})
    cond = wait_for(lambda: (_condition(world, "rfroll", "PodsRejected") or {}).get("status") == "True"
                    and _condition(world, "rfroll", "PodsRejected"), timeout=30, what="PodsRejected=True")
    assert "rfroll-1-rollout" in cond["message"] and 'container "vllm"' in cond["message"]
    assert [e for e in world.events_with("rfroll", "PodsRejected") if e["reason"] == "PodsRejected"]


def test_events_are_listed_only_for_jobs_that_stay_pending(emu_world, emulator, monkeypatch):
    """Running jobs cost no event listing (the namespace's busiest kind is never read for nothing); a job that
    stays Pending is looked at after the grace, then after growing gaps, not on every pass."""
    world = emu_world
    monkeypatch.setenv("CPT_ADMISSION_GRACE", "1")
    stats = emulator.emulator.stats
    with running_operator():
        world.create(cpt_body("calm", world.endpoint, new_bucket(world.endpoint), tasks=1))
        job = wait_for(lambda: world.jobs("calm"), what="job")[0]
        world.start_job(job["metadata"]["name"])
        wait_for(lambda: world.status("calm").get("phase") == "Running", what="Running")
        world.wait_for_passes(6)
        assert [entry for entry in stats.lists if entry[0] == "events"] == []

        world.create(cpt_body("stuck", world.endpoint, new_bucket(world.endpoint), tasks=1))
        wait_for(lambda: world.jobs("stuck"), what="job")
        time.sleep(8)  # looks at ~1 s, ~3 s, ~7 s after creation (gaps double)
        looks = [entry for entry in stats.lists if entry[0] == "events"]
        assert 2 <= len(looks) <= 4, looks
        assert all(ns == world.namespace and selector == "type=Warning" for _, ns, selector in looks)
        assert _condition(world, "stuck", "PodsRejected") is None  # nothing refused: nothing said
