"""What the committed results say and what the run's phase is: the planner's judgement, kept apart from the
intents and the status it leads to (plan.py). Pure.

`Ledger`: the committed prefix storage proves, the lineage problems and the rounded matrices. `decide`: one
phase, reason and message from the ledger, the progress and the world, in a fixed order of precedence (a changed
trained task, a damaged lineage, exhausted retries, no training signal, done, suspended, paused by a forgetting
regression, running).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from cpt_core import api
from cpt_core import forgetting as fm
from cpt_core.results import CommittedTask, no_signal
from cpt_operator.planner.events import condition
from cpt_operator.planner.observed import Observed
from cpt_operator.planner.position import Progress, committed_prefix, task_names
from cpt_operator.planner.task_status import round6

ACK_REGRESSION_ANNOTATION = f"{api.GROUP}/accept-regression-after-task"
REFUSED_NOTE = "; running stages are suspended and rollout servers stopped until the spec is fixed or reverted"
Matrix = list[list[Optional[float]]]


@dataclass(frozen=True)
class Ledger:
    """The committed tasks storage proves (a prefix, damaged ones left out), what is wrong with the rest, and
    the accuracy matrices of the prefix, rounded."""
    committed: dict[int, CommittedTask]
    changed: str  # a trained task's spec changed: the refusal message ("" when none)
    broken: Optional[str]  # a committed task is missing under later ones: the run stops
    damaged: str  # what is damaged, for the StorageIntact condition ("" when nothing)
    matrix: Matrix
    general: Matrix

    @property
    def last_row(self) -> Optional[int]:
        return max(self.committed) if self.committed else None


def read_ledger(spec: api.CptSpec, observed: Observed) -> Ledger:
    usable = {i: t for i, t in observed.committed.items() if i not in observed.damaged}
    committed, changed = committed_prefix(spec, usable)
    broken, damaged = _lineage_problems(spec, committed, usable, observed.damaged)
    rows = fm.accuracy_rows(committed, [t.name for t in spec.tasks], [b.name for b in spec.general])
    matrix, general = ([[round6(v) for v in row] for row in m] for m in rows)
    return Ledger(committed, changed or "", broken, damaged, matrix, general)


@dataclass(frozen=True)
class Verdict:
    phase: str
    reason: str
    message: str

    @property
    def active(self) -> bool:
        """Stages may start: the run is running (or waits for its queue), not stopped by anything."""
        return self.phase in ("Running", "Queued") and self.reason in ("StageRunning", "RetryBackoff",
                                                                       "AwaitingAdmission")


def decide(spec: api.CptSpec, ledger: Ledger, progress: Progress, observed: Observed, regressions: dict[int, float],
           no_signal_note: str) -> Verdict:
    """The phase, in order of precedence. A task that taught nothing under noSignal: fail stops the run before
    its next task (the caller clears progress.stage)."""
    total = len(spec.tasks)
    if ledger.changed:
        return Verdict("Failed", "TrainedTaskChanged", ledger.changed + REFUSED_NOTE)
    if ledger.broken:
        return Verdict("Failed", "CommittedTaskDamaged", ledger.broken)
    if progress.failed_reason:
        return Verdict("Failed", "RetriesExhausted", progress.failed_reason)
    if no_signal_note and spec.no_signal == "fail":
        return Verdict("Failed", "NoTrainingSignal", no_signal_note)
    if progress.current is None:
        return Verdict("Succeeded", "AllTasksCommitted", f"all {total} tasks trained and evaluated")
    if spec.suspend:
        return Verdict("Suspended", "UserSuspended", "spec.suspend is true")
    if regressions and spec.forgetting.on_regression == "pause":
        return Verdict("Suspended", "ForgettingRegression", regression_message(spec, regressions, ledger.last_row))
    reason, message = "StageRunning", _stage_message(spec, progress)
    if progress.retrying_reason:
        reason, message = "RetryBackoff", progress.retrying_reason
    if reason == "StageRunning" and progress.job is not None and progress.job.queued:
        message = f"{message}: job {progress.job.name} waits for admission by queue {spec.queue!r}"
        return Verdict("Queued", "AwaitingAdmission", message)
    if observed.rejected and reason == "StageRunning":
        reason, message = "PodsRejected", f"{message}; {rejected_message(observed)}"
    return Verdict("Running", reason, message)


def regressions_of(spec: api.CptSpec, matrix: list, last_row: Optional[int], resource: dict) -> dict[int, float]:
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


def regression_message(spec: api.CptSpec, regressions: dict[int, float], last_row: Optional[int]) -> str:
    parts = [f"task {spec.tasks[j - 1].name!r} dropped {drop:.3f} below its best" for j, drop in sorted(regressions.items())]
    after = spec.tasks[last_row - 1].name if last_row else "?"
    return (f"forgetting regression after task {after!r}: " + "; ".join(parts)
            + f" (maxDrop {spec.forgetting.max_drop}); to continue, set spec.forgetting.onRegression: alert "
            f"or annotate {ACK_REGRESSION_ANNOTATION}={last_row}")


def rejected_message(observed: Observed) -> str:
    return "; ".join(f"the cluster refused pods of {child}: {why}" for child, why in observed.rejected)


def rejected_condition(old: dict, observed: Observed) -> list[tuple[str, bool, str, str]]:
    """PodsRejected: True while a child's pods are refused (admission, quota); False once they no longer are.
    Absent from runs that never had a refusal (most)."""
    if observed.rejected:
        return [("PodsRejected", True, "AdmissionRejected", rejected_message(observed))]
    if condition(old, "PodsRejected") is not None:
        return [("PodsRejected", False, "NoneRejected", "")]
    return []


def no_signal_message(spec: api.CptSpec, committed: dict[int, CommittedTask]) -> str:
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
