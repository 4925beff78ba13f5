"""What a committed task holds, as the planner, the report and the stages read it (pure; storage fills it in).

A task counts once its manifest is written (cpt_core.storage.manifest); the manifest embeds the task's results
(eval.json, rif.json, train.json), so a reader gets one small object per task. `run_stats` turns those results
into the cost figures that status, metrics and the report show.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from cpt_core import layout


@dataclass(frozen=True)
class ManifestFile:
    key: str
    size: int
    sha256: str


@dataclass(frozen=True)
class CommittedTask:
    """A task whose manifest exists and verified. `checkpoint` is a key prefix (None for the base row 0)."""

    index: int
    name: str
    spec_hash: str
    eval: dict[str, Any]  # eval.json: {"tasks": {name: acc}, "general": {name: score}, ...}
    rif: Optional[dict[str, Any]] = None  # rif.json: {"kept", "dropped", "filtered_fraction", ...}
    train: Optional[dict[str, Any]] = None  # train.json
    checkpoint: Optional[str] = None
    committed_at: str = ""
    files: tuple[ManifestFile, ...] = field(default=(), repr=False)

    @property
    def dir(self) -> str:
        return layout.task_dir(self.index, self.name)


def run_stats(committed: dict[int, CommittedTask]) -> dict[int, dict]:
    """Per-task cost figures (for metrics and reports) from the committed rif.json / train.json / eval.json."""
    out: dict[int, dict] = {}
    for index, result in committed.items():
        rif, train, ev = result.rif or {}, result.train or {}, result.eval or {}
        durations = {stage: float(d["seconds"]) for stage, d in (("filter", rif), ("train", train), ("evaluate", ev))
                     if d.get("seconds") is not None}
        out[index] = {
            "rolloutTokens": int(rif.get("rollout_tokens") or 0) + int(train.get("rollout_tokens") or 0),
            "stageRolloutTokens": {"filter": int(rif.get("rollout_tokens") or 0),
                                   "train": int(train.get("rollout_tokens") or 0)},
            "learnerSteps": int(train.get("steps") or 0),
            "stageDurations": durations,
        }
    return out
