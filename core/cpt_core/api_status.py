"""The ContinualPostTraining status models (split from cpt_core.api, which re-exports them): what the operator
observes and writes back on every pass. No I/O."""

from __future__ import annotations

from typing import Literal, Optional, get_args

from pydantic import Field

from cpt_core.wire import Wire

Phase = Literal["Pending", "Queued", "Running", "Suspended", "Succeeded", "Failed"]
TaskPhase = Literal["Pending", "Queued", "Running", "Retrying", "Succeeded", "Failed"]
Stage = Literal["filter", "train", "evaluate"]
STAGES: tuple[str, ...] = get_args(Stage)  # in the order a task runs them
PHASES: tuple[str, ...] = get_args(Phase)


class Condition(Wire):
    """metav1.Condition."""

    type: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9]*$", max_length=316)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)
    message: str = Field("", max_length=32768)
    last_transition_time: str = Field(description="RFC 3339 time of the last status change.")
    observed_generation: Optional[int] = Field(None, ge=0)


class KlReading(Wire):
    """One reference's KL early warning of a task: the latest estimate and the largest so far (nats per completion)."""

    last: float = Field(ge=0)
    max: float = Field(ge=0)


class PolicyKl(Wire):
    """KL(reference || policy) on the task's own prompts (docs/design.md): from the base model and from the model
    the task started from (the same for task 1)."""

    base: Optional[KlReading] = None
    task_start: Optional[KlReading] = None


class TaskStatus(Wire):
    """Per-task progress, rebuilt from the stage jobs and the committed results on every pass."""

    index: int = Field(ge=0)
    name: str
    phase: TaskPhase = "Pending"
    stage: Optional[Stage] = None
    job: Optional[str] = None
    attempts: int = Field(0, ge=0)
    checkpoint: Optional[str] = None
    filtered_fraction: Optional[float] = Field(None, ge=0, le=1)
    kept: Optional[int] = Field(None, ge=0)
    dropped: Optional[int] = Field(None, ge=0)
    skipped_groups: Optional[int] = Field(None, ge=0, description="Online RIF: GRPO groups not rolled out.")
    rollouts_saved: Optional[int] = Field(None, ge=0, description="Online RIF: completions not sampled (skipped x G).")
    policy_kl: Optional[PolicyKl] = Field(None, description="KL early warning (spec.forgetting.klEverySteps).")
    replayed_prompts: Optional[int] = Field(None, ge=0, description="Replay: earlier tasks' prompts trained on.")
    learner_steps: Optional[int] = Field(None, ge=0, description="Optimizer steps of the task's train stage "
                                         "(while a resumed stage runs: the steps it is to reach).")
    train_resumes: Optional[int] = Field(None, ge=0, description="Times the train stage resumed from a step "
                                         "checkpoint after it was stopped (absent: it never stopped).")
    resumed_at_step: Optional[int] = Field(None, ge=0, description="The step its last resume started from (of "
                                           "learnerSteps); shown from the resume on, while the stage trains.")
    message: Optional[str] = None


class AccuracyMatrix(Wire):
    """a[i][j]: accuracy on task j after training task i; row 0 is the base model. Null = not evaluated."""

    tasks: list[str] = Field(default_factory=list)
    matrix: list[list[Optional[float]]] = Field(default_factory=list)


class GeneralScores(Wire):
    """Scores of the general benchmarks after each task (row 0: the base model)."""

    benchmarks: list[str] = Field(default_factory=list)
    matrix: list[list[Optional[float]]] = Field(default_factory=list)


class CptStatus(Wire):
    """Observed state of a run; every field is recomputed from the world on each pass."""

    phase: Phase = "Pending"
    current_task: Optional[str] = None
    completed_tasks: int = Field(0, ge=0)
    total_tasks: int = Field(0, ge=0)
    progress: str = Field("0/0", description="completed/total, for `kubectl get`.")
    observed_generation: Optional[int] = Field(None, ge=0)
    conditions: list[Condition] = Field(default_factory=list)
    tasks: list[TaskStatus] = Field(default_factory=list)
    accuracy: AccuracyMatrix = Field(default_factory=AccuracyMatrix)
    general: GeneralScores = Field(default_factory=GeneralScores)
    average_accuracy: Optional[float] = None
    backward_transfer: Optional[float] = None
    forgetting: Optional[float] = None
    plasticity: Optional[float] = None
    message: Optional[str] = None
