"""Restarts at random moments and API faults: a run still completes, and no stage ever gets a second job.

Emulator-only: they read the emulator's log of every successful create and inject faults that are not applied.
"""

from __future__ import annotations

import collections
import random
import time

from operator_harness import JOBS, cpt_body, new_bucket, run_to_end, running_operator
from kubeemu import Fault


def _assert_one_job_per_stage(emulator, world, run: str) -> None:
    created = [name for plural, ns, name, uid in emulator.creates(JOBS[2]) if name.startswith(f"{run}-")]
    assert len(created) == len(set(created)), f"a job name was created twice: {created}"
    stages = collections.Counter((j["metadata"]["labels"]["cpt.dev/task-index"], j["metadata"]["labels"]["cpt.dev/stage"],
                                  j["metadata"]["labels"]["cpt.dev/attempt"]) for j in world.jobs(run))
    assert all(n == 1 for n in stages.values()), stages
    attempts = {k[:2] for k in stages}
    assert len(attempts) == len(stages), f"a stage was retried although nothing failed: {sorted(stages)}"


def _progress(status: dict) -> tuple:
    """What a pass moves: the completed count and each task's phase and stage."""
    return status.get("completedTasks"), tuple((t.get("phase"), t.get("stage")) for t in status.get("tasks", []))


def test_twenty_restarts_at_random_points(emulator, emu_world):
    world = emu_world
    rng = random.Random(1234)
    body = cpt_body("restarts", world.endpoint, new_bucket(world.endpoint), tasks=4, method="rif-grpo")
    world.create(body)
    restarts = 0
    # A wall-clock cap, not a pace: on a loaded machine more stops land before a pass, so it takes more restarts.
    deadline = time.monotonic() + 450
    status: dict = {}
    # Restarts in a row after which the status had not moved. On a starved machine an operator can need longer than
    # the longest random stop to finish one pass (a fresh-clone CI once saw 91 restarts and no progress), so each
    # stalled restart lets the next operator live 0.5 s longer (at most 5 s); the stop points stay random.
    stalled = 0
    while time.monotonic() < deadline:
        with running_operator():
            restarts += 1
            # Stop at a random moment: before the first pass, mid-pass, or after some progress.
            time.sleep(rng.choice([0.0, 0.05, 0.15, 0.3, 0.6]) + min(0.5 * stalled, 5.0))
            if rng.random() < 0.7:
                world.play_trainer("restarts")
            time.sleep(rng.uniform(0.0, 0.3))
        before, status = status, world.status("restarts")
        stalled = stalled + 1 if _progress(status) == _progress(before) else 0
        if restarts >= 20 and status.get("phase") == "Succeeded":
            break
        if rng.random() < 0.5:
            world.play_trainer("restarts")  # the world moves on while the operator is down
    else:
        raise AssertionError(f"not finished after {restarts} restarts: {status}")
    assert restarts >= 20
    assert status["completedTasks"] == 4 and len(status["accuracy"]["matrix"]) == 5
    _assert_one_job_per_stage(emulator, world, "restarts")
    assert len(world.jobs("restarts")) == 1 + 4 * 3


def test_api_faults_do_not_stop_a_run(emulator, emu_world, emu_operator):
    world = emu_world
    world.create(cpt_body("faulty", world.endpoint, new_bucket(world.endpoint), tasks=3, method="grpo"))
    emulator.inject(
        Fault(action="create", status=500, times=-1, probability=0.3),
        Fault(action="update", status=500, times=-1, probability=0.2),
        Fault(action="update", status=409, times=-1, probability=0.15),
        Fault(action="delete", status=500, times=-1, probability=0.3),
        Fault(action="list", status=500, times=-1, probability=0.1),
    )
    rng = random.Random(99)
    calls = []

    def chaos() -> None:
        calls.append(1)
        if len(calls) % 3 == 0 or rng.random() < 0.1:  # regular drops, however fast the run is
            emulator.drop_watches()

    status = run_to_end(world, "faulty", timeout=90, step=chaos)
    stats = emulator.call(lambda e: (e.stats.faults_injected, e.stats.watches_dropped))
    emulator.clear_faults()
    assert status["phase"] == "Succeeded", status
    assert status["completedTasks"] == 3
    # the faults really happened (a pass reads children from watch-fed caches now: its requests, and so the
    # faults it meets, are mostly writes, about 25 of them for this run)
    assert stats[0] >= 5 and stats[1] >= 1, stats
    _assert_one_job_per_stage(emulator, world, "faulty")
    # rollout servers of finished tasks were deleted despite failing deletes
    run_to_end(world, "faulty", timeout=10)
    from operator_harness import wait_for
    wait_for(lambda: not {k for k in world.children("faulty") if k[0] == "Deployment"}, timeout=20,
             what="rollout deployments removed")
