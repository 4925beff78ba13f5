"""The ContinualPostTraining API: spec and status models (camelCase on the wire, no I/O).

These models are the single source of truth: `crdgen` turns them into the CRD's openAPIV3Schema, and a test
checks that `crds/continualposttraining.yaml` is what `crdgen` produces. Cross-field rules that a structural
schema cannot express (unique task names, a `rif` block only with rif-grpo, ...) live in `validation`.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from cpt_core.wire import Wire

GROUP = "cpt.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ContinualPostTraining"
PLURAL = "continualposttrainings"
SINGULAR = "continualposttraining"
SHORT_NAMES = ["cpt"]

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"  # Secret names: dots allowed
# A dataset or model location: s3://bucket/key, file:///abs/path, or a plain local path (local mode).
URI_PATTERN = r"^(s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?|file:///.*|[^:\s]+)$"
HTTP_URL_PATTERN = r"^https?://[^\s/]+(/\S*)?$"
# A built-in reward name or `module.path:function`.
REWARD_PATTERN = r"^([a-z][a-z0-9_]*|[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*)$"

Method = Literal["sft", "grpo", "rif-grpo", "self-sft"]
# Methods whose tasks start with the filter stage (rollouts of the current model, settings in spec.rif): RIF keeps
# the prompts solved at least minCorrect times; self-sft keeps the correct completions themselves.
SAMPLING_METHODS = ("rif-grpo", "self-sft")
SFT_METHODS = ("sft", "self-sft")  # trained by SFT (on reference answers; self-sft: on its own correct rollouts)
Uri = Annotated[str, Field(pattern=URI_PATTERN, min_length=1)]
Reward = Annotated[str, Field(pattern=REWARD_PATTERN)]


class TaskSpec(Wire):
    """One task of the sequence: a training pool, an eval set and how to score an answer."""

    name: str = Field(pattern=DNS_LABEL, min_length=1, max_length=40,
                      description="Unique, DNS-label safe; used in child and storage names.")
    train: Uri = Field(description="JSON Lines with `prompt` and `answer` (s3://, file:// or local path).")
    eval: Uri = Field(description="JSON Lines evaluated greedily after every task.")
    reward: Reward = Field("exact", description="exact | numeric | choice, or module:function.")
    answer_pattern: Optional[str] = Field(
        None, min_length=1, description="Regex with one group that extracts the answer (default: \\boxed{...}).")


class BenchmarkSpec(Wire):
    """A general-capability benchmark, evaluated after every task to catch collateral damage."""

    name: str = Field(pattern=DNS_LABEL, min_length=1, max_length=40)
    eval: Uri
    reward: Reward = "exact"
    answer_pattern: Optional[str] = Field(None, min_length=1)


class GrpoSpec(Wire):
    """GRPO hyper-parameters (paper defaults for a 7B model)."""

    group_size: int = Field(8, ge=2, le=256, description="Completions sampled per prompt (G).")
    learning_rate: float = Field(1.0e-6, gt=0, le=1)
    kl_coef: float = Field(0.01, ge=0, le=10)
    prompts_per_step: int = Field(64, ge=1, le=65536)
    epochs: int = Field(1, ge=1, le=1000)
    max_steps: Optional[int] = Field(None, ge=1, description="Caps optimizer steps per task (overrides epochs).")
    max_completion_tokens: int = Field(1024, ge=1, le=131072)
    temperature: float = Field(1.0, gt=0, le=10)


class SftSpec(Wire):
    """Supervised fine-tuning hyper-parameters (the baseline)."""

    learning_rate: float = Field(1.0e-5, gt=0, le=1)
    batch_size: int = Field(24, ge=1, le=65536)
    epochs: int = Field(1, ge=1, le=1000)
    max_steps: Optional[int] = Field(None, ge=1, description="Caps optimizer steps per task (overrides epochs).")


RifMode = Literal["prefilter", "online"]
# rif-grpo's mode when spec.rif.mode is unset: online spent 0.78x GRPO's rollouts at 4 epochs and 1.0x at 1, with AA
# not distinguishable from GRPO's, where prefilter spent 1.66x at 1 epoch (bench/rif_cost/RESULTS.md, protocol
# "online", whose registered rule picked it).
DEFAULT_RIF_MODE: RifMode = "online"


class RifSpec(Wire):
    """Rollout-based instance filtering. prefilter: a filter stage drops prompts the model never solves in N
    rollouts (self-sft: the same rollouts, whose correct completions become its SFT examples). online (rif-grpo
    only): no filter stage; GRPO's own groups decide, GRESO's rule (arXiv 2506.02177): a prompt whose group had
    equal rewards (0 of G or G of G correct) is skipped in later epochs, rolled out again with probability
    max(reprobe^z, reprobeFloor) after z such visits in a row (docs/design.md)."""

    mode: Optional[RifMode] = Field(None, description="prefilter (a filter stage of N rollouts per prompt before "
                                    "training) or online (skip zero-variance prompts from GRPO's own groups; "
                                    "rif-grpo only). Unset: online for rif-grpo (measured by bench/rif_cost, "
                                    "docs/design.md); self-sft always samples first.")
    rollouts: int = Field(8, ge=1, le=256, description="prefilter: rollouts per prompt (N).")
    min_correct: int = Field(1, ge=1, le=256, description="prefilter: correct rollouts a kept prompt needs.")
    reprobe: float = Field(0.5, gt=0, le=1, description="online: base probability p of rolling a skipped prompt "
                           "out again; after z zero-variance visits in a row it is p^z (GRESO's initial p).")
    reprobe_floor: float = Field(0.01, ge=0, le=1, description="online: the re-probe probability never falls below "
                                 "this (GRESO: 0.01), so a prompt can always return.")


class ReplaySpec(Wire):
    """Replay of mastered prompts (docs/design.md): from task 2 on, a fraction of each batch's prompt slots is filled
    with earlier tasks' training prompts the model solved when that task was evaluated (the evaluate stage scores
    up to probePrompts of a task's training prompts greedily and keeps the solved ones with the task's results).
    GRPO: the batch keeps its size, so it costs no extra rollouts. SFT adds the replayed examples to the task's,
    as this fraction of the examples; self-sft replays the model's own correct answers."""

    fraction: float = Field(0.0, ge=0, lt=1, description="Share of each batch's prompt slots given to replayed "
                            "prompts (0: off).")
    probe_prompts: int = Field(64, ge=1, le=100000, description="Training prompts of a task scored greedily by its "
                               "evaluate stage to find the solved ones (a seeded sample when the pool is larger).")

    @property
    def enabled(self) -> bool:
        return self.fraction > 0


