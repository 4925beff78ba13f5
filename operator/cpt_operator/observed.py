"""What an executor observed of the world: the planner's only input besides the resource itself.

Kubernetes (`kube.observe`) and the local executor both build these; the planner never looks anywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Optional

JobPhase = Literal["Pending", "Running", "Succeeded", "Failed"]


@dataclass(frozen=True)
class ObservedJob:
    """One stage job (a PyTorchJob on a cluster, a process locally), identified by its labels."""

    name: str
    task_index: int
    stage: str  # filter | train | evaluate
    attempt: int
    phase: JobPhase
    finished_at: Optional[datetime] = None  # when it reached Succeeded/Failed
    message: str = ""
    suspended: bool = False


@dataclass(frozen=True)
class CommittedResult:
    """A task whose manifest exists and verifies in storage (see cpt_trainer.storage)."""

    index: int
    name: str
    spec_hash: str
    eval: dict  # eval.json: {"tasks": {name: acc}, "general": {name: score}, ...}
    rif: Optional[dict] = None  # rif.json: {"kept", "dropped", "filtered_fraction", ...}
    train: Optional[dict] = None  # train.json
    checkpoint: Optional[str] = None


@dataclass(frozen=True)
class Observed:
    """Everything the planner may know: stage jobs, other children by (kind, name), committed results, time."""

    now: datetime
    jobs: tuple[ObservedJob, ...] = ()
    children: frozenset[tuple[str, str]] = field(default_factory=frozenset)  # (kind, name) that exist
    committed: dict[int, CommittedResult] = field(default_factory=dict)
    storage_error: Optional[str] = None  # storage could not be read this pass: plan nothing new
