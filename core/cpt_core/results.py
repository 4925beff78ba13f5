"""What a committed task holds, as the planner, the report and the stages read it (pure; storage fills it in).

A task counts once its manifest is written (cpt_core.storage.manifest); the manifest embeds the task's results
(eval.json, rif.json, train.json), so a reader gets one small object per task. `run_stats` turns those results
into the cost figures that status, metrics and the report show.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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


class _Loose(BaseModel):
    """Known fields are checked, unknown ones kept (stages may record more than the operator reads)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class _FileModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(min_length=1)
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


Score = Optional[float]


class EvalModel(_Loose):
    tasks: dict[str, Score] = Field(default_factory=dict)  # None: a task the stage could not score
    general: dict[str, Score] = Field(default_factory=dict)
    seconds: Optional[float] = Field(None, ge=0)

    @field_validator("tasks", "general")
    @classmethod
    def _unit(cls, row: dict[str, Score]) -> dict[str, Score]:
        bad = {k: v for k, v in row.items() if v is not None and not (math.isfinite(v) and 0.0 <= v <= 1.0)}
        if bad:
            raise ValueError(f"scores must be finite numbers in [0, 1], got {bad}")
        return row


class RifModel(_Loose):
    kept: Optional[int] = Field(None, ge=0)
    dropped: Optional[int] = Field(None, ge=0)
    total: Optional[int] = Field(None, ge=0)
    filtered_fraction: Optional[float] = Field(None, ge=0, le=1)
    rollout_tokens: Optional[int] = Field(None, ge=0)
    seconds: Optional[float] = Field(None, ge=0)


class TrainModel(_Loose):
    steps: Optional[int] = Field(None, ge=0)
    rollout_tokens: Optional[int] = Field(None, ge=0)
    seconds: Optional[float] = Field(None, ge=0)


class ResultsModel(BaseModel):
    model_config = ConfigDict(extra="allow")
    eval: EvalModel
    rif: Optional[RifModel] = None
    train: Optional[TrainModel] = None


class ManifestModel(BaseModel):
    """manifest.json as written by storage.manifest.commit_task; anything else is a damaged task, never a crash."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    version: Literal[1]
    index: int = Field(ge=0)
    name: str = Field(min_length=1)
    spec_hash: str
    committed_at: str = ""
    files: list[_FileModel]
    results: ResultsModel


def manifest_problem(exc: ValidationError) -> str:
    """One line per broken field: `results.eval.tasks: scores must be ... (got ...)`."""
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{where}: {err['msg']} (got {err.get('input')!r:.80})")
    return "malformed manifest: " + "; ".join(parts)


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
            "trainResumes": int(train.get("resumes") or 0),  # resumes from a step checkpoint (0: never stopped)
        }
    return out


def rif_counts(task: CommittedTask) -> dict[str, Any]:
    """RIF's per-task counts whichever mode produced them: the filter stage's rif.json (prefilter) or the
    `online_rif` entry of train.json (online: kept/dropped by each prompt's latest group, plus the groups skipped
    and the rollouts that saved). Empty for methods without RIF."""
    online = (task.train or {}).get("online_rif")
    if isinstance(online, dict):
        return {"mode": "online", **{k: online.get(k) for k in (
            "kept", "dropped", "filtered_fraction", "skipped_groups", "rollouts_saved", "reprobed_groups")}}
    rif = task.rif or {}
    if not rif:
        return {}
    return {"mode": "prefilter", **{k: rif.get(k) for k in ("kept", "dropped", "filtered_fraction")}}


KL_REFERENCES = {"base": "base", "task_start": "taskStart"}  # train.json's policy_kl keys -> status/label names


def policy_kl(task: CommittedTask) -> dict[str, dict[str, float]]:
    """The KL early warning of a task's training (train.json `policy_kl`), per reference {last, max}; a task
    trained before the base reference existed has task_start only (top-level last/max). Empty when off."""
    kl = (task.train or {}).get("policy_kl")
    if not isinstance(kl, dict):
        return {}
    out = {}
    for key, name in KL_REFERENCES.items():
        entry = kl.get(key) if key in kl else (kl if key == kl.get("reference") else None)
        if isinstance(entry, dict) and entry.get("last") is not None and entry.get("max") is not None:
            out[name] = {"last": float(entry["last"]), "max": float(entry["max"])}
    return out


def replayed_prompts(task: CommittedTask) -> Optional[int]:
    """Earlier tasks' prompts (GRPO groups, or SFT examples) the task trained on with spec.replay, or None."""
    replay = (task.train or {}).get("replay")
    return int(replay["replayed_prompts"]) if isinstance(replay, dict) and "replayed_prompts" in replay else None


NO_SIGNAL = "no_signal"  # train.json key: why a task taught the model nothing (absent when it did)


def no_signal(task: CommittedTask) -> Optional[str]:
    """Why task's training had no signal (RIF dropped every prompt, GRPO rewards never varied), or None."""
    return (task.train or {}).get(NO_SIGNAL)


@dataclass(frozen=True)
class ResumeMarker:
    """A train stage that resumed from a step checkpoint, as it says while it runs (tasks/<i>-<name>/resume.json,
    cpt_core.storage.resume_marker): before the task commits, train.json cannot say it yet."""

    attempt: int  # the stage attempt that resumed (the job's attempt label)
    resumed_at_step: int
    total_steps: int
    resumes: int  # how many times this task's training has resumed so far, this one included

    def record(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def parse_marker(raw: Any) -> Optional[ResumeMarker]:
    """The marker, or None for anything that is not four non-negative integers with step <= total."""
    if not isinstance(raw, dict):
        return None
    values = [raw.get(f.name) for f in dataclasses.fields(ResumeMarker)]
    if not all(type(v) is int and v >= 0 for v in values) or values[1] > values[2]:
        return None
    return ResumeMarker(*values)
