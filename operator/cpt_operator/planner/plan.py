"""The pure planner: (resource, observed world) -> intents (stages to start, rollout servers, suspensions),
status and events.

No I/O, no kopf, no clock (time comes in `Observed.now`), no Kubernetes objects. Both executors call it: the
operator with what it observes through the Kubernetes API and storage, `cpt run` with local processes. Status is
recomputed from the observation on every call (kubebuilder style); the previous status is only read to keep
condition transition times and to decide which events are new.
"""

from __future__ import annotations

from typing import Optional

from cpt_core import api
from cpt_core import forgetting as fm
from cpt_core.results import CommittedTask
from cpt_core.stage import StageConfig
from cpt_core.validation import Mode, SpecError, validate_resource
from cpt_operator.planner.conditions import build_conditions, set_condition
from cpt_operator.planner.events import condition, transition_events
from cpt_operator.planner.intents import Plan, PlanEvent, RolloutServers, SetSuspended, StartStage
from cpt_operator.planner.names import job_name
from cpt_operator.planner.observed import Observed
from cpt_operator.planner.position import Progress, progress_of, task_names, task_spec_hash
from cpt_operator.planner.task_status import round6, task_statuses
from cpt_operator.planner.verdict import (REFUSED_NOTE, Ledger, Verdict, decide, no_signal_message, read_ledger,
                                          regression_message, regressions_of, rejected_condition)

# What a refused spec leaves as it was: the figures of the last spec that was accepted.
LAST_GOOD = ("currentTask", "completedTasks", "totalTasks", "progress", "tasks", "accuracy", "general",
             "averageAccuracy", "backwardTransfer", "forgetting", "plasticity")


def plan(resource: dict, observed: Observed, mode: Mode = "cluster") -> Plan:
    """Compute what should exist and what the status is. Never raises on user input."""
    old = resource.get("status") or {}
    generation = resource.get("metadata", {}).get("generation")
    try:
        cpt = validate_resource(resource, mode)
    except SpecError as exc:
        return _invalid_plan(old, generation, observed, exc)
    spec = cpt.spec
    if observed.storage_error or observed.storage_conflict:
        return _held_plan(old, generation, spec, observed)
    ledger = read_ledger(spec, observed)
    progress = progress_of(spec, ledger.committed, observed)
    regressions = regressions_of(spec, ledger.matrix, ledger.last_row, resource)
    no_signal = no_signal_message(spec, ledger.committed)
    verdict = decide(spec, ledger, progress, observed, regressions, no_signal)
    if verdict.reason == "NoTrainingSignal":
        progress.stage = None  # the next task waits for a decision: not Running, no job
    plan_ = Plan(status={}, spec=spec)
    _add_intents(plan_, resource, cpt.metadata.name, spec, ledger, progress, verdict, observed)
    plan_.status = _status(spec, cpt.metadata.name, old, generation, ledger, progress, verdict, observed,
                           regressions, no_signal)
    plan_.events = transition_events(old, plan_.status, plan_, observed)
    return plan_


def _add_intents(plan_: Plan, resource: dict, run: str, spec: api.CptSpec, ledger: Ledger, progress: Progress,
                 verdict: Verdict, observed: Observed) -> None:
    """Stages to start, rollout servers to keep, jobs to suspend or resume, and when to look again."""
    if verdict.active:
        _start_stage(plan_, resource, spec, run, progress)
    if verdict.phase in ("Running", "Queued", "Suspended") and spec.needs_rollout_servers(progress.current):
        plan_.rollout.append(RolloutServers(progress.current, _start_model_uri(spec, ledger.committed,
                                                                               progress.current),
                                            start=verdict.active))
    # Resume only what this operator suspended: a job a queue holds (Kueue, until admission) is the queue's.
    suspend = verdict.phase == "Suspended" or bool(ledger.changed)  # a refused change stops its stages (GPUs)
    plan_.suspend = [SetSuspended(job.name, suspend) for job in observed.jobs
                     if job.phase in ("Pending", "Running") and job.suspended != suspend
                     and (suspend or not job.queued)]
    if progress.wait_until is not None and verdict.phase == "Running":
        plan_.requeue_after = max(0.0, (progress.wait_until - observed.now).total_seconds())


def _status(spec: api.CptSpec, run: str, old: dict, generation: Optional[int], ledger: Ledger, progress: Progress,
            verdict: Verdict, observed: Observed, regressions: dict[int, float], no_signal: str) -> dict:
    """The status, rebuilt: figures from the ledger, the phase from the verdict, conditions beside it."""
    total = len(spec.tasks)
    completed = len([i for i in ledger.committed if i >= 1])
    summary = fm.summary(ledger.matrix, ledger.general) if ledger.committed else {}
    status = api.CptStatus(
        phase=verdict.phase,
        current_task=None if progress.current is None else task_names(spec)[progress.current],
        completed_tasks=completed,
        total_tasks=total,
        progress=f"{completed}/{total}",
        observed_generation=generation,
        tasks=task_statuses(spec, run, ledger.committed, observed, progress),
        accuracy=api.AccuracyMatrix(tasks=[t.name for t in spec.tasks], matrix=ledger.matrix),
        general=api.GeneralScores(benchmarks=[b.name for b in spec.general], matrix=ledger.general),
        average_accuracy=round6(summary.get("average_accuracy")),
        backward_transfer=round6(summary.get("backward_transfer")),
        forgetting=round6(summary.get("forgetting")),
        plasticity=round6(summary.get("plasticity")),
        message=verdict.message,
    ).wire()
    if ledger.changed:  # beside the refusal, the last good status (a refused spec cannot recompute it)
        status.update({k: old[k] for k in LAST_GOOD if k in old})
    queued = verdict.phase == "Queued"
    status["conditions"] = build_conditions(
        old.get("conditions") or [], observed.now, generation,
        phase=verdict.phase, reason=verdict.reason, message=verdict.message, valid=True,
        spec_problem=ledger.changed or None,
        regression=regression_message(spec, regressions, ledger.last_row) if regressions else None,
        extra=[("StorageReachable", True, "Reachable", ""),
               ("StorageIntact", not ledger.damaged, "CommittedTaskDamaged" if ledger.damaged else "Intact",
                ledger.damaged),
               *([("NoTrainingSignal", True, "TaskNotTrained", no_signal)] if no_signal else []),
               *rejected_condition(old, observed),
               *([("Queued", queued, verdict.reason if queued else "NotQueued",
                   verdict.message if queued else "")] if spec.queue else [])],
    )
    return status


