"""metav1.Condition bookkeeping: compute the condition set from the phase, keep transition times stable."""

from __future__ import annotations

from datetime import datetime
from typing import Optional


def _utc(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def build_conditions(old: list[dict], now: datetime, generation: Optional[int], *, phase: str, reason: str,
                     message: str, valid: bool, spec_problem: Optional[str] = None,
                     regression: Optional[str] = None) -> list[dict]:
    """The full condition list for one pass. lastTransitionTime changes only when a status flips."""
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
    ]
    previous = {c.get("type"): c for c in old}
    out = []
    for ctype, is_true, why, text in wanted:
        status = "True" if is_true else "False"
        before = previous.get(ctype) or {}
        changed = before.get("status") != status
        out.append({
            "type": ctype,
            "status": status,
            "reason": why,
            "message": text[:32000],
            "lastTransitionTime": _utc(now) if changed or "lastTransitionTime" not in before
            else before["lastTransitionTime"],
            **({"observedGeneration": generation} if generation is not None else {}),
        })
    return out
