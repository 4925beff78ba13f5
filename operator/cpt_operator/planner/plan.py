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
from cpt_core.results import CommittedTask, no_signal, policy_kl, replayed_prompts, rif_counts
from cpt_core.stage import StageConfig
from cpt_core.validation import Mode, SpecError, validate_resource
from cpt_operator.planner.conditions import build_conditions, set_condition
from cpt_operator.planner.events import condition, transition_events
from cpt_operator.planner.intents import Plan, PlanEvent, RolloutServers, SetSuspended, StartStage
from cpt_operator.planner.names import job_name
from cpt_operator.planner.observed import Observed
from cpt_operator.planner.position import Progress, committed_prefix, progress_of, task_names, task_spec_hash

ACK_REGRESSION_ANNOTATION = f"{api.GROUP}/accept-regression-after-task"
# What a refused spec leaves as it was: the figures of the last spec that was accepted.
LAST_GOOD = ("currentTask", "completedTasks", "totalTasks", "progress", "tasks", "accuracy", "general",
             "averageAccuracy", "backwardTransfer", "forgetting", "plasticity")
REFUSED_NOTE = "; running stages are suspended and rollout servers stopped until the spec is fixed or reverted"


def plan(resource: dict, observed: Observed, mode: Mode = "cluster") -> Plan:
    """Compute what should exist and what the status is. Never raises on user input."""
    old = resource.get("status") or {}
    generation = resource.get("metadata", {}).get("generation")
    try:
        cpt = validate_resource(resource, mode)
    except SpecError as exc:
        return _invalid_plan(old, generation, observed, exc)
    spec = cpt.spec
    run = cpt.metadata.name
    if observed.storage_error or observed.storage_conflict:
        return _held_plan(old, generation, spec, observed)
    usable = {i: t for i, t in observed.committed.items() if i not in observed.damaged}
    committed, changed = committed_prefix(spec, usable)
    broken, damaged = _lineage_problems(spec, committed, usable, observed.damaged)
    matrix, general = _rounded(fm.accuracy_rows(committed, [t.name for t in spec.tasks], [b.name for b in spec.general]))
    last_row = max(committed) if committed else None
    regressions = _regressions(spec, matrix, last_row, resource)

    progress = progress_of(spec, committed, observed)
    plan_ = Plan(status={}, spec=spec)
    total = len(spec.tasks)
    completed = len([i for i in committed if i >= 1])
    paused = bool(regressions) and spec.forgetting.on_regression == "pause" and progress.current is not None
    no_signal = _no_signal_message(spec, committed)
    if changed:
        phase, reason, message = "Failed", "TrainedTaskChanged", changed + REFUSED_NOTE
    elif broken:
        phase, reason, message = "Failed", "CommittedTaskDamaged", broken
    elif progress.failed_reason:
        phase, reason, message = "Failed", "RetriesExhausted", progress.failed_reason
    elif no_signal and spec.no_signal == "fail":
        phase, reason, message = "Failed", "NoTrainingSignal", no_signal
        progress.stage = None  # the next task waits for a decision: not Running, no job
    elif progress.current is None:
        phase, reason, message = "Succeeded", "AllTasksCommitted", f"all {total} tasks trained and evaluated"
    elif spec.suspend:
        phase, reason, message = "Suspended", "UserSuspended", "spec.suspend is true"
    elif paused:
        phase, reason, message = "Suspended", "ForgettingRegression", _regression_message(spec, regressions, last_row)
    else:
        phase = "Running" if (committed or observed.jobs) or progress.stage else "Pending"
        reason, message = "StageRunning", _stage_message(spec, progress)
        if progress.retrying_reason:
            reason, message = "RetryBackoff", progress.retrying_reason
        if phase == "Pending":
            phase = "Running"
        if reason == "StageRunning" and progress.job is not None and progress.job.queued:
            phase, reason = "Queued", "AwaitingAdmission"
            message = f"{message}: job {progress.job.name} waits for admission by queue {spec.queue!r}"
        if observed.rejected and reason == "StageRunning":
            reason, message = "PodsRejected", f"{message}; {_rejected_message(observed)}"

    active = phase in ("Running", "Queued") and reason in ("StageRunning", "RetryBackoff", "AwaitingAdmission")
    if active:
        _start_stage(plan_, resource, spec, run, progress)
    if phase in ("Running", "Queued", "Suspended") and spec.needs_rollout_servers(progress.current):
        plan_.rollout.append(RolloutServers(progress.current, _start_model_uri(spec, committed, progress.current),
                                            start=active))
    # Resume only what this operator suspended: a job a queue holds (Kueue, until admission) is the queue's.
    suspend = phase == "Suspended" or bool(changed)  # a refused change stops its stages (GPUs), says so
    plan_.suspend = [SetSuspended(job.name, suspend) for job in observed.jobs
                     if job.phase in ("Pending", "Running") and job.suspended != suspend
                     and (suspend or not job.queued)]
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
    if changed:  # beside the refusal, the last good status (a refused spec cannot recompute it)
        status.update({k: old[k] for k in LAST_GOOD if k in old})
    status["conditions"] = build_conditions(
        old.get("conditions") or [], observed.now, generation,
        phase=phase, reason=reason, message=message, valid=True, spec_problem=changed,
        regression=_regression_message(spec, regressions, last_row) if regressions else None,
        extra=[("StorageReachable", True, "Reachable", ""),
               ("StorageIntact", not damaged, "CommittedTaskDamaged" if damaged else "Intact", damaged),
               *([("NoTrainingSignal", True, "TaskNotTrained", no_signal)] if no_signal else []),
               *_rejected_condition(old, observed),
               *([("Queued", phase == "Queued", reason if phase == "Queued" else "NotQueued",
                   message if phase == "Queued" else "")] if spec.queue else [])],
    )
    plan_.status = status
    plan_.events = transition_events(old, status, plan_, observed)
    return plan_


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


