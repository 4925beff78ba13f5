"""Experiment tracking of one stage (spec.tracking): one MLflow and/or W&B run per task, stage and attempt.

TRL's `report_to` carries the per-step curves (transformers' MLflowCallback / WandbCallback, which read the
MLFLOW_* / WANDB_* variables set here). This module opens the run first, so an unreachable server is found in one
short request before training instead of inside the training loop; tags it with the run, task and attempt; logs
what the Trainer never sees (RIF counts, curve points, KL, the matrix row with AA and BWT); and keeps every
failure a warning: tracking never fails a stage. Only rank 0 tracks.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Mapping, Optional

from cpt_core.protocol import STAGE_WARNING
from cpt_core.stage import StageConfig

# A tracking server that does not answer costs one request of this long, not MLflow's default 120 s x 7 retries.
HTTP_TIMEOUT_S = "10"
HTTP_RETRIES = "1"
MLFLOW_BATCH = 1000  # metrics per log_batch request (MLflow's limit)
INTEGRATIONS = ("MLflowCallback", "WandbCallback")  # transformers' report_to callbacks that the guard wraps


def warn(what: str, exc: BaseException) -> None:
    """A tracking failure: one line in the stage log, never an exception."""
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    print(f"{STAGE_WARNING} tracking: {what} failed, the stage goes on without it: "
          f"{type(exc).__name__}: {first}", file=sys.stderr, flush=True)


def run_name(cfg: StageConfig) -> str:
    return f"{cfg.run}/{cfg.task_index}-{cfg.task_name}/{cfg.stage}" + (f"/a{cfg.attempt}" if cfg.attempt else "")


def run_tags(cfg: StageConfig) -> dict[str, str]:
    return {"cpt.run": cfg.run, "cpt.namespace": cfg.namespace, "cpt.run_uid": cfg.run_uid or "",
            "cpt.task_index": str(cfg.task_index), "cpt.task": cfg.task_name, "cpt.stage": cfg.stage,
            "cpt.attempt": str(cfg.attempt), "cpt.method": cfg.spec.method, "cpt.spec_hash": cfg.spec_hash}


class _Mlflow:
    name = "mlflow"

    def __init__(self, cfg: StageConfig):
        spec = cfg.spec.tracking.mlflow
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", HTTP_TIMEOUT_S)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", HTTP_RETRIES)
        if spec.tracking_uri.startswith("file:"):  # `cpt run` only (validation); MLflow 3 asks for this opt-in
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self.uri, self.experiment = spec.tracking_uri, spec.experiment or cfg.run
        self.client = MlflowClient(tracking_uri=self.uri)
        experiment = self.client.get_experiment_by_name(self.experiment)
        if experiment is None:
            try:
                experiment_id = self.client.create_experiment(self.experiment)
            except MlflowException:  # another stage created it meanwhile
                experiment = self.client.get_experiment_by_name(self.experiment)
                if experiment is None:
                    raise
                experiment_id = experiment.experiment_id
        else:
            experiment_id = experiment.experiment_id
        self.run_id = self.client.create_run(experiment_id, run_name=run_name(cfg), tags=run_tags(cfg)).info.run_id
        # What transformers' MLflowCallback reads: it resumes this run instead of starting its own.
        os.environ.update(MLFLOW_TRACKING_URI=self.uri, MLFLOW_EXPERIMENT_NAME=self.experiment,
                          MLFLOW_RUN_ID=self.run_id)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(items), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, metrics=items[i:i + MLFLOW_BATCH])

    def finish(self, ok: bool) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")


class _Wandb:
    name = "wandb"

    def __init__(self, cfg: StageConfig):
        spec = cfg.spec.tracking.wandb
        os.environ["WANDB_PROJECT"] = spec.project
        if spec.entity:
            os.environ["WANDB_ENTITY"] = spec.entity
        if spec.base_url:
            os.environ["WANDB_BASE_URL"] = spec.base_url
        import wandb

        self.run = wandb.init(project=spec.project, entity=spec.entity, name=run_name(cfg), group=cfg.run,
                              job_type=cfg.stage, tags=[f"{k}={v}" for k, v in run_tags(cfg).items() if v][:20],
                              config=run_tags(cfg), settings=wandb.Settings(init_timeout=float(HTTP_TIMEOUT_S)))

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        # WandbCallback plots against train/global_step; a point of ours carries it so curves line up
        self.run.log({**metrics, "train/global_step": step})

    def finish(self, ok: bool) -> None:
        self.run.finish(exit_code=0 if ok else 1)


BACKENDS = {"mlflow": _Mlflow, "wandb": _Wandb}
_active: Optional["Tracker"] = None  # the stage process's tracker: one stage per process


def report_to() -> list[str]:
    """TRL's `report_to` for the Trainer this process builds (learners.common.trainer_args): the backends whose
    run this stage opened; empty without spec.tracking, on ranks > 0 and outside a stage (bench, multitask)."""
    return _active.report_to if _active is not None else []


class Tracker:
    """The stage's tracking runs; every call is safe: a backend that fails once is warned about and dropped."""

    def __init__(self, backends: list):
        self.backends = backends

    @property
    def report_to(self) -> list[str]:
        """What TRL's `report_to` gets: the backends whose run is open."""
        return [b.name for b in self.backends]

    def log(self, metrics: Mapping[str, Any], step: int = 0) -> None:
        clean = {k: float(v) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}
        if clean:
            self._each(f"logging {len(clean)} metric(s)", lambda b: b.log(clean, step))

    def finish(self, ok: bool) -> None:
        self._each("closing the run", lambda b: b.finish(ok))

    def _each(self, what: str, call) -> None:
        for backend in list(self.backends):
            try:
                call(backend)
            except Exception as exc:  # noqa: BLE001: tracking never fails a stage
                warn(f"{backend.name}: {what}", exc)
                self.backends.remove(backend)


