"""Step checkpoints of the train stage: what one is for (the fingerprint) and finding the one to resume from
(docs/checkpoints.md); the Trainer callback that saves and uploads them is step_upload.py.

HF Trainer writes the checkpoint folder itself (model, optimizer.pt, scheduler.pt, rng_state.pth,
trainer_state.json with the step count and logs; under DeepSpeed the engine's own checkpoint: model states and
each rank's ZeRO optimizer shard, and an rng_state_<r>.pth per rank) and `train(resume_from_checkpoint=...)`
restores all of it and skips the batches already trained; this module moves those folders to and from the run's
storage with the task commit rule (cpt_core.storage.steps): step.json last, sha256 checked on download, `keep`
kept. With several ranks each rank downloads the shared files and its own shards only (rank_sync.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

from cpt_core import layout, protocol
from cpt_core.api import SFT_METHODS, CheckpointSpec
from cpt_core.stage import StageConfig
from cpt_core.storage import CorruptTask, StorageError
from cpt_core.storage.base import Store, sha256_file
from cpt_core.results import ResumeMarker
from cpt_core.storage.resume_marker import write_marker
from cpt_core.storage.steps import (StepCheckpoint, StepMismatch, check_fingerprint, delete_step, fetch_step,
                                    list_steps, step_folders)
from cpt_trainer.rank_sync import RankSync, wanted_by
from cpt_trainer.step_upload import StepCheckpointCallback, warn

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


def find_resume(store: Store, index: int, name: str, expected: dict[str, Any], local_root: str,
                say: Callable[[str], None] = warn,
                sync: Optional[RankSync] = None) -> tuple[Optional[Resume], list[str]]:
    """The newest committed step checkpoint of the task whose fingerprint is `expected` and whose files verify,
    downloaded under local_root; and one line for each one refused (cut mid-upload, corrupt, another run's),
    also passed to `say`. Refused ones are deleted: they can never be used and must not outlive `keep`.
    With several ranks (`sync`) rank 0 lists and proposes each candidate in turn, every rank downloads and verifies
    the files it needs (the shared ones and its own shards), and a candidate is taken only when every rank's
    verify; rank 0 alone says and deletes."""
    lead = sync is None or sync.lead
    committed, problems = list_steps(store, index, name) if lead else ([], [])
    refused = [f"step checkpoint not used: {p}" for p in problems]
    want = wanted_by(sync.rank) if sync is not None else None
    found, pending = None, list(committed)
    while True:
        ckpt = pending.pop(0) if lead and pending else None
        if sync is not None:
            ckpt = sync.broadcast(ckpt)
        if ckpt is None:
            break
        error, failed, local = None, None, os.path.join(local_root, f"checkpoint-{ckpt.step}")
        try:
            check_fingerprint(ckpt, expected)
            fetch_step(store, ckpt, local, want)
        except (StepMismatch, CorruptTask) as exc:
            error = str(exc)
        except StorageError as exc:  # not the checkpoint's fault (storage unreachable): stop, delete nothing
            if sync is None:
                raise
            failed = f"rank {sync.rank}: {exc}"
        if sync is not None:  # every rank learns every rank's outcome; one failing alone would hang the others
            outcomes = sync.gather((error, failed))
            failures = [f for _, f in outcomes if f]
            if failures:
                raise StorageError(f"step checkpoint {ckpt.prefix} could not be read: {'; '.join(failures)}")
            errors = list(dict.fromkeys(e for e, _ in outcomes if e))
        else:
            errors = [error] if error else []
        if errors:
            if lead:
                refused.append("; ".join(errors))
                delete_step(store, ckpt.prefix)
            continue
        found = Resume(ckpt, local)
        break
    for line in refused:
        say(line)
    return found, refused


def _quiet(_: str) -> None:
    """Ranks other than 0 say nothing: rank 0 says every refusal once."""


def clear_steps(store: Store, index: int, name: str) -> None:
    """After the task's checkpoint is published its step checkpoints are superseded: delete them all."""
    for prefix in step_folders(store.list(layout.steps_dir(index, name)), index, name):
        delete_step(store, prefix)


def _say_resumed(store: Store, cfg: StageConfig, marker: ResumeMarker) -> None:
    """The resume marker the operator's status reads while this stage trains; status only, so a storage error
    here is a warning, not the stage's end (its step checkpoints need storage anyway and will say so)."""
    try:
        write_marker(store, cfg.task_index, cfg.task_name, marker)
    except Exception as exc:  # noqa: BLE001 - best effort
        warn(f"could not write the resume marker of task {cfg.task_index} ({cfg.task_name}): {exc}")


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
        sync = RankSync() if world_size > 1 else None  # every rank: the choice and the commit are shared
        lead = sync is None or sync.lead
        expected = fingerprint(cfg, model_id, rows, world_size)
        resume, refused = find_resume(store, cfg.task_index, cfg.task_name, expected,
                                      os.path.join(workdir, "resume"), say=warn if lead else _quiet, sync=sync)
        carried: dict[str, Any] = {}
        if resume is not None:  # with several ranks, this rank's own counters (each counts its own rollouts)
            extra = resume.checkpoint.extra
            own = extra["ranks"][sync.rank] if sync is not None and "ranks" in extra else extra
            carried = {k: v for k, v in own.items() if k not in ("resumes", "ranks")}
        callback = StepCheckpointCallback(store, cfg, expected, spec, resumes=resume.resumes if resume else 0,
                                          extra=lambda: dict(carried), sync=sync)
        if resume is not None and lead:
            total = resume.checkpoint.total_steps
            warn(f"task {cfg.task_index} ({cfg.task_name}): resumed at step {resume.step} of {total} from "
                 f"{resume.checkpoint.prefix} (attempt {cfg.attempt + 1}, resume {resume.resumes})")
            protocol.progress("train", cfg.task_index, resume.step, total, resumed_at=resume.step,
                              resumes=resume.resumes, attempt=cfg.attempt)
            _say_resumed(store, cfg, ResumeMarker(cfg.attempt, resume.step, total, resume.resumes))
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
