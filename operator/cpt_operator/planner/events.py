"""Events for `kubectl describe`: derived by comparing the previous status with the new one (pure)."""

from __future__ import annotations

from typing import Optional

from cpt_operator.planner.observed import Observed
from cpt_operator.planner.intents import Plan, PlanEvent


def transition_events(old: dict, new: dict, plan_: Plan, observed: Observed) -> list[PlanEvent]:
    events: list[PlanEvent] = []
    observed_names = {j.name for j in observed.jobs}
    for start in plan_.start:
        name, cfg = start.job, start.config
        if name not in observed_names:
            events.append(PlanEvent("Normal", "StageStarted",
                                    f"task {cfg.task_index} {cfg.task_name!r}: stage {cfg.stage} "
                                    f"(attempt {cfg.attempt - start.first_attempt + 1}"
                                    f"{f', redo {start.round}' if start.round else ''}) started as job {name}"))
    old_tasks = {t.get("index"): t for t in old.get("tasks") or []}
    for task in new.get("tasks") or []:
        before = old_tasks.get(task["index"], {})
        if task["phase"] == "Succeeded" and before.get("phase") != "Succeeded":
            events.append(PlanEvent("Normal", "TaskCommitted", f"task {task['index']} {task['name']!r} committed"))
        if task["phase"] == "Retrying" and before.get("message") != task.get("message"):
            events.append(PlanEvent("Warning", "StageFailed", task.get("message", "")))
    started = any(e.reason == "StageStarted" for e in events)
    if old.get("phase") != new["phase"] and not (started and new["phase"] == "Running"
                                                 and old.get("phase") in (None, "Pending")):
        # (a run's start is its first StageStarted event: a "Running" event beside it would say it twice)
        kind = "Warning" if new["phase"] == "Failed" else "Normal"
        reason = {"Running": "Running" if old.get("phase") != "Suspended" else "Resumed"}.get(
            new["phase"], new["phase"])
        events.append(PlanEvent(kind, reason, new.get("message") or new["phase"]))
    old_reg = condition(old, "ForgettingRegression")
    new_reg = condition(new, "ForgettingRegression")
    if new_reg and new_reg["status"] == "True" and (not old_reg or old_reg.get("message") != new_reg["message"]):
        events.append(PlanEvent("Warning", "ForgettingRegression", new_reg["message"]))
    for ctype in ("NoTrainingSignal", "PodsRejected"):  # a Warning when it turns True or says something new
        before, after = condition(old, ctype), condition(new, ctype)
        if after and after["status"] == "True" and (not before or before.get("message") != after["message"]):
            events.append(PlanEvent("Warning", ctype, after["message"]))
    events.extend(_health_events(old, new))
    return events


# Conditions about the run's storage: an event when one turns False (Warning) or recovers (Normal); not on
# every pass while it stays False (an error's text varies between attempts).
_HEALTH = {"StorageReachable": ("StorageUnreachable", "StorageReachable"),
           "StorageIntact": ("CommittedTaskDamaged", "StorageIntact")}


def _health_events(old: dict, new: dict) -> list[PlanEvent]:
    out = []
    for ctype, (bad, good) in _HEALTH.items():
        before, after = condition(old, ctype), condition(new, ctype)
        if after is None:
            continue
        if after["status"] == "False" and (before is None or before.get("status") != "False"):
            out.append(PlanEvent("Warning", bad, after.get("message") or bad))
        elif after["status"] == "True" and before is not None and before.get("status") == "False":
            out.append(PlanEvent("Normal", good, f"{ctype}: recovered"))
    return out


def condition(status: dict, ctype: str) -> Optional[dict]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == ctype), None)


