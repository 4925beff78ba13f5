"""What an executor observed of the world: the planner's only input besides the resource itself.

Kubernetes (`kube.controller.apply.observe`) and the local executor both build these; the planner never looks anywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Optional

from cpt_core.results import CommittedTask, ResumeMarker

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
    queued: bool = False  # suspended by a queue (Kueue) until admitted, not by this operator: never resumed here
    # Which pass over the task's stages it belongs to: 0, then one more each time a damaged task is redone from
    # its first stage (the earlier rounds' finished jobs stay on the cluster and must not count as done).
    round: int = 0


@dataclass(frozen=True)
class Observed:
    """Everything the planner may know: stage jobs, committed results, time."""

    now: datetime
    jobs: tuple[ObservedJob, ...] = ()
    committed: dict[int, CommittedTask] = field(default_factory=dict)
    storage_error: Optional[str] = None  # storage could not be read this pass: keep everything as it was
    # Why (a condition reason): "StorageUnavailable" (not answering: waiting helps) or one a person must fix
    # (kube/storage_problems.py: a missing Secret, wrong keys, no such bucket, ...); None = StorageUnavailable.
    storage_reason: Optional[str] = None
    storage_conflict: Optional[str] = None  # the storage prefix belongs to another run: touch nothing
    # (child name, message) for children whose pods the cluster refused to create (admission, quota)
    rejected: tuple[tuple[str, str], ...] = ()
    # Tasks whose manifest exists but fails a check (a file missing, truncated, corrupt): index -> why.
    damaged: dict[int, str] = field(default_factory=dict)
    # Uncommitted tasks whose train stage resumed from a step checkpoint (its marker in storage): index -> marker.
    resumed: dict[int, ResumeMarker] = field(default_factory=dict)
