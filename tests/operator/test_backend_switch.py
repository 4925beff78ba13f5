"""Changing CPT_JOB_BACKEND (PyTorchJob <-> TrainJob) while a run is in flight never runs a stage twice
(issue 26: the new kind was created beside the running job of the same stage).

The operator runs as a separate process with one backend, is SIGKILLed while a stage job runs and started again
with the other backend. It must see the old kind's job: wait for it (suspend and resume it meanwhile), keep its
outcome (a failure counts as an attempt: the retry is the next attempt, of the new kind), and go on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from operator_harness import cpt_body, new_bucket, now, wait_for

from cpt_operator.kube import jobs

DONE = {"PyTorchJob": {"Succeeded": "Succeeded", "Failed": "Failed"},
        "TrainJob": {"Succeeded": "Complete", "Failed": "Failed"}}


def _start(backend: str, log) -> subprocess.Popen:
    env = dict(os.environ, CPT_JOB_BACKEND=backend, CPT_METRICS_PORT="0")
    return subprocess.Popen([sys.executable, "-m", "cpt_operator"], env=env, stdout=log, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(20)


def _jobs(world, run: str) -> list[tuple[str, dict]]:
    out = []
    for backend in jobs.BACKENDS.values():
        group, version = backend.api_version.split("/")
        items = world.co.list_namespaced_custom_object(group, version, world.namespace, backend.plural,
                                                       label_selector=f"cpt.dev/run={run}")["items"]
        out += [(backend.kind, item) for item in items]
    return out


def _finish(world, kind: str, job: dict, phase: str, message: str = "") -> None:
    backend = jobs.BY_KIND[kind]
    group, version = backend.api_version.split("/")
    stamp = now()
    status = {"conditions": [{"type": DONE[kind][phase], "status": "True", "reason": phase, "message": message,
                              "lastTransitionTime": stamp}], "completionTime": stamp}
    world.co.patch_namespaced_custom_object_status(group, version, world.namespace, backend.plural,
                                                   job["metadata"]["name"], {"status": status})


def _finished(kind: str, job: dict) -> bool:
    return jobs.BY_KIND[kind].phase(job)[0] in ("Succeeded", "Failed")


def _play(world, run: str, fail: set[str] = frozenset()) -> None:
    """The job controllers and the trainer: finish every running job (either kind), evaluate commits."""
    for kind, job in _jobs(world, run):
        if _finished(kind, job) or jobs.is_suspended(jobs.BY_KIND[kind], job):
            continue
        name, labels = job["metadata"]["name"], job["metadata"]["labels"]
        if name in fail:
            _finish(world, kind, job, "Failed", "node lost")
            continue
        if labels["cpt.dev/stage"] == "evaluate":
            world.commit(world.get(run), int(labels["cpt.dev/task-index"]))
        _finish(world, kind, job, "Succeeded")


def _one_job_per_attempt(world, run: str) -> Counter:
    seen = Counter((j["metadata"]["labels"]["cpt.dev/task-index"], j["metadata"]["labels"]["cpt.dev/stage"],
                    j["metadata"]["labels"].get("cpt.dev/attempt", "0")) for _, j in _jobs(world, run))
    twice = {k: n for k, n in seen.items() if n > 1}
    assert not twice, f"stages run twice: {twice}"
    return seen


@pytest.mark.parametrize("before, after", [("pytorchjob", "trainjob"), ("trainjob", "pytorchjob")])
def test_a_backend_switch_mid_run_never_runs_a_stage_twice(emu_world, tmp_path, before, after):
    world = emu_world
    run = "swap"
    world.create(cpt_body(run, world.endpoint, new_bucket(world.endpoint), tasks=2, method="sft"))
    old_kind, new_kind = jobs.BACKENDS[before].kind, jobs.BACKENDS[after].kind
    with open(tmp_path / "operator.log", "w") as log:
        proc = _start(before, log)
        try:
            wait_for(lambda: _jobs(world, run), timeout=90, what="the base evaluate job")

            def up_to_task_2() -> bool:  # the base row and task 1 run as the old kind; task 2's train is left running
                if any(j["metadata"]["name"] == f"{run}-2-train" for _, j in _jobs(world, run)):
                    return True
                _play(world, run)
                return False
            wait_for(up_to_task_2, timeout=60, interval=0.2, what="task 2's train job")
        finally:
            _stop(proc)
        assert {k for k, _ in _jobs(world, run)} == {old_kind}

        proc = _start(after, log)
        try:
            # The new operator sees the old kind's running job: suspending the run suspends it, resuming resumes it.
            world.patch_spec(run, {"suspend": True})
            wait_for(lambda: all(jobs.is_suspended(jobs.BY_KIND[k], j) for k, j in _jobs(world, run)
                                 if not _finished(k, j)), timeout=90, what="the old kind's job suspended")
            world.patch_spec(run, {"suspend": False})
            wait_for(lambda: not any(jobs.is_suspended(jobs.BY_KIND[k], j) for k, j in _jobs(world, run)),
                     what="resumed")
            _one_job_per_attempt(world, run)
            # Its outcome counts: it fails, the retry is attempt 1 of the new kind.
            _play(world, run, fail={f"{run}-2-train"})
            wait_for(lambda: [j for k, j in _jobs(world, run) if j["metadata"]["name"] == f"{run}-2-train-r1"],
                     what="the retry")
            deadline = time.monotonic() + 60
            while world.status(run).get("phase") not in ("Succeeded", "Failed") and time.monotonic() < deadline:
                _play(world, run)
                time.sleep(0.2)
        finally:
            _stop(proc)
    status = world.status(run)
    assert status["phase"] == "Succeeded", (status.get("message"), (tmp_path / "operator.log").read_text()[-3000:])
    kinds = {j["metadata"]["name"]: k for k, j in _jobs(world, run)}
    assert kinds == {f"{run}-0-evaluate": old_kind, f"{run}-1-train": old_kind, f"{run}-1-evaluate": old_kind,
                     f"{run}-2-train": old_kind, f"{run}-2-train-r1": new_kind, f"{run}-2-evaluate": new_kind}
    _one_job_per_attempt(world, run)