def _lineage_problems(spec: api.CptSpec, committed: dict[int, CommittedTask], usable: dict[int, CommittedTask],
                      damaged: dict[int, str]) -> tuple[Optional[str], str]:
    """(why the run must stop, what is damaged). A task after the first uncommitted one is still committed:
    the uncommitted one was committed once (its later tasks were trained from it) and is now missing or fails a
    check. Redoing it would mix two lineages in one matrix, so the run stops and says which objects to restore.
    A damaged last task has no later lineage: it is simply redone, and reported."""
    names = task_names(spec)
    gap = len(committed)
    later = sorted(i for i in usable if i > gap)
    report = "; ".join(f"task {i} ({names[i] if i < len(names) else '?'}): {why}" for i, why in sorted(damaged.items()))
    if not later:
        return None, report
    return (f"task {gap} ({names[gap] if gap < len(names) else '?'!r}) is no longer committed "
            f"({damaged.get(gap, 'its manifest is gone')}) but tasks {later} were trained from it; restore its "
            "objects from a backup, or create a new ContinualPostTraining with a new storage.uri (nothing is "
            "retrained over a later lineage)"), report


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
    return spec.storage.uri.rstrip("/") + "/" + previous.checkpoint


# --------------------------------------------------------------------------------------------- status


def _rounded(rows: tuple[list, list]) -> tuple[list, list]:
    return tuple([[_round(v) for v in row] for row in matrix] for matrix in rows)  # type: ignore[return-value]


def _regressions(spec: api.CptSpec, matrix: list, last_row: Optional[int], resource: dict) -> dict[int, float]:
    if last_row is None or last_row < 2:
        return {}
    annotations = (resource.get("metadata") or {}).get("annotations")
    accepted = accepted_after(annotations.get(ACK_REGRESSION_ANNOTATION) if isinstance(annotations, dict) else None)
    if accepted is not None and accepted >= last_row:
        return {}
    return fm.regressions(matrix, last_row, spec.forgetting.max_drop)


def accepted_after(value: object) -> Optional[int]:
    """The task row the accept-regression annotation names, or None when it names none (absent, not a number).
    Digits only ("²" is a digit to Python, not an int); a number past any row is compared by its length, since
    int() refuses strings of more than 4,300 digits (sys.get_int_max_str_digits)."""
    if isinstance(value, int) and not isinstance(value, bool):  # a YAML file's unquoted number
        return value if value >= 0 else None
    text = value.strip() if isinstance(value, str) else ""
    if not (text.isascii() and text.isdigit()):
        return None
    text = text.lstrip("0") or "0"
    return int(text) if len(text) <= 18 else 10**18  # more rows than any spec has (at most 100 tasks)


def _regression_message(spec: api.CptSpec, regressions: dict[int, float], last_row: Optional[int]) -> str:
    parts = [f"task {spec.tasks[j - 1].name!r} dropped {drop:.3f} below its best" for j, drop in sorted(regressions.items())]
    after = spec.tasks[last_row - 1].name if last_row else "?"
    return (f"forgetting regression after task {after!r}: " + "; ".join(parts)
            + f" (maxDrop {spec.forgetting.max_drop}); to continue, set spec.forgetting.onRegression: alert "
            f"or annotate {ACK_REGRESSION_ANNOTATION}={last_row}")


