"""A retried train stage that resumed from a step checkpoint shows "resumed at step k of n" in status.tasks[] while
it trains (its marker in storage: cpt_core.storage.resume_marker), not only once the task commits; the marker of an
earlier attempt, or of a stage that is over, shows nothing."""

from datetime import timedelta

from planner_golden import NOW, committed, job, plan

from cpt_core.results import ResumeMarker
from cpt_operator.planner import Observed

FIELDS = ("phase", "stage", "attempts", "learnerSteps", "trainResumes", "resumedAtStep")


def _task1(resource, jobs, resumed):
    done = {0: committed(resource, 0, {"add": 0.3})}
    status = plan(resource, Observed(now=NOW, jobs=tuple(jobs), committed=done, resumed=resumed)).status
    return {k: status["tasks"][1].get(k) for k in FIELDS}


def _retried_train(phase="Running"):
    earlier = NOW - timedelta(minutes=5)
    return [job("demo-1-filter", 1, "filter", "Succeeded", 0, finished=earlier),
            job("demo-1-train", 1, "train", "Failed", 0, finished=earlier, message="OOMKilled"),
            job("demo-1-train-a1", 1, "train", phase, 1)]


def test_the_running_attempt_that_resumed_says_so(resource):
    marker = ResumeMarker(attempt=1, resumed_at_step=30, total_steps=40, resumes=1)
    got = _task1(resource, _retried_train(), {1: marker})
    assert got == {"phase": "Running", "stage": "train", "attempts": 2, "learnerSteps": 40, "trainResumes": 1,
                   "resumedAtStep": 30}


def test_an_earlier_attempts_marker_or_another_stage_shows_nothing(resource):
    stale = {1: ResumeMarker(attempt=0, resumed_at_step=30, total_steps=40, resumes=1)}
    got = _task1(resource, _retried_train(), stale)
    assert got["phase"] == "Running" and got["resumedAtStep"] is None and got["trainResumes"] is None

    marker = {1: ResumeMarker(attempt=1, resumed_at_step=30, total_steps=40, resumes=1)}
    evaluating = _retried_train("Succeeded") + [job("demo-1-evaluate", 1, "evaluate", "Running", 0)]
    got = _task1(resource, evaluating, marker)
    assert got["stage"] == "evaluate" and got["resumedAtStep"] is None and got["learnerSteps"] is None
