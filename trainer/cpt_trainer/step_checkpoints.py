"""Step checkpoints of the train stage: what one is for (the fingerprint), finding the one to resume from, and the
Trainer callback that saves and uploads them (docs/checkpoints.md).

HF Trainer writes the checkpoint folder itself (model, optimizer.pt, scheduler.pt, rng_state.pth,
trainer_state.json with the step count and logs) and `train(resume_from_checkpoint=...)` restores all of it and
skips the batches already trained; this module moves those folders to and from the run's storage with the task
commit rule (cpt_core.storage.steps): step.json last, sha256 checked on download, `keep` kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from transformers import TrainerCallback

from cpt_core import layout, protocol
from cpt_core.api import SFT_METHODS, CheckpointSpec
from cpt_core.stage import StageConfig
from cpt_core.storage import CorruptTask, StorageError
from cpt_core.storage.base import Store, sha256_file
from cpt_core.storage.steps import (StepCheckpoint, StepMismatch, check_fingerprint, delete_step, fetch_step,
                                    list_steps, prune_steps, publish_step)

# Files of the base model above this size are fingerprinted by size and their first and last MiB, not read whole
# (a 7B model's 14 GB would cost a minute per stage start); a committed previous task is named by its hashes.
WHOLE_HASH_LIMIT = 64 << 20
_EDGE = 1 << 20


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_id(path: str) -> str:
    size = os.path.getsize(path)
    if size <= WHOLE_HASH_LIMIT:
        return sha256_file(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        digest.update(fh.read(_EDGE))
        fh.seek(size - _EDGE)
        digest.update(fh.read(_EDGE))
    return digest.hexdigest()


def model_identity(model_dir: str, committed_files: Optional[tuple] = None) -> str:
    """What the stage starts from: the previous task's committed checkpoint hashes when given, else the folder's
    files (weights, config, tokenizer)."""
    if committed_files:
        return _digest(sorted((f.key.rsplit("/", 1)[-1], f.sha256) for f in committed_files))
    files = sorted(os.path.relpath(os.path.join(root, f), model_dir) for root, _, names in os.walk(model_dir)
                   for f in names)
    return _digest([(rel, _file_id(os.path.join(model_dir, rel))) for rel in files])


def fingerprint(cfg: StageConfig, model_id: str, rows: list[dict], world_size: int) -> dict[str, Any]:
    """Everything a step checkpoint's numbers depend on besides the step: a resume with any of it changed would
    mix two trainings. The spec hash leaves hyper-parameters out (they may change for tasks still to come), so
    the learner's settings are here on their own."""
    spec = cfg.spec
    settings = {"method": spec.method, "sft" if spec.method in SFT_METHODS else "grpo":
                (spec.sft if spec.method in SFT_METHODS else spec.grpo).wire(),
                "zero_stage": spec.learner.zero_stage, "seed": spec.seed,
                "rif": spec.online_rif.wire() if spec.online_rif else None}  # online RIF's records shape the data
    return {"spec_hash": cfg.spec_hash, "model": model_id, "settings": _digest(settings), "data": _digest(rows),
            "world_size": world_size}


@dataclass
class Resume:
    """The step checkpoint a stage resumes from, downloaded and verified."""

    checkpoint: StepCheckpoint
    local_dir: str

    @property
    def step(self) -> int:
        return self.checkpoint.step

    @property
    def resumes(self) -> int:
        """How many times this task's training has resumed, this one included."""
        return int(self.checkpoint.extra.get("resumes", 0)) + 1


def warn(text: str) -> None:
    print(f"cpt-trainer: {text}", file=sys.stderr, flush=True)


def find_resume(store: Store, index: int, name: str, expected: dict[str, Any], local_root: str,
                say: Callable[[str], None] = warn) -> tuple[Optional[Resume], list[str]]:
    """The newest committed step checkpoint of the task whose fingerprint is `expected` and whose files verify,
    downloaded under local_root; and one line for each one refused (cut mid-upload, corrupt, another run's),
    also passed to `say`. Refused ones are deleted: they can never be used and must not outlive `keep`."""
    committed, problems = list_steps(store, index, name)
    refused = [f"step checkpoint not used: {p}" for p in problems]
    found = None
    for ckpt in committed:
        try:
            check_fingerprint(ckpt, expected)
            local = fetch_step(store, ckpt, os.path.join(local_root, f"checkpoint-{ckpt.step}"))
        except (StepMismatch, CorruptTask) as exc:
            refused.append(str(exc))
            delete_step(store, ckpt.prefix)
            continue
        found = Resume(ckpt, local)
        break
    for line in refused:
        say(line)
    return found, refused


