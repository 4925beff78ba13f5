"""Faults the operator really meets, counted where they hit it, with the figures printed (docs/operator.md).

- The operator as a separate process, SIGKILLed at random moments of a 5-task run (mid-pass, between writes).
- API faults of the "applied, reply lost" kind beside rejected ones, and watches that end in 410 Expired;
  only requests of the operator (its User-Agent, kopf's) are faulted and counted, never the test's own.
- A fake trainer that marks evaluate Succeeded before its commit is visible (the commit-grace path).

CPT_SIGKILLS (default 12) sets the number of kills; `CPT_SIGKILLS=50 pytest -s -k sigkill tests/operator` is the
figure in docs/operator.md.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from kubeemu import Fault
from operator_harness import cpt_body, new_bucket, run_to_end, wait_for

OPERATOR_AGENTS = ("cpt-operator", "kopf")


def _stage_counts(emulator, world, run: str) -> tuple[int, int]:
    """(duplicate job creations, stages with more than one attempt) for a run in which nothing failed."""
    created = [name for plural, ns, name, uid in emulator.creates("pytorchjobs") if name.startswith(f"{run}-")]
    stages = collections.Counter((j["metadata"]["labels"]["cpt.dev/task-index"],
                                  j["metadata"]["labels"]["cpt.dev/stage"]) for j in world.jobs(run))
    return len(created) - len(set(created)), sum(1 for n in stages.values() if n > 1)


def _lost(world, body: dict, tasks: int) -> int:
    """Tasks committed in storage that the final status does not count (or the other way round)."""
    store = world.store(body)
    committed = {k.split("/")[1] for k in store.list("tasks") if k.endswith("/manifest.json")}
    return abs(len(committed) - (tasks + 1)) + abs(world.status(body["metadata"]["name"])["completedTasks"] - tasks)


def _print(capsys, line: str) -> None:
    with capsys.disabled():
        print(f"\n[faults] {line}")


def test_operator_sigkilled_at_random_points(emulator, emu_world, tmp_path: Path, capsys):
    world, run, tasks = emu_world, "killed", 5
    kills_wanted = int(os.environ.get("CPT_SIGKILLS", "12"))
    body = cpt_body(run, world.endpoint, new_bucket(world.endpoint), tasks=tasks, method="rif-grpo")
    world.create(body)
    rng = random.Random(14)
    log = open(tmp_path / "operator.log", "wb")
    cmd = [sys.executable, "-m", "kopf", "run", "-A", "--standalone", "-m", "cpt_operator.kube.kopf_adapter"]
    kills, started = 0, time.monotonic()
    status: dict = {}
    while time.monotonic() - started < 60 + 8 * kills_wanted:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        try:
            # Let it start (imports take ~1.5 s), then kill it at a random moment of its passes.
            time.sleep(rng.uniform(1.0, 3.0) if kills < kills_wanted else 0)
            if kills >= kills_wanted:
                status = run_to_end(world, run, timeout=120, commit_late=True)
                break
            for _ in range(rng.randint(0, 3)):
                world.play_trainer(run, commit_late=rng.random() < 0.5)
                time.sleep(rng.uniform(0.0, 0.4))
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1 if kills < kills_wanted or status.get("phase") != "Succeeded" else 0
            proc.wait()
        if rng.random() < 0.3:
            world.play_trainer(run)  # the world moves on while no operator runs
    log.close()
    duplicates, retried = _stage_counts(emulator, world, run)
    lost = _lost(world, body, tasks)
    _print(capsys, f"SIGKILL: {kills} kills of the operator process during a {tasks}-task run: "
                   f"phase {status.get('phase')}, duplicate stage jobs {duplicates}, stages run twice {retried}, "
                   f"lost committed tasks {lost}, {time.monotonic() - started:.0f} s")
    assert status.get("phase") == "Succeeded", (tmp_path / "operator.log").read_bytes()[-3000:]
    assert kills >= kills_wanted and duplicates == 0 and retried == 0 and lost == 0
    assert len(world.jobs(run)) == 1 + tasks * 3


def test_applied_reply_lost_and_expired_watches(emulator, emu_world, emu_operator, capsys):
    world, run, tasks = emu_world, "lossy", 3
    body = cpt_body(run, world.endpoint, new_bucket(world.endpoint), tasks=tasks, method="grpo")
    world.create(body)
    emulator.inject(
        Fault(action="create", status=504, times=-1, probability=0.3, applied=True, agents=OPERATOR_AGENTS),
        Fault(action="update", status=504, times=-1, probability=0.2, applied=True, agents=OPERATOR_AGENTS),
        Fault(action="delete", status=504, times=-1, probability=0.3, applied=True, agents=OPERATOR_AGENTS),
        Fault(action="create", status=500, times=-1, probability=0.1, agents=OPERATOR_AGENTS),
        Fault(action="list", status=500, times=-1, probability=0.05, agents=OPERATOR_AGENTS),
    )
    rounds = []

    def chaos() -> None:
        rounds.append(1)
        if len(rounds) % 4 == 0:
            emulator.call(lambda e: e.expire_watches())

    status = run_to_end(world, run, timeout=120, step=chaos, commit_late=True)
    injected, applied, expired = emulator.call(
        lambda e: (e.stats.faults_injected, e.stats.faults_applied, e.stats.watches_expired))
    emulator.clear_faults()
    duplicates, retried = _stage_counts(emulator, world, run)
    lost = _lost(world, body, tasks)
    _print(capsys, f"API: {injected} faults on the operator's requests ({applied} applied with the reply lost), "
                   f"{expired} watches answered 410 Expired, commits visible after the job's Succeeded: "
                   f"phase {status['phase']}, duplicate stage jobs {duplicates}, stages run twice {retried}, "
                   f"lost committed tasks {lost}")
    assert status["phase"] == "Succeeded" and status["completedTasks"] == tasks
    assert applied >= 5 and expired >= 1, (injected, applied, expired)
    assert duplicates == 0 and retried == 0 and lost == 0
    wait_for(lambda: not {k for k in world.children(run) if k[0] == "Deployment"}, timeout=30,
             what="rollout servers of finished tasks removed despite lost replies")
