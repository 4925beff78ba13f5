"""The planner never deletes or regresses on what it cannot see, and never retrains over a later lineage (pure)."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone

from cpt_core.results import CommittedTask
from cpt_core.validation import validate_resource
from cpt_operator.kube.children import render
from cpt_operator.planner import Observed, ObservedJob, plan, task_spec_hash

NOW = datetime(2026, 11, 1, 12, 0, 0, tzinfo=timezone.utc)
RESOURCE = {
    "apiVersion": "cpt.dev/v1alpha1", "kind": "ContinualPostTraining",
    "metadata": {"name": "demo", "namespace": "ml", "uid": "uid-1", "generation": 1},
    "spec": {
        "model": "s3://models/base/", "method": "rif-grpo", "rif": {"mode": "prefilter"},  # filter, train, evaluate
        "tasks": [{"name": n, "train": f"s3://data/{n}/train.jsonl", "eval": f"s3://data/{n}/eval.jsonl"}
                  for n in ("add", "reverse", "sort")],
        "storage": {"uri": "s3://ckpt/demo"},
        "retry": {"limit": 0, "backoffSeconds": 10},
    },
}
ROLLOUT = frozenset({("Deployment", "demo-3-rollout"), ("Service", "demo-3-rollout")})


def _done(resource: dict, upto: int) -> dict[int, CommittedTask]:
    spec = validate_resource(resource).spec
    names = ["base", "add", "reverse", "sort"]
    return {i: CommittedTask(i, names[i], task_spec_hash(spec, i), {"tasks": {"add": 0.5 + i / 10}},
                             checkpoint=None if i == 0 else f"tasks/{i}-{names[i]}/checkpoint")
            for i in range(upto + 1)}


def _cond(status: dict, ctype: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == ctype)


def test_storage_error_keeps_children_and_last_status_even_with_retry_limit_0():
    resource = copy.deepcopy(RESOURCE)
    jobs = (ObservedJob("demo-0-evaluate", 0, "evaluate", 0, "Succeeded", NOW - timedelta(hours=2)),
            ObservedJob("demo-3-filter", 3, "filter", 0, "Running"))
    good = plan(resource, Observed(now=NOW, jobs=jobs, committed=_done(resource, 2)))
    assert good.status["completedTasks"] == 2 and _cond(good.status, "StorageReachable")["status"] == "True"
    resource["status"] = good.status

    later = NOW + timedelta(hours=1)  # long past the commit grace of the base job: the old planner failed here
    held = plan(resource, Observed(now=later, jobs=jobs, storage_error="S3 list: ConnectionClosedError"))
    changes = render(held, resource, ROLLOUT | {("PyTorchJob", "demo-3-filter")})
    assert held.hold and not changes.create and not changes.delete and not held.start
    st = held.status
    assert st["phase"] == "Running" and _cond(st, "Failed")["status"] == "False"
    for key in ("completedTasks", "accuracy", "averageAccuracy", "tasks", "progress", "observedGeneration"):
        assert st.get(key) == good.status.get(key), key
    assert _cond(st, "StorageReachable")["status"] == "False"
    assert [(e.type, e.reason) for e in held.events] == [("Warning", "StorageUnreachable")]

    resource["status"] = st  # the next failing pass: no second event
    again = plan(resource, Observed(now=later, jobs=jobs, storage_error="S3 list: ReadTimeoutError"))
    assert again.events == []
    resource["status"] = again.status
    back = plan(resource, Observed(now=later, jobs=jobs, committed=_done(resource, 2)))
    assert ("Normal", "StorageReachable") in [(e.type, e.reason) for e in back.events]
    assert back.status["completedTasks"] == 2 and not render(back, resource, ROLLOUT).delete


def test_suspend_still_stops_jobs_while_storage_is_down():
    resource = copy.deepcopy(RESOURCE)
    resource["spec"]["suspend"] = True
    held = plan(resource, Observed(now=NOW, jobs=(ObservedJob("demo-1-train", 1, "train", 0, "Running"),),
                                   storage_error="down"))
    assert [(s.job, s.suspended) for s in held.suspend] == [("demo-1-train", True)]
    assert render(held, resource, ()).patch


def test_a_task_lost_under_later_ones_stops_the_run_instead_of_retraining_it():
    resource = copy.deepcopy(RESOURCE)
    done = _done(resource, 3)
    del done[1]  # a lifecycle rule removed a checkpoint shard of task 1: its manifest no longer verifies
    p = plan(resource, Observed(now=NOW, committed=done,
                                damaged={1: "tasks/1-add: tasks/1-add/checkpoint/model.safetensors is missing"}))
    assert p.status["phase"] == "Failed" and not p.start
    failed = _cond(p.status, "Failed")
    assert failed["reason"] == "CommittedTaskDamaged" and "model.safetensors is missing" in failed["message"]
    assert "tasks [2, 3] were trained from it" in failed["message"]
    assert _cond(p.status, "StorageIntact")["status"] == "False"
    assert ("Warning", "CommittedTaskDamaged") in [(e.type, e.reason) for e in p.events]


def test_a_damaged_last_task_is_redone_and_reported():
    resource = copy.deepcopy(RESOURCE)
    p = plan(resource, Observed(now=NOW, committed=_done(resource, 1), damaged={2: "sha256 mismatch"}))
    assert p.status["phase"] == "Running" and [s.job for s in p.start] == ["demo-2-filter"]
    assert _cond(p.status, "StorageIntact")["status"] == "False"


def test_a_foreign_prefix_is_refused_and_nothing_is_touched():
    resource = copy.deepcopy(RESOURCE)
    p = plan(resource, Observed(now=NOW, storage_conflict="s3://ckpt/demo belongs to run other/demo"))
    assert p.hold and not p.start and p.status["phase"] == "Failed"
    assert _cond(p.status, "Failed")["reason"] == "StorageConflict"
    changes = render(p, resource, ROLLOUT)
    assert not changes.create and not changes.delete


def test_suspend_scales_rollout_servers_to_zero_and_resume_brings_them_back():
    resource = copy.deepcopy(RESOURCE)
    resource["spec"]["suspend"] = True
    running = ObservedJob("demo-3-filter", 3, "filter", 0, "Running")
    p = plan(resource, Observed(now=NOW, jobs=(running,), committed=_done(resource, 2)))
    patches = {(r.kind, r.name): body for r, body in render(p, resource, ROLLOUT).patch}
    assert patches[("Deployment", "demo-3-rollout")] == {"spec": {"replicas": 0}}
    assert patches[("PyTorchJob", "demo-3-filter")]["spec"]["runPolicy"]["suspend"] is True
    resource["spec"]["suspend"] = False
    p = plan(resource, Observed(now=NOW, jobs=(running,), committed=_done(resource, 2)))
    patches = {(r.kind, r.name): body for r, body in render(p, resource, ROLLOUT).patch}
    assert patches[("Deployment", "demo-3-rollout")] == {"spec": {"replicas": 1}}


def test_a_refused_change_stops_its_stages_and_keeps_the_last_good_status():
    resource = copy.deepcopy(RESOURCE)
    running = ObservedJob("demo-3-filter", 3, "filter", 0, "Running")
    good = plan(resource, Observed(now=NOW, jobs=(running,), committed=_done(resource, 2)))
    resource["status"] = good.status
    resource["spec"]["tasks"][0]["train"] = "s3://data/add/train-v2.jsonl"  # a trained task changed: refused
    p = plan(resource, Observed(now=NOW, jobs=(running,), committed=_done(RESOURCE, 2)))
    st = p.status
    assert st["phase"] == "Failed" and "running stages are suspended" in st["message"]
    for key in ("completedTasks", "progress", "accuracy", "averageAccuracy"):
        assert st.get(key) == good.status.get(key), key  # not 0/3, AA still shown
    assert [(s.job, s.suspended) for s in p.suspend] == [("demo-3-filter", True)]
    assert ("Deployment", "demo-3-rollout") in {(r.kind, r.name) for r in render(p, resource, ROLLOUT).delete}


def test_an_invalid_edit_of_a_running_run_stops_its_gpus_and_keeps_the_last_good_status():
    resource = copy.deepcopy(RESOURCE)
    running = ObservedJob("demo-3-filter", 3, "filter", 0, "Running")
    good = plan(resource, Observed(now=NOW, jobs=(running,), committed=_done(resource, 2)))
    resource["status"] = good.status
    resource["spec"]["rif"] = {"rollouts": 2, "minCorrect": 5}  # invalid: minCorrect > rollouts
    p = plan(resource, Observed(now=NOW, jobs=(running,)))
    assert not p.valid and p.status["completedTasks"] == 2 and p.status["averageAccuracy"] is not None
    assert "running stages are suspended" in p.status["message"]
    patches = {(r.kind, r.name): body for r, body in render(p, resource, ROLLOUT).patch}
    assert patches[("Deployment", "demo-3-rollout")] == {"spec": {"replicas": 0}}
    assert patches[("PyTorchJob", "demo-3-filter")]["spec"]["runPolicy"]["suspend"] is True


def test_patches_that_change_nothing_send_no_request():
    from cpt_operator.kube.controller.apply import _satisfied

    deployment = {"spec": {"replicas": 0, "template": {}}, "metadata": {"annotations": {"a": "1"}}}
    assert _satisfied(deployment, {"spec": {"replicas": 0}})
    assert not _satisfied(deployment, {"spec": {"replicas": 1}})
    assert _satisfied(deployment, {"metadata": {"annotations": {"b": None}}})
    assert not _satisfied(deployment, {"metadata": {"annotations": {"a": None}}})


def _finished(run: str, index: int, stages: tuple[str, ...], attempt: int = 0, round_: int = 0,
              phase: str = "Succeeded") -> tuple[ObservedJob, ...]:
    suffix = f"-r{attempt}" if attempt else ""
    return tuple(ObservedJob(f"{run}-{index}-{s}{suffix}", index, s, attempt, phase, NOW - timedelta(hours=1),
                             round=round_) for s in stages)


def test_a_damaged_last_task_is_redone_from_its_first_stage_with_its_finished_jobs_still_there():
    """Issue 26: on a cluster the jobs of the task's finished stages stay. They must not count: the redo starts
    at filter (a new round, attempt numbers after every earlier one), not at evaluate on the broken checkpoint."""
    resource = copy.deepcopy(RESOURCE)
    old = _finished("demo", 3, ("filter", "train", "evaluate")) + \
        (ObservedJob("demo-3-train-r1", 3, "train", 1, "Failed", NOW - timedelta(hours=2), "OOM"),)
    seen = Observed(now=NOW, jobs=old, committed=_done(resource, 2), damaged={3: "sha256 mismatch"})
    p = plan(resource, seen)
    assert [(s.job, s.round, s.config.attempt) for s in p.start] == [("demo-3-filter-r2", 1, 2)]
    assert p.status["phase"] == "Running" and _cond(p.status, "StorageIntact")["status"] == "False"
    task = p.status["tasks"][3]
    assert task["stage"] == "filter" and task["attempts"] == 1
    assert any("(attempt 1, redo 1) started as job demo-3-filter-r2" in e.message for e in p.events)
    created = render(p, resource, ())
    job = next(o for o in created.create if o["kind"] == "PyTorchJob")
    assert job["metadata"]["labels"]["cpt.dev/round"] == "1"

    # The redo's filter reset the task in storage (no longer damaged) and succeeded: train of round 1 next,
    # although train of round 0 succeeded; then evaluate of round 1.
    redo = old + _finished("demo", 3, ("filter",), attempt=2, round_=1)
    p = plan(resource, Observed(now=NOW, jobs=redo, committed=_done(resource, 2)))
    assert [(s.job, s.round) for s in p.start] == [("demo-3-train-r2", 1)]
    redo += _finished("demo", 3, ("train",), attempt=2, round_=1)
    p = plan(resource, Observed(now=NOW, jobs=redo, committed=_done(resource, 2)))
    assert [(s.job, s.round) for s in p.start] == [("demo-3-evaluate-r2", 1)]
    redo += _finished("demo", 3, ("evaluate",), attempt=2, round_=1)
    p = plan(resource, Observed(now=NOW, jobs=redo, committed=_done(resource, 3)))
    assert p.status["phase"] == "Succeeded" and not p.start


def test_a_redo_still_running_is_not_redone_again_and_redos_are_bounded():
    resource = copy.deepcopy(RESOURCE)  # retry.limit 0: one redo
    old = _finished("demo", 3, ("filter", "train", "evaluate"))
    running = (ObservedJob("demo-3-filter-r1", 3, "filter", 1, "Pending", round=1),)
    p = plan(resource, Observed(now=NOW, jobs=old + running, committed=_done(resource, 2),
                                damaged={3: "sha256 mismatch"}))
    assert [s.job for s in p.start] == ["demo-3-filter-r1"]  # the same job again (creating it is idempotent)
    assert p.status["phase"] == "Running"
    twice = old + _finished("demo", 3, ("filter", "train", "evaluate"), attempt=1, round_=1)
    p = plan(resource, Observed(now=NOW, jobs=twice, committed=_done(resource, 2), damaged={3: "truncated"}))
    assert not p.start and p.status["phase"] == "Failed"
    assert "still damaged after 1 redo(s)" in p.status["message"] and "truncated" in p.status["message"]
