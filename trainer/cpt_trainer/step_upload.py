"""The Trainer callback that saves step checkpoints and uploads them with the commit rule (docs/checkpoints.md).

HF Trainer writes each checkpoint folder itself, on every rank: under DeepSpeed its `_save_checkpoint` calls the
engine's `save_checkpoint` (model states and `latest` from rank 0, each rank's ZeRO optimizer shard), each rank
writes its `rng_state_<r>.pth`, rank 0 the trainer state, scheduler and tokenizer. Each rank's folder is local to
it (on a cluster, its own pod), so each rank uploads its own files into the same storage folder; rank 0 writes
step.json, listing every rank's files, only after a barrier at which every rank reported its upload done. A rank
whose upload failed makes the save uncommitted (and the stage goes on); a folder without step.json is never read.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from typing import Any, Callable, Optional

from transformers import TrainerCallback

from cpt_core import protocol
from cpt_core.api import CheckpointSpec
from cpt_core.stage import StageConfig
from cpt_core.storage import StorageError
from cpt_core.storage.base import Store
from cpt_core.storage.steps import begin_step, commit_step, prune_steps, publish_step, upload_step_files
from cpt_trainer.rank_sync import RankSync


def warn(text: str) -> None:
    print(f"cpt-trainer: {text}", file=sys.stderr, flush=True)


class StepCheckpointCallback(TrainerCallback):
    """Asks the Trainer for a save every `everyMinutes` (HF Trainer counts `everySteps` itself), then uploads each
    folder it saved with step.json last, in a background thread so the next steps train meanwhile, and prunes to
    `keep`. A failed upload is reported and training goes on (the next save tries again). With several ranks
    (`sync`) rank 0's clock decides the time trigger for all (every rank must join DeepSpeed's collective save)
    and every rank uploads its own files before rank 0 commits."""

    def __init__(self, store: Store, cfg: StageConfig, expected: dict[str, Any], spec: CheckpointSpec,
                 resumes: int = 0, extra: Callable[[], dict[str, Any]] = dict, sync: Optional[RankSync] = None):
        self.store, self.cfg, self.expected, self.spec = store, cfg, expected, spec
        self.resumes, self.extra, self.sync = resumes, extra, sync
        self._thread: Optional[threading.Thread] = None
        self._last = time.monotonic()
        self.saves: list[dict[str, float]] = []  # per committed save: step, seconds (local write, upload)
        self._saved_at = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        minutes = self.spec.every_minutes
        if state.global_step >= state.max_steps:
            control.should_save = False  # HF saves at the end too; the task's checkpoint is published instead
        elif minutes:
            due = time.monotonic() - self._last >= minutes * 60
            if self.sync is not None:
                due = self.sync.broadcast(due)
            control.should_save = control.should_save or due
        if control.should_save:
            self._saved_at = time.monotonic()

    def on_save(self, args, state, control, **kwargs):
        self._last = time.monotonic()
        local_seconds = self._last - self._saved_at
        if state.global_step >= state.max_steps:
            return  # the last step's model is published as the task's checkpoint; no resume point needed
        self.wait()
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        extra = dict(self.extra(), resumes=self.resumes)
        target = self._upload if self.sync is None else self._upload_ranked
        self._thread = threading.Thread(target=target, name="step-checkpoint-upload", daemon=True,
                                        args=(folder, state.global_step, state.max_steps, extra, local_seconds))
        self._thread.start()

    def on_train_end(self, args, state, control, **kwargs):
        self.wait()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _upload(self, folder: str, step: int, total: int, extra: dict, local_seconds: float) -> None:
        cfg, t0 = self.cfg, time.monotonic()
        try:
            ckpt = publish_step(self.store, cfg.task_index, cfg.task_name, cfg.attempt, step, total, folder,
                                self.expected, extra)
            prune_steps(self.store, cfg.task_index, cfg.task_name, self.spec.keep, self.expected, spare=ckpt.prefix)
        except (StorageError, OSError) as exc:
            warn(f"step checkpoint at step {step} not saved ({exc}); training goes on")
            return
        self._committed(ckpt.prefix, step, total, local_seconds, time.monotonic() - t0)

    def _upload_ranked(self, folder: str, step: int, total: int, extra: dict, local_seconds: float) -> None:
        """Every rank runs this; each joins both barriers whatever fails, or the others would wait forever."""
        cfg, sync, t0 = self.cfg, self.sync, time.monotonic()
        assert sync is not None
        prefix, error, files = None, None, []
        if sync.lead:
            try:
                prefix = begin_step(self.store, cfg.task_index, cfg.task_name, cfg.attempt, step)
            except StorageError as exc:
                error = f"rank 0: {exc}"
        prefix = sync.gather(prefix, upload=True)[0]  # barrier 1: nobody uploads into a folder being cleared
        if prefix is not None:
            try:
                files = upload_step_files(self.store, prefix, folder, rank=sync.rank)
            except (StorageError, OSError) as exc:
                error = f"rank {sync.rank}: {exc}"
        reports = sync.gather({"files": files, "error": error, "extra": extra}, upload=True)  # barrier 2
        if not sync.lead:
            shutil.rmtree(folder, ignore_errors=True)  # HF rotates checkpoint folders on rank 0 only
            return
        errors = [r["error"] for r in reports if r["error"]] or ([] if prefix else ["rank 0: no folder"])
        if errors:
            warn(f"step checkpoint at step {step} not saved ({'; '.join(errors)}); training goes on")
            return
        try:
            committed = dict(extra, ranks=[r["extra"] for r in reports])  # per-rank counters (rollout tokens)
            ckpt = commit_step(self.store, cfg.task_index, cfg.task_name, cfg.attempt, step, total,
                               [f for r in reports for f in r["files"]], self.expected, committed)
            prune_steps(self.store, cfg.task_index, cfg.task_name, self.spec.keep, self.expected, spare=ckpt.prefix)
        except (StorageError, ValueError) as exc:
            warn(f"step checkpoint at step {step} not saved ({exc}); training goes on")
            return
        self._committed(ckpt.prefix, step, total, local_seconds, time.monotonic() - t0)

    def _committed(self, prefix: str, step: int, total: int, local_seconds: float, upload: float) -> None:
        self.saves.append({"step": step, "write_seconds": round(local_seconds, 3), "upload_seconds": round(upload, 3)})
        protocol.progress("train", self.cfg.task_index, step, total, checkpoint=step, checkpoint_key=prefix)
