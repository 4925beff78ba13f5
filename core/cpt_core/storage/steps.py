"""Step checkpoints of a train stage: the task commit rule (manifest last, hashes checked on load) applied to one
step. Imports no torch: the trainer hands over a folder and a fingerprint, the operator can list them.

`steps/<i>-<name>/a<attempt>-s<step>/` holds the folder's files and `step.json`, written after every file: the
attempt, step, total steps, the fingerprint of what it was trained for (spec hash, start model, settings, data,
world size), free-form state (`extra`) and every file's key, size and sha256. Without `step.json`, or with a file
missing or of another size, a step checkpoint does not exist for readers; a sha256 mismatch found on download
makes it corrupt (CorruptTask). `keep` bounds how many committed ones stay.

With several learner ranks each rank uploads its own files into the same folder (each entry then names its
`rank`) and rank 0 writes step.json after a barrier (begin_step, upload_step_files, commit_step); on resume each
rank downloads only the files it needs (fetch_step's `want`). A folder may nest (DeepSpeed's `global_step<k>/`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from cpt_core import layout
from cpt_core.storage.base import Store, sha256_file
from cpt_core.storage.errors import CorruptTask, NotFound

STEP_VERSION = 1


class StepMismatch(ValueError):
    """A step checkpoint written for something else (another spec hash, start model, settings, data or world
    size): never resumed from."""


@dataclass(frozen=True)
class StepCheckpoint:
    """A committed step checkpoint, as its step.json describes it."""

    index: int
    name: str
    attempt: int
    step: int
    total_steps: int
    prefix: str
    fingerprint: dict[str, Any]
    files: tuple[dict[str, Any], ...]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def order(self) -> tuple[int, int]:
        return self.step, self.attempt


def publish_step(store: Store, index: int, name: str, attempt: int, step: int, total_steps: int, local_dir: str,
                 fingerprint: dict[str, Any], extra: Optional[dict[str, Any]] = None) -> StepCheckpoint:
    """Upload `local_dir` as step `step` of this attempt, then its step.json (last: only now does it count).
    One process; several ranks call the three parts themselves (begin_step, upload_step_files, commit_step)."""
    prefix = begin_step(store, index, name, attempt, step)
    files = upload_step_files(store, prefix, local_dir)
    return commit_step(store, index, name, attempt, step, total_steps, files, fingerprint, extra)


def begin_step(store: Store, index: int, name: str, attempt: int, step: int) -> str:
    """Clear the step's folder (this very step was saved before: uncommit first) and return it. With several
    ranks only rank 0 calls it, and the others upload only after it returned (a barrier)."""
    prefix = layout.step_dir(index, name, attempt, step)
    store.delete_keys([f"{prefix}/{layout.STEP_MANIFEST}"])
    store.delete_prefix(prefix)
    return prefix


def upload_step_files(store: Store, prefix: str, local_dir: str, rank: Optional[int] = None) -> list[dict[str, Any]]:
    """Upload one process's folder into the step's folder; the entries step.json lists (key, size, sha256, and
    the rank that wrote the file when `rank` is given)."""
    tag = {} if rank is None else {"rank": rank}
    return [{"key": f.key, "size": f.size, "sha256": f.sha256, **tag} for f in store.upload_dir(local_dir, prefix)]


def commit_step(store: Store, index: int, name: str, attempt: int, step: int, total_steps: int,
                files: list[dict[str, Any]], fingerprint: dict[str, Any],
                extra: Optional[dict[str, Any]] = None) -> StepCheckpoint:
    """Write step.json listing `files` (every rank's, all uploaded before this call): the commit. Two ranks that
    wrote the same key with other bytes would make the folder depend on upload order: refused (ValueError)."""
    prefix = layout.step_dir(index, name, attempt, step)
    seen: dict[str, dict[str, Any]] = {}
    for f in files:
        if f["key"] in seen and (seen[f["key"]]["sha256"], seen[f["key"]]["size"]) != (f["sha256"], f["size"]):
            raise ValueError(f"step checkpoint {prefix}: {f['key']} was written differently by two ranks")
        seen.setdefault(f["key"], f)
    listed = tuple(sorted(seen.values(), key=lambda f: f["key"]))
    body = {"version": STEP_VERSION, "index": index, "name": name, "attempt": attempt, "step": step,
            "total_steps": total_steps, "fingerprint": fingerprint, "extra": extra or {}, "files": list(listed)}
    store.put_json(f"{prefix}/{layout.STEP_MANIFEST}", body)
    return StepCheckpoint(index, name, attempt, step, total_steps, prefix, dict(fingerprint), listed,
                          dict(extra or {}))


def list_steps(store: Store, index: int, name: str) -> tuple[list[StepCheckpoint], list[str]]:
    """(committed step checkpoints of the task, newest first; one line per folder that is not one and why).
    Sizes are checked against one listing; hashes only on download (fetch_step)."""
    listing = {info.key: info.size for info in store.list_info(layout.steps_dir(index, name))}
    out, problems = [], []
    for prefix in step_folders(listing, index, name):
        mkey = f"{prefix}/{layout.STEP_MANIFEST}"
        if mkey not in listing:
            problems.append(f"{prefix}: no {layout.STEP_MANIFEST} (cut before its commit)")
            continue
        try:
            ckpt = _parse(store.get_json(mkey), index, name, prefix)
        except NotFound:
            continue  # pruned since the listing
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"{prefix}: malformed {layout.STEP_MANIFEST} ({exc})")
            continue
        bad = next((f"{f['key']} is missing" if f["key"] not in listing else
                    f"{f['key']} has {listing[f['key']]} bytes, {layout.STEP_MANIFEST} says {f['size']}"
                    for f in ckpt.files if listing.get(f["key"]) != f["size"]), None)
        if bad:
            problems.append(f"{prefix}: {bad}")
            continue
        out.append(ckpt)
    return sorted(out, key=lambda c: c.order, reverse=True), problems


def step_folders(keys, index: int, name: str) -> list[str]:
    """The step checkpoint folders that `keys` (under the task's steps/ prefix) lie in, sorted. A folder is the
    first level below the prefix: DeepSpeed's checkpoints nest a `global_step<k>/` folder inside it."""
    base = layout.steps_dir(index, name) + "/"
    return sorted({base + key[len(base):].split("/", 1)[0] for key in keys if key.startswith(base)})


def _parse(raw: Any, index: int, name: str, prefix: str) -> StepCheckpoint:
    if not isinstance(raw, dict) or raw.get("version") != STEP_VERSION:
        raise ValueError("not a step.json of this version")
    step, attempt = int(raw["step"]), int(raw["attempt"])
    if (raw["index"], raw["name"]) != (index, name) or prefix != layout.step_dir(index, name, attempt, step):
        raise ValueError(f"it describes task {raw['index']} {raw['name']!r} attempt {attempt} step {step}")
    files = tuple(raw["files"])
    if not files or any(not str(f["key"]).startswith(prefix + "/") or f["key"].endswith(
            "/" + layout.STEP_MANIFEST) for f in files):
        raise ValueError("its file list is empty or names files outside its folder")
    if not isinstance(raw["fingerprint"], dict):
        raise ValueError("fingerprint is not an object")
    return StepCheckpoint(index, name, attempt, step, int(raw["total_steps"]), prefix, raw["fingerprint"], files,
                          raw.get("extra") or {})


def check_fingerprint(ckpt: StepCheckpoint, expected: dict[str, Any]) -> None:
    """StepMismatch naming every part that differs (spec hash, model, settings, data, world size)."""
    diff = [f"{key} {ckpt.fingerprint.get(key)!r}, this stage has {value!r}" for key, value in expected.items()
            if ckpt.fingerprint.get(key) != value]
    if diff:
        raise StepMismatch(f"step checkpoint {ckpt.prefix} (step {ckpt.step}) was written for another run of this "
                           f"task and is refused: {'; '.join(diff)}")


def fetch_step(store: Store, ckpt: StepCheckpoint, local_dir: str,
               want: Optional[Callable[[dict[str, Any]], bool]] = None) -> str:
    """Download the step.json's files (those `want` accepts: a rank takes the shared files and its own shards)
    into local_dir and check each size and sha256; CorruptTask (naming the files) on any mismatch."""
    base = ckpt.prefix + "/"
    files = [f for f in ckpt.files if want is None or want(f)]
    pairs = [(f["key"], os.path.join(local_dir, *f["key"][len(base):].split("/"))) for f in files]
    store.download_files(pairs)
    bad = [f["key"] for f, (_, path) in zip(files, pairs, strict=True)
           if os.path.getsize(path) != f["size"] or sha256_file(path) != f["sha256"]]
    if bad:
        raise CorruptTask(f"step checkpoint {ckpt.prefix}: {len(bad)} file(s) differ from what was saved: {bad[:3]}")
    return local_dir


def delete_step(store: Store, prefix: str) -> None:
    """step.json first (a crash midway leaves an uncommitted folder, never a committed partial one)."""
    store.delete_keys([f"{prefix}/{layout.STEP_MANIFEST}"])
    store.delete_prefix(prefix)


def prune_steps(store: Store, index: int, name: str, keep: int, refuse: Optional[dict[str, Any]] = None,
                spare: Optional[str] = None) -> list[str]:
    """Keep the newest `keep` committed step checkpoints (of `refuse`'s fingerprint, when given) and delete the
    rest: older ones, other fingerprints, uncommitted folders. `spare` (a folder being written) is left alone.
    Returns the folders deleted."""
    committed, _ = list_steps(store, index, name)
    if refuse is not None:
        committed = [c for c in committed if all(c.fingerprint.get(k) == v for k, v in refuse.items())]
    kept = {c.prefix for c in committed[:keep]} | ({spare} if spare else set())
    folders = set(step_folders(store.list(layout.steps_dir(index, name)), index, name))
    gone = sorted(folders - kept)
    for prefix in gone:
        delete_step(store, prefix)
    return gone