class EvaluationSpec(Wire):
    """How the accuracy matrix is measured (greedy decoding)."""

    max_completion_tokens: int = Field(1024, ge=1, le=131072)
    max_samples: Optional[int] = Field(None, ge=1, description="Evaluate at most this many rows per set.")
    every_steps: Optional[int] = Field(
        None, ge=1, description="Also evaluate during training, every N optimizer steps (and at the last): the tasks "
        "seen so far and the general benchmarks, kept in train.json as `curve` (learning and forgetting curves).")
    engine: Literal["hf", "vllm"] = Field(
        "hf", description="What scores every row of the matrix, the base model's included: hf (greedy generate in "
        "the evaluate stage's own process) or vllm (the run's rollout servers, started for every task, the base "
        "model's too, whatever the method). One engine for the whole run, so differences between rows are the "
        "model's, not the engines'.")


class RolloutSpec(Wire):
    """vLLM rollout servers (GRPO methods on a cluster); `engine: hf` generates inside the learner instead."""

    engine: Literal["vllm", "hf"] = "vllm"
    replicas: int = Field(1, ge=1, le=64)
    gpus: int = Field(1, ge=0, le=16)
    tensor_parallel: int = Field(1, ge=1, le=16)
    image: Optional[str] = Field(None, min_length=1)


class LearnerSpec(Wire):
    """DeepSpeed learner ranks of the stage PyTorchJob (Master + replicas-1 Workers)."""

    replicas: int = Field(1, ge=1, le=512)
    gpus_per_replica: int = Field(1, ge=0, le=16)
    zero_stage: int = Field(2, ge=0, le=3)
    image: Optional[str] = Field(None, min_length=1)
    cpu: Optional[str] = Field(None, pattern=r"^[0-9]+(\.[0-9]+)?m?$")
    memory: Optional[str] = Field(None, pattern=r"^[0-9]+(\.[0-9]+)?([KMGTPE]i?)?$")

    @property
    def processes_per_replica(self) -> int:
        """torchrun's --nproc-per-node: one rank per GPU, one CPU rank on a replica without GPUs."""
        return max(self.gpus_per_replica, 1)

    @property
    def world_size(self) -> int:
        """The learner ranks a cluster stage job starts; each rank checks it sees this many (cpt_trainer.world)."""
        return self.replicas * self.processes_per_replica


