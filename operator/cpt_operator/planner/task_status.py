"""status.tasks[]: one entry per task (the base model's row 0 included), rebuilt from the committed results and
the progress of the current task on every pass. Pure."""

from __future__ import annotations

from typing import Optional

from cpt_core import api
from cpt_core.results import ResumeMarker, policy_kl, replayed_prompts, rif_counts
from cpt_operator.planner.names import job_name
from cpt_operator.planner.observed import Observed
from cpt_operator.planner.position import Progress, task_names


def round6(value) -> Optional[float]:
    return None if value is None else round(float(value), 6)


def task_statuses(spec: api.CptSpec, run: str, committed: dict, observed: Observed, progress: Progress) -> list:
    out = []
    for index, name in enumerate(task_names(spec)):
        jobs = [j for j in observed.jobs if j.task_index == index]
        entry = api.TaskStatus(index=index, name=name)
        result = committed.get(index)
        if result is not None:
            entry.phase = "Succeeded"
            if result.checkpoint:
                entry.checkpoint = spec.storage.join(result.checkpoint)
            rif = rif_counts(result)
            entry.kept, entry.dropped = rif.get("kept"), rif.get("dropped")
            entry.filtered_fraction = round6(rif.get("filtered_fraction"))
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
            _resumed_now(entry, progress, observed.resumed.get(index))
        out.append(entry)
    return out


def _resumed_now(entry: api.TaskStatus, progress: Progress, marker: Optional[ResumeMarker]) -> None:
    """A retried train stage that resumed from a step checkpoint says so while it trains (its marker in storage,
    cpt_core.storage.resume_marker): only the marker of the attempt now running counts, not an earlier one's."""
    job = progress.job
    if marker is None or job is None or progress.stage != "train" or job.stage != "train":
        return
    if marker.attempt == job.attempt and job.phase in ("Pending", "Running"):
        entry.resumed_at_step, entry.train_resumes = marker.resumed_at_step, marker.resumes
        entry.learner_steps = marker.total_steps


def _train_figures(entry: api.TaskStatus, train: dict) -> None:
    """Steps, and whether the train stage resumed from a step checkpoint ("resumed at step k of n", r times): a
    stage that was stopped and picked up again says so where a user looks (kubectl get -o yaml / describe)."""
    steps, resumes, at = train.get("steps"), train.get("resumes"), train.get("resumed_at_step")
    entry.learner_steps = steps if isinstance(steps, int) and steps >= 0 else None
    if isinstance(resumes, int) and resumes > 0:
        entry.train_resumes = resumes
        entry.resumed_at_step = at if isinstance(at, int) and at >= 0 else None