def _rejected_message(observed: Observed) -> str:
    return "; ".join(f"the cluster refused pods of {child}: {why}" for child, why in observed.rejected)


def _rejected_condition(old: dict, observed: Observed) -> list[tuple[str, bool, str, str]]:
    """PodsRejected: True while a child's pods are refused (admission, quota); False once they no longer are.
    Absent from runs that never had a refusal (most)."""
    if observed.rejected:
        return [("PodsRejected", True, "AdmissionRejected", _rejected_message(observed))]
    if condition(old, "PodsRejected") is not None:
        return [("PodsRejected", False, "NoneRejected", "")]
    return []


def _no_signal_message(spec: api.CptSpec, committed: dict[int, CommittedTask]) -> str:
    """Which committed tasks taught nothing and what spec.noSignal does about it ("" when all had signal)."""
    parts = [f"task {i} {spec.tasks[i - 1].name!r} taught nothing: {why}"
             for i, why in sorted((i, no_signal(t)) for i, t in committed.items() if i >= 1) if why]
    if not parts:
        return ""
    then = ("the run stopped after evaluating it (spec.noSignal: fail); to go on with it untrained, set "
            "spec.noSignal: skip" if spec.no_signal == "fail" else
            "the run went on with the model unchanged by it (spec.noSignal: skip)")
    return "; ".join(parts) + "; " + then


def _stage_message(spec: api.CptSpec, progress: Progress) -> str:
    if progress.current is None:
        return ""
    if progress.current == 0:
        return "evaluating the base model (row 0 of the accuracy matrix)"
    name = task_names(spec)[progress.current]
    return f"task {progress.current}/{len(spec.tasks)} {name!r}: stage {progress.stage}"


def _train_figures(entry: api.TaskStatus, train: dict) -> None:
    """Steps, and whether the train stage resumed from a step checkpoint ("resumed at step k of n", r times): a
    stage that was stopped and picked up again says so where a user looks (kubectl get -o yaml / describe)."""
    steps, resumes, at = train.get("steps"), train.get("resumes"), train.get("resumed_at_step")
    entry.learner_steps = steps if isinstance(steps, int) and steps >= 0 else None
    if isinstance(resumes, int) and resumes > 0:
        entry.train_resumes = resumes
        entry.resumed_at_step = at if isinstance(at, int) and at >= 0 else None


def _task_statuses(spec: api.CptSpec, run: str, committed: dict, observed: Observed, progress: Progress) -> list:
    out = []
    for index, name in enumerate(task_names(spec)):
        jobs = [j for j in observed.jobs if j.task_index == index]
        entry = api.TaskStatus(index=index, name=name)
        result = committed.get(index)
        if result is not None:
            entry.phase = "Succeeded"
            if result.checkpoint:
                entry.checkpoint = spec.storage.uri.rstrip("/") + "/" + result.checkpoint
            rif = rif_counts(result)
            entry.kept, entry.dropped = rif.get("kept"), rif.get("dropped")
            entry.filtered_fraction = _round(rif.get("filtered_fraction"))
            entry.skipped_groups, entry.rollouts_saved = rif.get("skipped_groups"), rif.get("rollouts_saved")
            kl = policy_kl(result)
            entry.policy_kl = api.PolicyKl.model_validate(kl) if kl else None
            entry.replayed_prompts = replayed_prompts(result)
            _train_figures(entry, result.train or {})
        elif index == progress.current and progress.stage:
            entry.stage = progress.stage
            waiting = progress.wait_until is not None and progress.job is None
            entry.attempts = progress.attempt - progress.first_attempt + (0 if waiting else 1)
            if progress.job is not None:
                entry.job = progress.job.name
            elif not waiting and progress.stage and not progress.failed_reason:
                entry.job = job_name(run, index, progress.stage, progress.attempt)
            if progress.failed_reason:
                entry.phase, entry.message = "Failed", progress.failed_reason
            elif progress.retrying_reason:
                entry.phase, entry.message = "Retrying", progress.retrying_reason
            elif progress.job is not None and progress.job.queued:
                entry.phase, entry.message = "Queued", f"waiting for admission by queue {spec.queue!r}"
            elif jobs or entry.job:
                entry.phase = "Running"
        out.append(entry)
    return out


def _round(value) -> Optional[float]:
    return None if value is None else round(float(value), 6)


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