class StorageSpec(Wire):
    """Where checkpoints and results go. Credentials come from `secretRef` or the environment, never the spec."""

    uri: Uri
    endpoint: Optional[str] = Field(None, pattern=HTTP_URL_PATTERN)
    region: Optional[str] = Field(None, pattern=r"^[a-z0-9-]+$")
    path_style: bool = Field(False, description="Path-style S3 addressing (MinIO, Ceph, moto).")
    secret_ref: Optional[str] = Field(None, pattern=DNS_SUBDOMAIN, max_length=253,
                                      description="Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.")

    def join(self, key: str) -> str:
        """The URI of `key` under this run's prefix (a task's checkpoint, for status and the next task's start)."""
        return self.uri.rstrip("/") + "/" + key.lstrip("/")


class ForgettingSpec(Wire):
    """The forgetting guard: a task dropping more than maxDrop below its best accuracy is a regression."""

    max_drop: float = Field(0.05, ge=0, le=1)
    on_regression: Literal["alert", "pause"] = "alert"
    kl_every_steps: int = Field(
        0, ge=0, le=10**6, description="KL early warning: every N optimizer steps (and at the last) the train stage "
        "estimates KL(task-start policy || policy) on completions sampled once from the task-start model (k3 "
        "estimator, forward passes only; docs/design.md). 0: off.")
    kl_prompts: int = Field(8, ge=1, le=1024, description="Prompts of the task the KL probe samples (one "
                            "completion each, evaluation.maxCompletionTokens long).")


class CheckpointSpec(Wire):
    """Step checkpoints of the train stage (docs/checkpoints.md): a retried train stage resumes from the newest
    committed one instead of step 0. A save happens when either interval is reached; 0 turns an interval off
    (both 0: no step checkpoints)."""

    every_steps: int = Field(0, ge=0, le=10**7, description="Save every N optimizer steps (0: by time only).")
    every_minutes: float = Field(
        10.0, ge=0, le=10080, description="Save when this many minutes passed since the stage started or last "
        "saved (checked after each optimizer step; 0: by steps only). A fault loses at most about this much.")
    keep: int = Field(2, ge=1, le=100, description="Committed step checkpoints kept per task (older ones deleted).")

    @property
    def enabled(self) -> bool:
        return bool(self.every_steps or self.every_minutes)


# A tracking server's address: http(s) on a cluster; `cpt run` also takes a local MLflow file store (file:///...).
TRACKING_URI_PATTERN = r"^(https?://[^\s/@]+(/\S*)?|file:///\S*)$"
EXPERIMENT_PATTERN = r"^[^\x00-\x1f]+$"


class MlflowSpec(Wire):
    """MLflow tracking: one MLflow run per task, stage and attempt (TRL's report_to=["mlflow"]), docs/install.md."""

    tracking_uri: str = Field(pattern=TRACKING_URI_PATTERN, max_length=2048, description="The tracking server "
                              "(http(s)://host[:port][/path]); with `cpt run` also a file store (file:///abs/path).")
    experiment: Optional[str] = Field(None, pattern=EXPERIMENT_PATTERN, min_length=1, max_length=256,
                                      description="Experiment name (created if missing; default: the run's name).")
    secret_ref: Optional[str] = Field(
        None, pattern=DNS_SUBDOMAIN, max_length=253, description="Secret with MLFLOW_TRACKING_TOKEN or "
        "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (each optional), given to the stage pods only.")


class WandbSpec(Wire):
    """Weights & Biases: one W&B run per task, stage and attempt (report_to=["wandb"]), grouped by the run."""

    project: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$", min_length=1, max_length=128)
    entity: Optional[str] = Field(None, pattern=r"^[A-Za-z0-9_.\-]+$", min_length=1, max_length=128)
    base_url: Optional[str] = Field(None, pattern=HTTP_URL_PATTERN, max_length=2048,
                                    description="A self-hosted W&B server (default: W&B's cloud).")
    secret_ref: Optional[str] = Field(None, pattern=DNS_SUBDOMAIN, max_length=253,
                                      description="Secret with WANDB_API_KEY, given to the stage pods only.")


# Keys of the Secrets that spec.tracking names, given to the stage pods as these variables (what MLflow's and
# W&B's clients read). MLflow's are each optional: a token, or a user name and password.
MLFLOW_SECRET_KEYS = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
WANDB_SECRET_KEY = "WANDB_API_KEY"
WANDB_CLOUD = "https://api.wandb.ai"  # where W&B's client sends runs without wandb.baseUrl


class TrackingSpec(Wire):
    """Experiment tracking of the stages (off unless a backend is named). Never fails a stage: a tracking server
    that cannot be reached is a warning in the stage log and training goes on."""

    mlflow: Optional[MlflowSpec] = None
    wandb: Optional[WandbSpec] = None


