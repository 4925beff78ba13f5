"""Where a run stands, derived only from committed results and observed stage jobs (pure).

The current task is the first one not committed; within it, the first stage without a succeeded job. Failed
jobs are retried under new names (`-r<attempt>`) after an exponential backoff, up to spec.retry.limit.

A committed task found damaged with no later task committed is redone from its first stage in a new round
(jobs labelled with it): the finished jobs of earlier rounds stay on the cluster and count for nothing, and
the new round's attempts are numbered after every earlier one (names and checkpoint prefixes stay unique).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Optional

from cpt_core import api
from cpt_core.results import CommittedTask
from cpt_operator.planner.observed import Observed, ObservedJob
from cpt_core.stage import BASE_TASK_NAME, stages_for

# How long a succeeded evaluate job may wait for its commit to become visible in storage before it is retried.
COMMIT_GRACE_SECONDS = 120.0


@dataclass
class Progress:
    """Where the run stands, derived from committed results and jobs."""

    current: Optional[int] = None  # first task index (0 = base) that is not committed
    stage: Optional[str] = None
    job: Optional[ObservedJob] = None  # latest job of the current stage
    attempt: int = 0  # attempt to run (or running) for the current stage
    round: int = 0  # the round of the current task's stages (see the module's docstring)
    first_attempt: int = 0  # the attempt number each stage of this round starts at
    wait_until: Optional[datetime] = None  # retry backoff / commit grace
    failed_reason: Optional[str] = None
    retrying_reason: Optional[str] = None


def task_spec_hash(spec: api.CptSpec, index: int) -> str:
    """What a committed task's checkpoint depends on: model, method, seed and tasks 1..index.

    Hyper-parameters are left out on purpose: changing them applies to the tasks still to come.
    """
    payload = {
        "model": spec.model,
        "method": spec.method,
        "seed": spec.seed,
        "tasks": [t.wire() for t in spec.tasks[:index]],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def task_names(spec: api.CptSpec) -> list[str]:
    return [BASE_TASK_NAME] + [t.name for t in spec.tasks]


def committed_prefix(spec: api.CptSpec, committed: dict[int, CommittedTask]) -> tuple[dict, Optional[str]]:
    """Committed tasks 0..k in order whose spec hash matches; a trained task that changed is refused."""
    out: dict[int, CommittedTask] = {}
    names = task_names(spec)
    for index in range(0, len(spec.tasks) + 1):
        result = committed.get(index)
        if result is None:
            break
        if result.spec_hash != task_spec_hash(spec, index) or result.name != names[index]:
            what = "the base model, method or seed" if index == 0 else f"spec.tasks[{index - 1}] ({result.name!r})"
            return out, (f"{what} changed after it was trained (committed with spec hash {result.spec_hash}, "
                         f"now {task_spec_hash(spec, index)}); trained tasks cannot change: revert the change, "
                         "or create a new ContinualPostTraining (appending tasks is allowed)")
        out[index] = result
    return out, None


def progress_of(spec: api.CptSpec, committed: dict, observed: Observed) -> Progress:
    current = next((i for i in range(len(spec.tasks) + 1) if i not in committed), None)
    progress = Progress(current=current)
    if current is None:
        return progress
    jobs = _round_of(spec, current, [j for j in observed.jobs if j.task_index == current], observed, progress)
    if progress.failed_reason:
        return progress
    retry = spec.retry
    for stage in stages_for(spec, current):
        attempts = sorted((j for j in jobs if j.stage == stage), key=lambda j: j.attempt)
        if any(j.phase == "Succeeded" for j in attempts) and stage != "evaluate":
            continue
        progress.stage = stage
        progress.attempt = progress.first_attempt
        if not attempts:
            return progress
        latest = attempts[-1]
        progress.job, progress.attempt = latest, latest.attempt
        failures = [j for j in attempts if j.phase == "Failed"]
        if latest.phase in ("Pending", "Running"):
            return progress
        if latest.phase == "Succeeded":  # evaluate succeeded, commit not visible yet
            ready = _after(latest.finished_at, COMMIT_GRACE_SECONDS, observed.now)
            if ready > observed.now:
                progress.wait_until = ready
                return progress
            reason = "evaluate succeeded but the task was not committed in storage (no valid manifest)"
        else:
            reason = latest.message or "job failed"
        if len(failures) + (latest.phase == "Succeeded") > retry.limit:
            progress.failed_reason = (f"task {current} ({task_names(spec)[current]}) stage {stage} failed "
                                      f"{latest.attempt - progress.first_attempt + 1} time(s), retry limit "
                                      f"{retry.limit}: {reason}")
            return progress
        delay = retry.backoff_seconds * (2 ** max(len(failures) - 1, 0))
        ready = _after(latest.finished_at, delay, observed.now)
        progress.attempt = latest.attempt + 1
        progress.job = None
        if ready > observed.now:
            progress.wait_until = ready
            progress.retrying_reason = (f"stage {stage} of task {task_names(spec)[current]} failed ({reason}); "
                                        f"attempt {progress.attempt - progress.first_attempt + 1} starts at "
                                        f"{ready.isoformat()}")
        return progress
    return progress


def _round_of(spec: api.CptSpec, index: int, jobs: list[ObservedJob], observed: Observed,
              progress: Progress) -> list[ObservedJob]:
    """The jobs of the task's current round; sets progress.round and first_attempt. A damaged task whose
    latest round finished something and runs nothing gets a new round: its first stage resets the task in
    storage (storage.prepare_task), so no earlier output is reused. At most retry.limit + 1 redos."""
    latest = max((j.round for j in jobs), default=0)
    mine = [j for j in jobs if j.round == latest]
    why = observed.damaged.get(index)
    if why is not None and mine and any(j.phase == "Succeeded" for j in mine) and \
            not any(j.phase in ("Pending", "Running") for j in mine):
        latest, mine = latest + 1, []
        if latest > spec.retry.limit + 1:
            progress.stage = stages_for(spec, index)[0]
            progress.failed_reason = (f"task {index} ({task_names(spec)[index]}) is still damaged after "
                                      f"{latest - 1} redo(s) from its first stage: {why}")
    progress.round = latest
    if mine:
        progress.first_attempt = min(j.attempt for j in mine)
    elif latest:
        progress.first_attempt = 1 + max(j.attempt for j in jobs)
    return mine


def _after(start: Optional[datetime], seconds: float, now: datetime) -> datetime:
    return (start or now) + timedelta(seconds=seconds)