class StepCheckpointCallback(TrainerCallback):
    """Asks the Trainer for a save every `everyMinutes` (HF Trainer counts `everySteps` itself), then uploads each
    folder it saved with step.json last, in a background thread so the next steps train meanwhile, and prunes to
    `keep`. A failed upload is reported and training goes on (the next save tries again)."""

    def __init__(self, store: Store, cfg: StageConfig, expected: dict[str, Any], spec: CheckpointSpec,
                 resumes: int = 0, extra: Callable[[], dict[str, Any]] = dict, is_writer: bool = True):
        self.store, self.cfg, self.expected, self.spec = store, cfg, expected, spec
        self.resumes, self.extra, self.is_writer = resumes, extra, is_writer
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
        elif minutes and time.monotonic() - self._last >= minutes * 60:
            control.should_save = True
        if control.should_save:
            self._saved_at = time.monotonic()

    def on_save(self, args, state, control, **kwargs):
        self._last = time.monotonic()
        local_seconds = self._last - self._saved_at
        if not self.is_writer or state.global_step >= state.max_steps:
            return  # the last step's model is published as the task's checkpoint; no resume point needed
        self.wait()
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        extra = dict(self.extra(), resumes=self.resumes)
        self._thread = threading.Thread(target=self._upload, name="step-checkpoint-upload", daemon=True,
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
        upload = time.monotonic() - t0
        self.saves.append({"step": step, "write_seconds": round(local_seconds, 3), "upload_seconds": round(upload, 3)})
        protocol.progress("train", cfg.task_index, step, total, checkpoint=step, checkpoint_key=ckpt.prefix)


def clear_steps(store: Store, index: int, name: str) -> None:
    """After the task's checkpoint is published its step checkpoints are superseded: delete them all."""
    for prefix in sorted({key.rsplit("/", 1)[0] for key in store.list(layout.steps_dir(index, name))}):
        delete_step(store, prefix)


@dataclass
class StepState:
    """One train stage's step checkpoints: where it resumes from (if anywhere), the callback that saves the next
    ones, and the counters they carry."""

    callback: Optional[StepCheckpointCallback]
    resume: Optional[Resume]
    carried: dict[str, Any]
    refused: list[str]
    spec: Optional[CheckpointSpec] = None

    @classmethod
    def open(cls, cfg: StageConfig, store: Store, workdir: str, model_id: str, rows: list[dict],
             world_size: int) -> "StepState":
        spec = cfg.spec.checkpoint
        if not spec.enabled:
            return cls(None, None, {}, [])
        if world_size > 1:
            warn(f"step checkpoints are not saved with {world_size} learner ranks yet (docs/checkpoints.md); "
                 "a retry of this stage starts at step 0")
            return cls(None, None, {}, [])
        expected = fingerprint(cfg, model_id, rows, world_size)
        resume, refused = find_resume(store, cfg.task_index, cfg.task_name, expected,
                                      os.path.join(workdir, "resume"))
        carried = {k: v for k, v in resume.checkpoint.extra.items() if k != "resumes"} if resume else {}
        callback = StepCheckpointCallback(store, cfg, expected, spec, resumes=resume.resumes if resume else 0,
                                          extra=lambda: dict(carried))
        if resume is not None:
            total = resume.checkpoint.total_steps
            warn(f"task {cfg.task_index} ({cfg.task_name}): resumed at step {resume.step} of {total} from "
                 f"{resume.checkpoint.prefix} (attempt {cfg.attempt + 1}, resume {resume.resumes})")
            protocol.progress("train", cfg.task_index, resume.step, total, resumed_at=resume.step,
                              resumes=resume.resumes, attempt=cfg.attempt)
        return cls(callback, resume, carried, refused, spec)

    @property
    def learner_kwargs(self) -> dict[str, Any]:
        return {"checkpoint": self.spec if self.callback else None,
                "resume_from": self.resume.local_dir if self.resume else None, "carried": self.carried}

    def stats(self) -> dict[str, Any]:
        """What train.json and the stage's result record about step checkpoints."""
        out: dict[str, Any] = {}
        if self.resume is not None:
            out.update(resumed_at_step=self.resume.step, resumes=self.resume.resumes)
        if self.callback is not None:
            out["step_checkpoints"] = list(self.callback.saves)
        if self.refused:
            out["refused_step_checkpoints"] = self.refused
        return out