class RetrySpec(Wire):
    """Retries of a failed stage job, with exponential backoff."""

    limit: int = Field(2, ge=0, le=20)
    backoff_seconds: int = Field(30, ge=0, le=86400)


class CptSpec(Wire):
    """What to train: a base model, an ordered list of tasks and the method."""

    model: Uri = Field(description="Base model: s3:// URI, or a local path in local mode.")
    method: Method = Field("rif-grpo", description="sft | grpo | rif-grpo | self-sft (SFT on the model's own "
                           "correct rollouts, sampled as spec.rif says).")
    tasks: list[TaskSpec] = Field(min_length=1, max_length=100)
    general: list[BenchmarkSpec] = Field(default_factory=list, max_length=50)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    grpo: GrpoSpec = Field(default_factory=GrpoSpec)
    sft: SftSpec = Field(default_factory=SftSpec)
    rif: Optional[RifSpec] = Field(None, description="Only with method rif-grpo (defaults apply when absent).")
    replay: ReplaySpec = Field(default_factory=ReplaySpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    learner: LearnerSpec = Field(default_factory=LearnerSpec)
    storage: StorageSpec
    forgetting: ForgettingSpec = Field(default_factory=ForgettingSpec)
    no_signal: Literal["fail", "skip"] = Field(
        "fail", description="A task that gave no training signal (RIF dropped every prompt, or every GRPO group got "
        "equal rewards at every step): fail stops the run once that task is evaluated (set skip to go on); skip "
        "goes on with the model unchanged by it. Either way the NoTrainingSignal condition and a Warning event say so.")
    retry: RetrySpec = Field(default_factory=RetrySpec)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    tracking: Optional[TrackingSpec] = Field(None, description="Experiment tracking (MLflow, W&B); off when absent.")
    suspend: bool = False
    queue: Optional[str] = Field(
        None, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=63,
        description="Kueue LocalQueue for the run's stage jobs and rollout servers (label kueue.x-k8s.io/queue-name); "
                    "they wait, suspended, until Kueue admits them.")

    def needs_rollout_servers(self, index: Optional[int]) -> bool:
        """Whether task `index` (0: the base model's evaluation) runs with vLLM rollout servers: GRPO-family
        generation (filter, train) from task 1 on, or every evaluation when spec.evaluation.engine is vllm."""
        if index is None:
            return False
        if self.evaluation.engine == "vllm":
            return True
        return index >= 1 and self.method != "sft" and self.rollout.engine == "vllm"

    @property
    def rif_effective(self) -> Optional[RifSpec]:
        """The RIF settings in force: defaults for rif-grpo and self-sft, none for other methods."""
        if self.method not in SAMPLING_METHODS:
            return None
        return self.rif or RifSpec()

    @property
    def rif_mode(self) -> Optional[RifMode]:
        """The RIF mode in force: spec.rif.mode or DEFAULT_RIF_MODE for rif-grpo, prefilter for self-sft (it trains
        on the filter's own rollouts), None for the other methods."""
        if self.method == "self-sft":
            return "prefilter"
        if self.method != "rif-grpo":
            return None
        return (self.rif.mode if self.rif is not None else None) or DEFAULT_RIF_MODE

    @property
    def has_filter_stage(self) -> bool:
        """Whether each task starts with the filter stage: self-sft always, rif-grpo in prefilter mode."""
        return self.rif_mode == "prefilter"

    @property
    def online_rif(self) -> Optional[RifSpec]:
        """The RIF settings when GRPO filters its own groups (rif-grpo, mode online), else None."""
        return self.rif_effective if self.rif_mode == "online" else None


# ---------------------------------------------------------------------------------------------- status
# The status models live in cpt_core.api_status; imported here so `api.TaskStatus` etc. keep working.
from cpt_core.api_status import (  # noqa: E402
    PHASES, STAGES, AccuracyMatrix, Condition, CptStatus, GeneralScores, KlReading, Phase, PolicyKl, Stage,
    TaskPhase, TaskStatus,
)


class Metadata(BaseModel):
    """The part of metadata the planner needs (names, owner reference, generation)."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(pattern=DNS_LABEL, max_length=63)
    namespace: str = "default"
    uid: Optional[str] = None
    generation: Optional[int] = None


class ContinualPostTraining(BaseModel):
    """The whole resource as read from a file or the API."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    api_version: Literal[API_VERSION] = Field(alias="apiVersion")  # type: ignore[valid-type]
    kind: Literal["ContinualPostTraining"]
    metadata: Metadata
    spec: CptSpec
    status: Optional[CptStatus] = None
