"""The pure planner: (resource, observed world) -> desired children, deletions, status and events.

No I/O, no kopf, no clock (time comes in `Observed.now`). Both executors call it: the operator with what it
observes through the Kubernetes API and storage, `cpt run` with local processes. Status is recomputed from the
observation on every call (kubebuilder style); the previous status is only read to keep condition transition
times and to decide which events are new.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Optional

from cpt_trainer import forgetting as fm

from . import api, manifests
from .conditions import build_conditions
from .defaults import PlanDefaults
from .observed import CommittedResult, Observed, ObservedJob
from .stage import BASE_TASK_NAME, StageConfig, stages_for
from .validation import Mode, SpecError, validate_resource

ACK_REGRESSION_ANNOTATION = "cpt.dev/accept-regression-after-task"
# How long a succeeded evaluate job may wait for its commit to become visible in storage before it is retried.
COMMIT_GRACE_SECONDS = 120.0


@dataclass(frozen=True)
class ChildRef:
    api_version: str
    kind: str
    name: str


@dataclass(frozen=True)
class PlanEvent:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Plan:
    status: dict
    create: list[dict] = field(default_factory=list)
    patch: list[tuple[ChildRef, dict]] = field(default_factory=list)  # merge patches for existing children
    delete: list[ChildRef] = field(default_factory=list)
    events: list[PlanEvent] = field(default_factory=list)
    requeue_after: Optional[float] = None
    valid: bool = True
    stage_configs: dict[str, StageConfig] = field(default_factory=dict)  # job name -> config (local executor)


@dataclass
class _Progress:
    """Where the run stands, derived from committed results and jobs."""

    current: Optional[int] = None  # first task index (0 = base) that is not committed
    stage: Optional[str] = None
    job: Optional[ObservedJob] = None  # latest job of the current stage
    attempt: int = 0  # attempt to run (or running) for the current stage
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


def plan(resource: dict, observed: Observed, defaults: PlanDefaults = PlanDefaults(),
         mode: Mode = "cluster") -> Plan:
    """Compute what should exist and what the status is. Never raises on user input."""
    old = resource.get("status") or {}
    generation = resource.get("metadata", {}).get("generation")
    try:
        cpt = validate_resource(resource, mode)
    except SpecError as exc:
        return _invalid_plan(old, generation, observed.now, exc)
    spec = cpt.spec
    run = cpt.metadata.name
    committed, changed = _committed_prefix(spec, observed.committed)
    matrix, general = _matrices(spec, committed)
    last_row = max(committed) if committed else None
    regressions = _regressions(spec, matrix, last_row, resource)

    progress = _progress(spec, committed, observed)
    plan_ = Plan(status={})
    total = len(spec.tasks)
    completed = len([i for i in committed if i >= 1])
    paused = bool(regressions) and spec.forgetting.on_regression == "pause" and progress.current is not None
    if changed:
        phase, reason, message = "Failed", "TrainedTaskChanged", changed
    elif progress.failed_reason:
        phase, reason, message = "Failed", "RetriesExhausted", progress.failed_reason
    elif progress.current is None:
        phase, reason, message = "Succeeded", "AllTasksCommitted", f"all {total} tasks trained and evaluated"
    elif spec.suspend:
        phase, reason, message = "Suspended", "UserSuspended", "spec.suspend is true"
    elif paused:
        phase, reason, message = "Suspended", "ForgettingRegression", _regression_message(spec, regressions, last_row)
    elif observed.storage_error:
        phase, reason, message = (old.get("phase") or "Pending"), "StorageUnavailable", observed.storage_error
    else:
        phase = "Running" if (committed or observed.jobs) or progress.stage else "Pending"
        reason, message = "StageRunning", _stage_message(spec, progress)
        if progress.retrying_reason:
            reason, message = "RetryBackoff", progress.retrying_reason
        if phase == "Pending":
            phase = "Running"

    active = phase == "Running" and reason in ("StageRunning", "RetryBackoff")
    if active:
        _desired_children(plan_, resource, spec, run, progress, observed, defaults, mode)
    _rollout_cleanup(plan_, run, spec, committed, observed, progress, keep=phase in ("Running", "Suspended"))
    _suspension_patches(plan_, spec, observed, suspend=phase == "Suspended")
    if progress.wait_until is not None and phase == "Running":
        plan_.requeue_after = max(0.0, (progress.wait_until - observed.now).total_seconds())

    summary = fm.summary(matrix, general) if committed else {}
    status = api.CptStatus(
        phase=phase,
        current_task=None if progress.current is None else task_names(spec)[progress.current],
        completed_tasks=completed,
        total_tasks=total,
        progress=f"{completed}/{total}",
        observed_generation=generation,
        tasks=_task_statuses(spec, run, committed, observed, progress),
        accuracy=api.AccuracyMatrix(tasks=[t.name for t in spec.tasks], matrix=matrix),
        general=api.GeneralScores(benchmarks=[b.name for b in spec.general], matrix=general),
        average_accuracy=_round(summary.get("average_accuracy")),
        backward_transfer=_round(summary.get("backward_transfer")),
        forgetting=_round(summary.get("forgetting")),
        plasticity=_round(summary.get("plasticity")),
        message=message,
    ).wire()
    status["conditions"] = build_conditions(
        old.get("conditions") or [], observed.now, generation,
        phase=phase, reason=reason, message=message, valid=True, spec_problem=changed,
        regression=_regression_message(spec, regressions, last_row) if regressions else None,
    )
    plan_.status = status
    plan_.events = _events(old, status, plan_, observed)
    return plan_


# ------------------------------------------------------------------------------------------- progress


def _committed_prefix(spec: api.CptSpec, committed: dict[int, CommittedResult]) -> tuple[dict, Optional[str]]:
    """Committed tasks 0..k in order whose spec hash matches; a trained task that changed is refused."""
    out: dict[int, CommittedResult] = {}
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


def _progress(spec: api.CptSpec, committed: dict, observed: Observed) -> _Progress:
    current = next((i for i in range(len(spec.tasks) + 1) if i not in committed), None)
    progress = _Progress(current=current)
    if current is None:
        return progress
    jobs = [j for j in observed.jobs if j.task_index == current]
    retry = spec.retry
    for stage in stages_for(spec.method, current):
        attempts = sorted((j for j in jobs if j.stage == stage), key=lambda j: j.attempt)
        if any(j.phase == "Succeeded" for j in attempts) and stage != "evaluate":
            continue
        progress.stage = stage
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
                                      f"{latest.attempt + 1} time(s), retry limit {retry.limit}: {reason}")
            return progress
        delay = retry.backoff_seconds * (2 ** max(len(failures) - 1, 0))
        ready = _after(latest.finished_at, delay, observed.now)
        progress.attempt = latest.attempt + 1
        if ready > observed.now:
            progress.wait_until = ready
            progress.retrying_reason = (f"stage {stage} of task {task_names(spec)[current]} failed ({reason}); "
                                        f"attempt {progress.attempt + 1} starts at {ready.isoformat()}")
            progress.job = None
        else:
            progress.job = None
        return progress
    return progress


def _after(start: Optional[datetime], seconds: float, now: datetime) -> datetime:
    from datetime import timedelta

    return (start or now) + timedelta(seconds=seconds)


def _desired_children(plan_: Plan, resource: dict, spec: api.CptSpec, run: str, progress: _Progress,
                      observed: Observed, defaults: PlanDefaults, mode: Mode) -> None:
    index, stage = progress.current, progress.stage
    if index is None or stage is None:
        return
    rollout_url = None
    if mode == "cluster" and _uses_rollout_servers(spec, index):
        model_uri = _previous_checkpoint_uri(spec, index)
        plan_.create.append(manifests.rollout_deployment(resource, run, index, model_uri, spec, defaults))
        plan_.create.append(manifests.rollout_service(resource, run, index, defaults))
        rollout_url = manifests.rollout_url(resource, run, index, defaults)
    if progress.wait_until is not None:
        return  # backoff or commit grace: no new job yet
    name = manifests.job_name(run, index, stage, progress.attempt)
    cfg = StageConfig(run=run, namespace=resource["metadata"].get("namespace", "default"), stage=stage,
                      task_index=index, attempt=progress.attempt, spec=spec,
                      spec_hash=task_spec_hash(spec, index), rollout_url=rollout_url)
    plan_.stage_configs[name] = cfg
    plan_.create.append(manifests.stage_configmap(resource, name, cfg))
    plan_.create.append(manifests.pytorchjob(resource, name, cfg, defaults))


def _uses_rollout_servers(spec: api.CptSpec, index: int) -> bool:
    return index >= 1 and spec.method in ("grpo", "rif-grpo") and spec.rollout.engine == "vllm"


def _previous_checkpoint_uri(spec: api.CptSpec, index: int) -> str:
    if index <= 1:
        return spec.model
    from cpt_trainer.storage.layout import CHECKPOINT, task_key

    prev = spec.tasks[index - 2].name
    return spec.storage.uri.rstrip("/") + "/" + task_key(index - 1, prev, CHECKPOINT)


def _rollout_cleanup(plan_: Plan, run: str, spec: api.CptSpec, committed: dict, observed: Observed,
                     progress: _Progress, keep: bool) -> None:
    """Rollout servers hold GPUs: remove them once their task is committed (or the run is over)."""
    for kind, name in sorted(observed.children):
        if kind not in ("Deployment", "Service"):
            continue
        for index in range(1, len(spec.tasks) + 1):
            if name != manifests.rollout_name(run, index):
                continue
            if index in committed or not keep or index != progress.current:
                plan_.delete.append(ChildRef("apps/v1" if kind == "Deployment" else "v1", kind, name))


def _suspension_patches(plan_: Plan, spec: api.CptSpec, observed: Observed, suspend: bool) -> None:
    """Suspend maps to runPolicy.suspend on running jobs; resume clears it."""
    for job in observed.jobs:
        if job.phase in ("Pending", "Running") and job.suspended != suspend:
            ref = ChildRef("kubeflow.org/v1", "PyTorchJob", job.name)
            plan_.patch.append((ref, {"spec": {"runPolicy": {"suspend": suspend}}}))


# --------------------------------------------------------------------------------------------- status


def _matrices(spec: api.CptSpec, committed: dict[int, CommittedResult]) -> tuple[list, list]:
    names = [t.name for t in spec.tasks]
    benches = [b.name for b in spec.general]
    matrix, general = [], []
    for index in sorted(committed):
        row = committed[index].eval or {}
        tasks, scores = row.get("tasks") or {}, row.get("general") or {}
        matrix.append([_round(tasks.get(n)) for n in names])
        general.append([_round(scores.get(b)) for b in benches])
    return matrix, general


def _regressions(spec: api.CptSpec, matrix: list, last_row: Optional[int], resource: dict) -> dict[int, float]:
    if last_row is None or last_row < 2:
        return {}
    accepted = ((resource.get("metadata") or {}).get("annotations") or {}).get(ACK_REGRESSION_ANNOTATION)
    if accepted is not None and str(accepted).isdigit() and int(accepted) >= last_row:
        return {}
    return fm.regressions(matrix, last_row, spec.forgetting.max_drop)


def _regression_message(spec: api.CptSpec, regressions: dict[int, float], last_row: Optional[int]) -> str:
    parts = [f"task {spec.tasks[j - 1].name!r} dropped {drop:.3f} below its best" for j, drop in sorted(regressions.items())]
    after = spec.tasks[last_row - 1].name if last_row else "?"
    return (f"forgetting regression after task {after!r}: " + "; ".join(parts)
            + f" (maxDrop {spec.forgetting.max_drop}); to continue, set spec.forgetting.onRegression: alert "
            f"or annotate {ACK_REGRESSION_ANNOTATION}={last_row}")


def _stage_message(spec: api.CptSpec, progress: _Progress) -> str:
    if progress.current is None:
        return ""
    if progress.current == 0:
        return "evaluating the base model (row 0 of the accuracy matrix)"
    name = task_names(spec)[progress.current]
    return f"task {progress.current}/{len(spec.tasks)} {name!r}: stage {progress.stage}"


def _task_statuses(spec: api.CptSpec, run: str, committed: dict, observed: Observed, progress: _Progress) -> list:
    out = []
    for index, name in enumerate(task_names(spec)):
        jobs = [j for j in observed.jobs if j.task_index == index]
        entry = api.TaskStatus(index=index, name=name)
        result = committed.get(index)
        if result is not None:
            entry.phase = "Succeeded"
            if result.checkpoint:
                entry.checkpoint = spec.storage.uri.rstrip("/") + "/" + result.checkpoint
            rif = result.rif or {}
            entry.kept, entry.dropped = rif.get("kept"), rif.get("dropped")
            entry.filtered_fraction = _round(rif.get("filtered_fraction"))
        elif index == progress.current:
            entry.stage = progress.stage
            waiting = progress.wait_until is not None and progress.job is None
            entry.attempts = progress.attempt + (0 if waiting else 1)
            if progress.job is not None:
                entry.job = progress.job.name
            elif not waiting and progress.stage and not progress.failed_reason:
                entry.job = manifests.job_name(run, index, progress.stage, progress.attempt)
            if progress.failed_reason:
                entry.phase, entry.message = "Failed", progress.failed_reason
            elif progress.retrying_reason:
                entry.phase, entry.message = "Retrying", progress.retrying_reason
            elif jobs or entry.job:
                entry.phase = "Running"
        out.append(entry)
    return out


def _round(value) -> Optional[float]:
    return None if value is None else round(float(value), 6)


# --------------------------------------------------------------------------------------------- events


def _events(old: dict, new: dict, plan_: Plan, observed: Observed) -> list[PlanEvent]:
    events: list[PlanEvent] = []
    observed_names = {j.name for j in observed.jobs}
    for name, cfg in plan_.stage_configs.items():
        if name not in observed_names:
            events.append(PlanEvent("Normal", "StageStarted",
                                    f"task {cfg.task_index} {cfg.task_name!r}: stage {cfg.stage} "
                                    f"(attempt {cfg.attempt + 1}) started as job {name}"))
    old_tasks = {t.get("index"): t for t in old.get("tasks") or []}
    for task in new.get("tasks") or []:
        before = old_tasks.get(task["index"], {})
        if task["phase"] == "Succeeded" and before.get("phase") != "Succeeded":
            events.append(PlanEvent("Normal", "TaskCommitted", f"task {task['index']} {task['name']!r} committed"))
        if task["phase"] == "Retrying" and before.get("message") != task.get("message"):
            events.append(PlanEvent("Warning", "StageFailed", task.get("message", "")))
    if old.get("phase") != new["phase"]:
        kind = "Warning" if new["phase"] == "Failed" else "Normal"
        reason = {"Running": "Running" if old.get("phase") != "Suspended" else "Resumed"}.get(
            new["phase"], new["phase"])
        events.append(PlanEvent(kind, reason, new.get("message") or new["phase"]))
    old_reg = _condition(old, "ForgettingRegression")
    new_reg = _condition(new, "ForgettingRegression")
    if new_reg and new_reg["status"] == "True" and (not old_reg or old_reg.get("message") != new_reg["message"]):
        events.append(PlanEvent("Warning", "ForgettingRegression", new_reg["message"]))
    return events


def _condition(status: dict, ctype: str) -> Optional[dict]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == ctype), None)


def _invalid_plan(old: dict, generation: Optional[int], now: datetime, exc: SpecError) -> Plan:
    message = "; ".join(exc.problems)
    status = dict(old)
    status.update(phase="Failed", observedGeneration=generation, message=f"invalid spec: {message}")
    status.setdefault("progress", "0/0")
    status["conditions"] = build_conditions(old.get("conditions") or [], now, generation, phase="Failed",
                                            reason="InvalidSpec", message=message, valid=False)
    events = []
    old_valid = _condition(old, "SpecValid")
    if not old_valid or old_valid.get("status") != "False" or old_valid.get("message") != message:
        events.append(PlanEvent("Warning", "InvalidSpec", message))
    return Plan(status=status, events=events, valid=False)
