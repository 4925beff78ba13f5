"""metav1.Condition bookkeeping: compute the condition set from the phase, keep transition times stable."""

from __future__ import annotations

from datetime import datetime
from typing import Optional, Sequence


def _utc(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def build_conditions(old: list[dict], now: datetime, generation: Optional[int], *, phase: str, reason: str,
                     message: str, valid: bool, spec_problem: Optional[str] = None,
                     regression: Optional[str] = None,
                     extra: Sequence[tuple[str, bool, str, str]] = ()) -> list[dict]:
    """The full condition list for one pass. lastTransitionTime changes only when a status flips.

    `extra`: (type, is_true, reason, message) of conditions only some passes can judge (StorageReachable needs
    a storage read); a condition not listed is left out.
    """
    wanted = [
        ("SpecValid", valid and not spec_problem,
         "Valid" if valid and not spec_problem else ("TrainedTaskChanged" if spec_problem else "InvalidSpec"),
         "" if valid and not spec_problem else (spec_problem or message)),
        ("Ready", phase == "Succeeded", reason, message),
        ("Progressing", phase == "Running", reason, message),
        ("Suspended", phase == "Suspended", reason if phase == "Suspended" else "NotSuspended",
         message if phase == "Suspended" else ""),
        ("ForgettingRegression", regression is not None,
         "RegressionDetected" if regression else "NoRegression", regression or ""),
        ("Failed", phase == "Failed", reason if phase == "Failed" else "NotFailed",
         message if phase == "Failed" else ""),
        *extra,
    ]
    return [_condition(old, now, generation, *w) for w in wanted]


def set_condition(conditions: list[dict], now: datetime, generation: Optional[int], ctype: str, is_true: bool,
                  reason: str, message: str) -> list[dict]:
    """`conditions` with one condition replaced in place (or appended), the others untouched."""
    new = _condition(conditions, now, generation, ctype, is_true, reason, message)
    if any(c.get("type") == ctype for c in conditions):
        return [new if c.get("type") == ctype else c for c in conditions]
    return [*conditions, new]


def _condition(old: list[dict], now: datetime, generation: Optional[int], ctype: str, is_true: bool,
               reason: str, message: str) -> dict:
    status = "True" if is_true else "False"
    before = next((c for c in old if c.get("type") == ctype), {})
    changed = before.get("status") != status
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message[:32000],
        "lastTransitionTime": _utc(now) if changed or "lastTransitionTime" not in before
        else before["lastTransitionTime"],
        **({"observedGeneration": generation} if generation is not None else {}),
    }