def skip_unused_backends(cfg: StageConfig, rank: int) -> list[str]:
    """Mark the tracking packages this stage process will not use as absent, before TRL and DeepSpeed are imported:
    both import mlflow and wandb at import time whenever they are installed (trl.extras.profiling, DeepSpeed's
    autotuner), ~3.5 s of every learner process's start here, tracked or not. A package is unused when the spec
    names no such backend or the process is not rank 0 (only rank 0 tracks: open_tracking). A package already
    imported (a fork server's preload) is left as it is. Returns the names marked."""
    tracking = cfg.spec.tracking
    unused = [name for name in BACKENDS
              if rank != 0 or tracking is None or getattr(tracking, name) is None]
    marked = [name for name in unused if name not in sys.modules]
    for name in marked:
        sys.modules[name] = None  # `import name` raises ImportError; importlib.util.find_spec(name) is None
    return marked


def open_tracking(cfg: StageConfig, rank: int = 0) -> Tracker:
    """The stage's runs (none when spec.tracking is absent, on ranks > 0, or where a backend cannot start)."""
    global _active
    tracking = cfg.spec.tracking
    opened = []
    for name in ("mlflow", "wandb") if tracking is not None and rank == 0 else ():
        if getattr(tracking, name) is None:
            continue
        try:
            opened.append(BACKENDS[name](cfg))
        except Exception as exc:  # noqa: BLE001: unreachable, refused, not installed: a warning
            warn(f"{name}: opening a run at {_where(cfg, name)}", exc)
    _active = Tracker(opened)
    return _active


def _where(cfg: StageConfig, name: str) -> str:
    if name == "mlflow":
        return cfg.spec.tracking.mlflow.tracking_uri
    return cfg.spec.tracking.wandb.base_url or "W&B's cloud"


# ------------------------------------------------------------------------------------- what each stage logs

def scalars(prefix: str, values: Mapping[str, Any]) -> dict[str, float]:
    return {f"{prefix}{k}": v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def active() -> Tracker:
    """This stage process's tracker (an empty one before open_tracking, or outside a stage)."""
    return _active if _active is not None else Tracker([])


def log_train(stats: Mapping[str, Any]) -> None:
    """After training: the learning/forgetting curve points (evaluation.everySteps) and the KL early warning's
    points, each at its optimizer step (TRL's own per-step logs went through report_to)."""
    tracker = active()
    if not tracker.backends:
        return
    for point in stats.get("curve") or []:
        tracker.log({**scalars("curve/task/", point.get("tasks") or {}),
                     **scalars("curve/general/", point.get("general") or {})}, step=int(point["step"]))
    for ref, series in (stats.get("policy_kl") or {}).items():
        if isinstance(series, dict):
            for step, value in series.get("points") or []:
                tracker.log({f"policy_kl/{ref}": value}, step=int(step))


def log_evaluation(store, cfg: StageConfig, row: Mapping[str, Any]) -> None:
    """After an evaluation is committed: the row of the matrix (accuracy per task seen, score per benchmark) and
    AA, BWT, forgetting and plasticity over the committed rows so far, at step = the task index."""
    tracker = active()
    if not tracker.backends:
        return
    try:
        from cpt_core import forgetting
        from cpt_core.storage import load_committed

        spec = cfg.spec
        matrix, _ = forgetting.accuracy_rows(load_committed(store), [t.name for t in spec.tasks],
                                             [b.name for b in spec.general])
        i = cfg.task_index
        metrics = {"aa": forgetting.average_accuracy(matrix, i), "bwt": forgetting.backward_transfer(matrix, i),
                   "forgetting": forgetting.forgetting(matrix, i), "plasticity": forgetting.plasticity(matrix)}
    except Exception as exc:  # noqa: BLE001: the row itself is still logged
        warn("reading the committed matrix for AA/BWT", exc)
        metrics = {}
    tracker.log({**scalars("acc/", row.get("tasks") or {}), **scalars("general/", row.get("general") or {}),
                 **{k: v for k, v in metrics.items() if v is not None}}, step=cfg.task_index)


def log_summary(stage: str, summary: Mapping[str, Any]) -> None:
    """The stage's CPT_RESULT numbers (RIF's kept/dropped, train steps/seconds/tokens, ...) once it succeeded."""
    active().log(scalars(f"{stage}/", summary), step=int(summary.get("steps") or 0))


def guard_integrations(trainer) -> None:
    """The Trainer's report_to callbacks wrapped so that a tracking server failing mid-training is a warning."""
    handler = trainer.callback_handler
    handler.callbacks = [_Guarded(cb) if type(cb).__name__ in INTEGRATIONS else cb for cb in handler.callbacks]


class _Guarded:
    """Forwards every Trainer event to `inner`; its first exception is warned about and the callback is dropped."""

    def __init__(self, inner):
        self.inner, self.failed = inner, False

    def __getattr__(self, name: str):
        attr = getattr(self.inner, name)
        if not name.startswith("on_") or not callable(attr):
            return attr

        def call(*args, **kwargs):
            if self.failed:
                return None
            try:
                return attr(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001: tracking never fails a stage
                self.failed = True
                warn(f"{type(self.inner).__name__}.{name}", exc)
                return None
        return call