# ----------------------------------------------------------------------------------- incomplete world


def _held_plan(old: dict, generation: Optional[int], spec: api.CptSpec, observed: Observed) -> Plan:
    """Storage could not be read, or its prefix belongs to another run: the planner cannot tell what is
    committed, so it keeps the last known status (committed count, matrix, AA) and every child, starts and
    deletes nothing, and says why. Suspending still works: it only stops things."""
    now = observed.now
    status = dict(old)
    status.setdefault("totalTasks", len(spec.tasks))
    status.setdefault("progress", f"{status.get('completedTasks', 0)}/{len(spec.tasks)}")
    if observed.storage_conflict:
        phase, reason, message = "Failed", "StorageConflict", observed.storage_conflict
        conditions = build_conditions(old.get("conditions") or [], now, generation, phase=phase, reason=reason,
                                      message=message, valid=True,
                                      extra=[("StorageReachable", True, "Reachable", "")])
    else:
        phase, reason = old.get("phase") or api.CptStatus.field_default("phase"), observed.storage_reason or "StorageUnavailable"
        if reason == "StorageUnavailable":  # the endpoint did not answer: waiting may help
            message = (f"storage unreachable: {observed.storage_error}; showing the last known status, keeping "
                       "every child, starting nothing until it answers")
        else:  # a missing Secret, wrong keys, no such bucket, ...: the error says what to fix
            message = (f"storage unusable: {observed.storage_error}; showing the last known status, keeping every "
                       "child, starting nothing until this is fixed")
        conditions = old.get("conditions") or build_conditions([], now, generation, phase=phase, reason=reason,
                                                               message=message, valid=True)
        conditions = set_condition(conditions, now, generation, "StorageReachable", False, reason,
                                   observed.storage_error or "")
    status.update(phase=phase, message=message, conditions=conditions)
    plan_ = Plan(status=status, spec=spec, hold=True)
    plan_.suspend = [SetSuspended(job.name, True) for job in observed.jobs
                     if spec.suspend and job.phase in ("Pending", "Running") and not job.suspended]
    plan_.events = transition_events(old, status, plan_, observed)
    return plan_


# ------------------------------------------------------------------------------------------- progress


def _start_stage(plan_: Plan, resource: dict, spec: api.CptSpec, run: str, progress: Progress) -> None:
    index, stage = progress.current, progress.stage
    if index is None or stage is None or progress.wait_until is not None:
        return  # nothing to run, or backoff / commit grace: no new job yet
    name = job_name(run, index, stage, progress.attempt)
    cfg = StageConfig(run=run, namespace=resource["metadata"].get("namespace", "default"),
                      run_uid=resource["metadata"].get("uid") or None, stage=stage,
                      task_index=index, attempt=progress.attempt, spec=spec, spec_hash=task_spec_hash(spec, index),
                      world_size=spec.learner.world_size)
    plan_.start.append(StartStage(name, cfg, progress.round, progress.first_attempt))


def _start_model_uri(spec: api.CptSpec, committed: dict[int, CommittedTask], index: int) -> str:
    """What task `index` starts from: the previous task's committed checkpoint, or the base model."""
    previous = committed.get(index - 1)
    if index <= 1 or previous is None or previous.checkpoint is None:
        return spec.model
    return spec.storage.join(previous.checkpoint)


# --------------------------------------------------------------------------------------------- status


def _invalid_plan(old: dict, generation: Optional[int], observed: Observed, exc: SpecError) -> Plan:
    """The last good status beside the refusal; running stages suspended (and, in the executor, rollout
    servers scaled to zero) until the spec is fixed: an invalid edit must not keep GPUs busy unseen."""
    now = observed.now
    message = "; ".join(exc.problems)
    running = [job for job in observed.jobs if job.phase in ("Pending", "Running")]
    status = dict(old)
    status.update(phase="Failed", observedGeneration=generation,
                  message=f"invalid spec: {message}" + (REFUSED_NOTE if running else ""))
    status.setdefault("progress", "0/0")
    status["conditions"] = build_conditions(old.get("conditions") or [], now, generation, phase="Failed",
                                            reason="InvalidSpec", message=message, valid=False)
    events = []
    old_valid = condition(old, "SpecValid")
    if not old_valid or old_valid.get("status") != "False" or old_valid.get("message") != message:
        events.append(PlanEvent("Warning", "InvalidSpec", message))
    return Plan(status=status, events=events, valid=False,
                suspend=[SetSuspended(job.name, True) for job in running if not job.suspended])
