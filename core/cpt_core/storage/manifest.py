"""Committing a task (manifest written last) and finding committed tasks to resume from.

A task is committed when `tasks/<i>-<name>/manifest.json` exists and every file it lists is present with the
listed size (and sha256, when asked). Anything else under tasks/ is an unfinished or broken attempt: ignored
by readers, deleted by `reset_task` before a redo. The manifest also embeds eval/rif/train results, so the
operator reads one small object per task and imports no torch.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, Literal, Mapping, Optional

from cpt_core import layout
from pydantic import ValidationError

from cpt_core.results import CommittedTask, ManifestFile, ManifestModel, manifest_problem
from cpt_core.storage.base import FileInfo, Store, dump_json, sha256_file
from cpt_core.storage.errors import CommitConflict, CorruptTask, NotFound, StorageError
from cpt_core.storage.staging import is_attempt_key

log = logging.getLogger(__name__)
MANIFEST_VERSION = 1
Verify = Literal["size", "sha256"]
# Written next to a committed task's manifest by a stage that found its bytes damaged (sha256 mismatch, which a
# size check cannot see): readers then report the task as damaged instead of counting it.
DAMAGED = "damaged.json"
_RESULTS = {"eval": layout.EVAL, "rif": layout.RIF, "train": layout.TRAIN_STATS}


def manifest_key(index: int, name: str) -> str:
    return layout.task_key(index, name, layout.MANIFEST)


def _parallel(fn: Any, items: list[Any], workers: int = 8) -> list[Any]:
    if len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


# ------------------------------------------------------------------------------------------------ commit

def commit_task(store: Store, index: int, name: str, spec_hash: str, summary: dict[str, Any],
                checkpoint: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Write the manifest of everything now under the task's directory; the task counts from then on.

    eval.json must be there. `checkpoint`: the sub-manifest of the attempt evaluate scored (staging.py); its
    files are committed with its hashes and no other attempt's files are. Idempotent: committing the same files
    and spec_hash again returns the existing manifest. A different existing manifest raises CommitConflict
    (call `reset_task` first).
    """
    tdir = layout.task_dir(index, name)
    mkey = manifest_key(index, name)
    listing = [info for info in store.list_info(tdir) if info.key != mkey]
    if not any(info.key == layout.task_key(index, name, layout.EVAL) for info in listing):
        raise StorageError(f"cannot commit {tdir}: {layout.EVAL} is missing")
    staged: list[ManifestFile] = []
    if checkpoint is not None:
        sizes = {info.key: info.size for info in listing}
        staged = [ManifestFile(f["key"], int(f["size"]), f["sha256"]) for f in checkpoint["files"]]
        gone = [f.key for f in staged if sizes.get(f.key) != f.size]
        if gone:
            raise CorruptTask(f"cannot commit {tdir}: the scored checkpoint changed since it was read: {gone[:3]}")
        listing = [info for info in listing if not is_attempt_key(index, name, info.key)]
    files = sorted(_parallel(lambda info: _describe(store, info), listing) + staged, key=lambda f: f.key)
    results = {}
    for field_name, leaf in _RESULTS.items():
        key = layout.task_key(index, name, leaf)
        results[field_name] = store.get_json(key) if any(f.key == key for f in files) else None
    manifest = {
        "version": MANIFEST_VERSION, "index": index, "name": name, "spec_hash": spec_hash,
        "committed_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "summary": summary,
        "files": [{"key": f.key, "size": f.size, "sha256": f.sha256} for f in files],
        "results": results,
        **({"checkpoint": checkpoint["prefix"], "attempt": checkpoint["attempt"]} if checkpoint else {}),
    }
    if not store.put_if_absent(mkey, dump_json(manifest)):
        existing = _read_manifest(store, mkey)[0]
        if existing is None or not _same_commit(existing, manifest):
            raise CommitConflict(f"{tdir} is already committed with other files or spec_hash "
                                 f"{(existing or {}).get('spec_hash')!r}; reset_task it before a redo")
        manifest = existing
    return manifest


def _describe(store: Store, info: FileInfo) -> ManifestFile:
    """sha256 from upload metadata when the backend kept it (S3), else by reading the object."""
    head = store.head(info.key)
    if head is not None and head.sha256 and head.size == info.size:
        return ManifestFile(info.key, info.size, head.sha256)
    return ManifestFile(info.key, info.size, store.sha256(info.key))


