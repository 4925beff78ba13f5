"""Per-attempt checkpoint staging: each train attempt writes its own prefix, evaluate scores verified bytes.

A failed attempt's pods may keep uploading while the retry writes (a zombie rank 0). With one shared prefix the
two would mix files that then commit and pass sha256 (each object is whole, the set is not). So attempt `a`
uploads under `checkpoint` (a = 0) or `checkpoint-r<a>`, then writes `checkpoint.json` last: the sub-manifest
naming its attempt and every file's key, size and sha256. Evaluate downloads exactly those files, checks each
against it, and the task manifest commits that attempt's files with those hashes (the bytes it scored) and
nothing of any other attempt, so a late writer can no longer change what is committed.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from cpt_core import layout
from cpt_core.storage.base import Store, sha256_file
from cpt_core.storage.errors import CorruptTask, NotFound, StorageError

SUB_MANIFEST = "checkpoint.json"


def checkpoint_prefix(index: int, name: str, attempt: int) -> str:
    leaf = layout.CHECKPOINT if attempt == 0 else f"{layout.CHECKPOINT}-r{attempt}"
    return layout.task_key(index, name, leaf)


def is_attempt_key(index: int, name: str, key: str) -> bool:
    """Does `key` belong to some attempt's checkpoint (or the sub-manifest), i.e. not to the task's results?"""
    base = layout.task_key(index, name, layout.CHECKPOINT)
    return key == layout.task_key(index, name, SUB_MANIFEST) or key.startswith(base + "/") or \
        key.startswith(base + "-r")


def abort_killed_uploads(store: Store, index: int, name: str) -> int:
    """Abort the multipart uploads an earlier writer of this task left open: a stage SIGKILLed mid-upload gives
    s3transfer no chance to abort (the parts are billed and invisible to listings). The task's first stage does it
    in prepare_task; every later stage (train and evaluate of rif-grpo and self-sft, evaluate of the others) calls
    this before it writes, so a killed upload of any stage is aborted by the next stage or the retry. A zombie
    writer of a failed attempt that is still uploading loses its upload too, which is what it deserves."""
    return store.abort_uploads(layout.task_dir(index, name))


def publish_checkpoint(store: Store, index: int, name: str, attempt: int, local_dir: str) -> dict[str, Any]:
    """Upload this attempt's checkpoint under its own prefix, then the sub-manifest (last)."""
    prefix = checkpoint_prefix(index, name, attempt)
    store.delete_prefix(prefix)  # this very attempt ran before (a restarted pod): start clean
    infos = store.upload_dir(local_dir, prefix)
    sub = {"attempt": attempt, "prefix": prefix,
           "files": [{"key": f.key, "size": f.size, "sha256": f.sha256} for f in infos]}
    store.put_json(layout.task_key(index, name, SUB_MANIFEST), sub)
    return sub


def read_sub_manifest(store: Store, index: int, name: str) -> Optional[dict[str, Any]]:
    try:
        sub = store.get_json(layout.task_key(index, name, SUB_MANIFEST))
    except NotFound:
        return None
    prefix = str(sub.get("prefix", "")) if isinstance(sub, dict) else ""
    files = sub.get("files") if isinstance(sub, dict) else None
    if not is_attempt_key(index, name, prefix + "/x") or not isinstance(files, list) or not files or any(
            not isinstance(f, dict) or not str(f.get("key", "")).startswith(prefix + "/") for f in files):
        raise CorruptTask(f"{layout.task_key(index, name, SUB_MANIFEST)} is malformed")
    return sub


def fetch_verified(store: Store, index: int, name: str, local_dir: str) -> dict[str, Any]:
    """Download the checkpoint the sub-manifest names and check every file's size and sha256 against it;
    CorruptTask on any mismatch (a late writer, a truncated upload). Returns the sub-manifest."""
    sub = read_sub_manifest(store, index, name)
    if sub is None:
        raise StorageError(f"no {SUB_MANIFEST} for task {index} ({name}): run its train stage first")
    base = sub["prefix"] + "/"
    pairs = [(f["key"], os.path.join(local_dir, *f["key"][len(base):].split("/"))) for f in sub["files"]]
    store.download_files(pairs)
    bad = [f["key"] for f, (_, path) in zip(sub["files"], pairs, strict=True)
           if os.path.getsize(path) != f["size"] or sha256_file(path) != f["sha256"]]
    if bad:
        raise CorruptTask(f"task {index} ({name}) attempt {sub['attempt']}: {len(bad)} checkpoint file(s) differ "
                          f"from what train wrote: {bad[:3]}")
    return sub
