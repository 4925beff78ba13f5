"""A damaged last task is redone from its first stage on a cluster, where the jobs of its finished stages stay
(issue 26: only evaluate was retried, on the same broken checkpoint, and the run ended Failed).

The operator runs against the emulator and moto; the test plays the training operator and the trainer as a real
stage would: the task's first stage resets the task in storage (storage.prepare_task), evaluate commits, and a
commit that storage refuses fails the job."""

from __future__ import annotations

import time

from operator_harness import cpt_body, new_bucket, wait_for

from cpt_core.stage import stages_for
from cpt_core.storage import load_task, prepare_task
from cpt_core.storage.errors import StorageError
from cpt_core.storage.manifest import mark_damaged
from cpt_core.validation import validate_resource
from cpt_operator import planner


def _play(world, run: str) -> None:
    """Finish every running job of the run the way the real stages would end on this storage."""
    resource = world.get(run)
    spec = validate_resource(resource, "cluster").spec
    names = planner.task_names(spec)
    for job in world.jobs(run):
        if any(c["type"] in ("Succeeded", "Failed") and c["status"] == "True"
               for c in (job.get("status") or {}).get("conditions") or []):
            continue
        labels = job["metadata"]["labels"]
        index, stage = int(labels["cpt.dev/task-index"]), labels["cpt.dev/stage"]
        store = world.store(resource)
        if stage == stages_for(spec, index)[0]:
            prepare_task(store, index, names[index], planner.task_spec_hash(spec, index))
        if stage == "evaluate":
            try:
                world.commit(resource, index)
            except StorageError as exc:  # what the real evaluate exits with
                world.finish_job(job["metadata"]["name"], "Failed", f"commit refused: {exc}")
                continue
        world.finish_job(job["metadata"]["name"])


def _run_to_end(world, run: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resource = world.get(run)
        status = resource.get("status") or {}
        if status.get("observedGeneration") == resource["metadata"].get("generation") and \
                status.get("phase") in ("Succeeded", "Failed"):
            return status
        _play(world, run)
        time.sleep(0.1)
    raise AssertionError(f"{run} did not finish in {timeout}s: {world.status(run)}")


def test_a_damaged_last_task_is_redone_from_its_first_stage_and_the_run_succeeds(emu_world, emu_operator):
    world = emu_world
    body = cpt_body("mend", world.endpoint, new_bucket(world.endpoint), tasks=1, method="rif-grpo")
    world.create(body)
    assert _run_to_end(world, "mend")["phase"] == "Succeeded"
    first = {j["metadata"]["name"] for j in world.jobs("mend")}
    assert first == {"mend-0-evaluate", "mend-1-filter", "mend-1-train", "mend-1-evaluate"}

    store = world.store(body)
    mark_damaged(store, load_task(store, 1, "t1"), "checkpoint sha256 mismatch")  # what a later stage records
    wait_for(lambda: world.status("mend").get("phase") == "Running", what="the damaged task reported and redone")

    status = _run_to_end(world, "mend")
    assert status["phase"] == "Succeeded", status.get("message")
    jobs = {j["metadata"]["name"]: j for j in world.jobs("mend")}
    redo = sorted(set(jobs) - first)
    assert redo == ["mend-1-evaluate-r1", "mend-1-filter-r1", "mend-1-train-r1"], redo
    assert {jobs[name]["metadata"]["labels"].get("cpt.dev/round") for name in redo} == {"1"}
    assert load_task(store, 1, "t1") is not None  # committed again, undamaged
    intact = next(c for c in status["conditions"] if c["type"] == "StorageIntact")
    assert intact["status"] == "True"