def _same_commit(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.get("spec_hash") == b.get("spec_hash") and a.get("files") == b.get("files")


def reset_task(store: Store, index: int, name: str) -> None:
    """Forget a task before redoing it: the manifest goes first (so a crash midway leaves it uncommitted),
    then every leftover file."""
    store.delete_keys([manifest_key(index, name)])
    store.abort_uploads(layout.task_dir(index, name))  # parts a killed writer left (billed, never listed)
    store.delete_prefix(layout.task_dir(index, name))


def mark_damaged(store: Store, task: CommittedTask, why: str) -> None:
    """Record that a committed task failed a check (the next task's stage found its checkpoint corrupt)."""
    store.put_json(layout.task_key(task.index, task.name, DAMAGED),
                   {"why": why, "at": datetime.now(timezone.utc).isoformat(timespec="seconds")})


def prepare_task(store: Store, index: int, name: str, spec_hash: str, verify: Verify = "size"
                 ) -> Optional[CommittedTask]:
    """Call before running a task's first stage: returns the committed task if it is already done for this
    spec_hash (skip it); otherwise deletes whatever a previous or stale attempt left and returns None."""
    task = load_task(store, index, name, verify=verify)
    if task is not None and task.spec_hash == spec_hash:
        return task
    if store.list(layout.task_dir(index, name)) or store.abort_uploads(layout.task_dir(index, name)):
        log.info("resetting %s (%s)", layout.task_dir(index, name),
                 "stale spec_hash" if task is not None else "uncommitted leftovers")
        reset_task(store, index, name)
    return None


# ------------------------------------------------------------------------------------------------ load

def load_committed(store: Store, verify: Verify = "size") -> dict[int, CommittedTask]:
    """Every committed task by index (see `load_committed_report`)."""
    return load_committed_report(store, verify)[0]


def load_committed_report(store: Store, verify: Verify = "size") -> tuple[dict[int, CommittedTask], dict[int, str]]:
    """(committed tasks by index, damaged tasks by index -> why). One listing of tasks/ plus one GET per
    manifest ("size"); "sha256" also reads every file back. If two names share an index (the spec changed), the
    newest commit wins. A task with a manifest that is malformed or whose files do not match is damaged: not
    committed, and reported, so a reader can tell "never committed" from "committed, then lost". Storage
    errors (other than a missing key) raise: an unreadable manifest is not a missing one."""
    listing = store.list_info(layout.TASKS)
    sizes = {info.key: info.size for info in listing}
    manifests = [key for key in sizes if key.count("/") == 2 and key.endswith("/" + layout.MANIFEST)]
    loaded = _parallel(lambda key: _load_one(store, key, sizes, verify), manifests)
    out: dict[int, CommittedTask] = {}
    for task in sorted((t for t, _ in loaded if t is not None), key=lambda t: (t.index, t.committed_at)):
        out[task.index] = task
    damaged: dict[int, str] = {}
    for key, (task, problem) in zip(manifests, loaded, strict=True):
        index = _index_of(key)
        if problem and index is not None and index not in out:
            damaged[index] = f"{key.rsplit('/', 1)[0]}: {problem}"
    for key in sizes:
        index = _index_of(key)
        if key.endswith("/" + DAMAGED) and index is not None and index in out:
            damaged[index] = f"{key.rsplit('/', 1)[0]}: {_damage_note(store, key)}"
    return out, damaged


def load_task(store: Store, index: int, name: str, verify: Verify = "size") -> Optional[CommittedTask]:
    """One task if it is committed and verifies, else None."""
    sizes = {info.key: info.size for info in store.list_info(layout.task_dir(index, name))}
    key = manifest_key(index, name)
    if key not in sizes or layout.task_key(index, name, DAMAGED) in sizes:
        return None
    return _load_one(store, key, sizes, verify)[0]


def _index_of(key: str) -> Optional[int]:
    head = key.split("/")[1].split("-", 1)[0] if key.count("/") >= 2 else ""
    return int(head) if head.isascii() and head.isdigit() else None


def _damage_note(store: Store, key: str) -> str:
    try:
        note = store.get_json(key)
    except StorageError as exc:
        if exc.transient:
            raise
        note = None
    why = note.get("why") if isinstance(note, dict) else None
    return f"a stage found it damaged: {str(why)[:300]}" if why else "a stage found it damaged"


def _read_manifest(store: Store, key: str) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    try:
        data = store.get_bytes(key)
    except NotFound:
        return None, None  # deleted since the listing: not committed, nothing to report
    try:
        parsed = json.loads(data)
    except ValueError as exc:
        return None, f"manifest is not valid JSON ({exc})"
    return (parsed, None) if isinstance(parsed, dict) else (None, "manifest is not a JSON object")


def _load_one(store: Store, key: str, sizes: Mapping[str, int], verify: Verify
              ) -> tuple[Optional[CommittedTask], Optional[str]]:
    manifest, problem = _read_manifest(store, key)
    if manifest is None:
        return None, problem
    try:
        task = _parse(manifest, key)
    except ValidationError as exc:
        log.warning("ignoring %s: %s", key, manifest_problem(exc))
        return None, manifest_problem(exc)
    except ValueError as exc:
        log.warning("ignoring %s: %s", key, exc)
        return None, str(exc)
    problem = _check_files(store, task.files, sizes, verify)
    if problem:
        log.warning("ignoring %s: %s", task.dir, problem)
        return None, problem
    return task, None


def _parse(raw: dict[str, Any], key: str) -> CommittedTask:
    m = ManifestModel.model_validate(raw)
    if key != manifest_key(m.index, m.name):
        raise ValueError(f"manifest of task {m.index} {m.name!r} does not belong at {key}")
    files = tuple(ManifestFile(f.key, f.size, f.sha256) for f in m.files)
    tdir = layout.task_dir(m.index, m.name) + "/"
    if any(not f.key.startswith(tdir) for f in files):
        raise ValueError("manifest lists files outside its task")
    ckpt = raw.get("checkpoint") or layout.task_key(m.index, m.name, layout.CHECKPOINT)  # staged, or as before
    if not isinstance(ckpt, str) or not is_attempt_key(m.index, m.name, ckpt + "/x"):
        raise ValueError(f"manifest names checkpoint {ckpt!r} outside its task")
    results = raw["results"]  # as written (the model checked the fields the operator reads)
    return CommittedTask(
        index=m.index, name=m.name, spec_hash=m.spec_hash, eval=results["eval"],
        rif=results.get("rif"), train=results.get("train"),
        checkpoint=ckpt if any(f.key.startswith(ckpt + "/") for f in files) else None,
        committed_at=m.committed_at, files=files)


def _check_files(store: Store, files: tuple[ManifestFile, ...], sizes: Mapping[str, int],
                 verify: Verify) -> Optional[str]:
    for f in files:
        if f.key not in sizes:
            return f"{f.key} is missing"
        if sizes[f.key] != f.size:
            return f"{f.key} has {sizes[f.key]} bytes, manifest says {f.size}"
    if verify == "sha256":
        actual = _parallel(lambda f: store.sha256(f.key), list(files))
        for f, sha in zip(files, actual, strict=True):
            if sha != f.sha256:
                return f"{f.key} sha256 mismatch"
    return None


# ------------------------------------------------------------------------------------------------ fetch

def fetch_checkpoint(store: Store, task: CommittedTask, local_dir: str | os.PathLike[str],
                     verify: bool = True) -> str:
    """Download a committed task's checkpoint (exactly the manifest's files) into local_dir and check each
    file's size and sha256 against the manifest; CorruptTask (and the bad files removed) on any mismatch."""
    if task.checkpoint is None:
        raise StorageError(f"{task.dir} has no checkpoint")
    base = task.checkpoint + "/"
    wanted = [f for f in task.files if f.key.startswith(base)]
    pairs = [(f.key, os.path.join(os.fspath(local_dir), *f.key[len(base):].split("/"))) for f in wanted]
    store.download_files(pairs)
    if verify:
        def check(item: tuple[ManifestFile, str]) -> Optional[str]:
            f, path = item
            if os.path.getsize(path) != f.size or sha256_file(path) != f.sha256:
                os.unlink(path)
                return f.key
            return None

        bad = [key for key in _parallel(check, list(zip(wanted, [p for _, p in pairs], strict=True)), 4) if key]
        if bad:
            raise CorruptTask(f"{task.dir}: {len(bad)} checkpoint file(s) do not match the manifest: {bad[:3]}")
    return os.fspath(local_dir)

