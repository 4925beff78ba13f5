"""Per-attempt staging: a late writer of another attempt cannot change committed bytes; evaluate scores
verified bytes and the manifest records their hashes; a committed task found corrupt is marked damaged."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpt_core.storage import CorruptTask, commit_task, fetch_checkpoint, layout, load_committed
from cpt_core.storage.manifest import load_committed_report, mark_damaged
from cpt_core.storage.staging import checkpoint_prefix, fetch_verified, publish_checkpoint
from storage_testlib import make_checkpoint


def _ckpt(tmp_path: Path, seed: int) -> Path:
    src = tmp_path / f"ckpt{seed}"
    make_checkpoint(src, big_bytes=1 << 16, seed=seed)
    return src


def _eval(store, index: int = 1, name: str = "a") -> None:  # type: ignore[no-untyped-def]
    store.put_json(layout.task_key(index, name, layout.EVAL), {"tasks": {name: 0.5}, "general": {}})


def test_a_zombie_attempt_cannot_change_what_is_committed(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    publish_checkpoint(store, 1, "a", 0, str(_ckpt(tmp_path, 0)))  # attempt 0 "failed" but its pod lives on
    publish_checkpoint(store, 1, "a", 1, str(_ckpt(tmp_path, 1)))  # the retry
    scored = fetch_verified(store, 1, "a", str(tmp_path / "scored"))
    assert scored["attempt"] == 1 and scored["prefix"] == checkpoint_prefix(1, "a", 1)
    _eval(store)
    commit_task(store, 1, "a", "h1", {}, checkpoint=scored)
    task = load_committed(store, verify="sha256")[1]
    assert task.checkpoint == checkpoint_prefix(1, "a", 1)
    assert {f.sha256 for f in task.files if f.key.startswith(task.checkpoint)} == {f["sha256"] for f in scored["files"]}
    assert not [f for f in task.files if f.key.startswith(checkpoint_prefix(1, "a", 0) + "/")]

    # the zombie of attempt 0 finishes late: rewrites its shard (same size) and the sub-manifest
    zombie = _ckpt(tmp_path, 7)
    publish_checkpoint(store, 1, "a", 0, str(zombie))
    assert load_committed(store, verify="sha256")[1].files == task.files  # committed bytes unchanged
    out = tmp_path / "next"
    fetch_checkpoint(store, task, out)  # the next task still gets attempt 1's bytes
    assert (out / "model.safetensors").read_bytes() == (tmp_path / "ckpt1" / "model.safetensors").read_bytes()


def test_evaluate_refuses_bytes_that_differ_from_what_train_wrote(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sub = publish_checkpoint(store, 1, "a", 0, str(_ckpt(tmp_path, 0)))
    shard = next(f for f in sub["files"] if f["key"].endswith("model.safetensors"))
    data = bytearray(store.get_bytes(shard["key"]))
    data[100] ^= 0xFF  # same size, other bytes: a size check cannot see it
    store.put_bytes(shard["key"], bytes(data))
    with pytest.raises(CorruptTask, match="differ from what train wrote"):
        fetch_verified(store, 1, "a", str(tmp_path / "scored"))


def test_a_corrupt_committed_checkpoint_is_marked_damaged_not_silently_used(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    scored = publish_checkpoint(store, 1, "a", 0, str(_ckpt(tmp_path, 0)))
    _eval(store)
    commit_task(store, 1, "a", "h1", {}, checkpoint=scored)
    task = load_committed(store)[1]
    key = next(f.key for f in task.files if f.key.endswith("model.safetensors"))
    data = bytearray(store.get_bytes(key))
    data[5] ^= 0xFF
    store.put_bytes(key, bytes(data))  # corruption after commit, same size
    with pytest.raises(CorruptTask) as info:
        fetch_checkpoint(store, task, tmp_path / "next")
    mark_damaged(store, task, str(info.value))  # what the next task's stage does (trainer/stages.py)
    assert "do not match the manifest" in load_committed_report(store)[1][1]
