"""What the planner asks of an executor, in the product's words (no Kubernetes objects, no processes).

The Kubernetes executor (cpt_operator.kube.children) turns these into PyTorchJobs, ConfigMaps and rollout
Deployments; the local executor (cpt_operator.local) into processes. Both write `status` as given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from cpt_core.api import CptSpec
from cpt_core.stage import StageConfig


@dataclass(frozen=True)
class StartStage:
    """Start one attempt of one stage of one task as the job `job` (deterministic name: starting it twice is
    harmless). The executor adds what only it knows (the rollout server URL) to the config."""

    job: str
    config: StageConfig
    round: int = 0  # > 0: a redo of a damaged task from its first stage (planner.position)
    first_attempt: int = 0  # config.attempt of this round's first try (attempt numbers go on across rounds)


@dataclass(frozen=True)
class RolloutServers:
    """The rollout servers one task generates with. `start`: bring them up; False: keep them if they run but
    start none (suspended). Servers of any task not listed are stopped (they hold GPUs)."""

    task_index: int
    model_uri: str  # the weights they serve at start: the previous task's checkpoint, or the base model
    start: bool = True


@dataclass(frozen=True)
class SetSuspended:
    """Pause (True) or resume (False) a stage job that is pending or running."""

    job: str
    suspended: bool


@dataclass(frozen=True)
class PlanEvent:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Plan:
    status: dict
    start: list[StartStage] = field(default_factory=list)
    rollout: list[RolloutServers] = field(default_factory=list)
    suspend: list[SetSuspended] = field(default_factory=list)
    events: list[PlanEvent] = field(default_factory=list)
    requeue_after: Optional[float] = None  # seconds until time itself changes the plan (backoff, commit grace)
    valid: bool = True
    # The observation was incomplete (storage unreachable, prefix of another run): create and delete nothing,
    # only the listed suspensions. An executor must not read the absence of intents as "stop everything".
    hold: bool = False
    spec: Optional[CptSpec] = None  # the validated spec the intents are for (None when it is invalid)
