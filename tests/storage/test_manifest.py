"""Commit, verify, resume: only tasks whose manifest exists and verifies count; everything else is redone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cpt_core.storage import (CommitConflict, CorruptTask, LocalStore, StorageError, Store, commit_task,
                              fetch_checkpoint, layout, load_committed, prepare_task, reset_task)
from storage_testlib import ACCESS_KEY, SECRET_KEY, raw_client, write_task, resume_point

Ckpt = tuple[Path, dict[str, bytes]]


def _commit(store: Store, index: int, name: str, src: Path | None, spec_hash: str = "h", acc: float = 0.5) -> dict:
    write_task(store, index, name, src, acc)
    return commit_task(store, index, name, f"{spec_hash}{index}", {"attempt": 0})


def _overwrite(store: Store, key: str, data: bytes) -> None:
    """Tamper with an object behind the store's back (no sha256 metadata refresh)."""
    if isinstance(store, LocalStore):
        (store.root / key).write_bytes(data)
    else:
        endpoint = store.client.meta.endpoint_url
        raw_client(endpoint).put_object(Bucket=store.bucket, Key=f"{store.prefix}/{key}", Body=data)


def test_checkpoint_round_trip(store: Store, ckpt: Ckpt, tmp_path: Path) -> None:
    src, files = ckpt
    _commit(store, 0, "base", None)
    manifest = _commit(store, 1, "add", src, acc=0.75)
    assert store.list("tasks/1-add")[-1] != layout.MANIFEST
    keys = {f["key"] for f in manifest["files"]}
    assert keys == {f"tasks/1-add/checkpoint/{k}" for k in files} | {
        "tasks/1-add/eval.json", "tasks/1-add/rif.json", "tasks/1-add/train.json"}
    committed = load_committed(store, verify="sha256")
    assert sorted(committed) == [0, 1]
    task = committed[1]
    assert task.index == 1 and task.name == "add" and task.spec_hash == "h1"
    assert task.eval == {"tasks": {"add": 0.75}, "general": {}}
    assert task.rif == {"kept": 6, "total": 10, "filtered_fraction": 0.4} and task.train == {"steps": 3}
    assert task.checkpoint == "tasks/1-add/checkpoint"
    assert committed[0].checkpoint is None and committed[0].rif is None
    out = tmp_path / "restored"
    fetch_checkpoint(store, task, out)
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == files


def test_commit_is_idempotent_and_needs_eval(store: Store, ckpt: Ckpt) -> None:
    first = _commit(store, 1, "a", ckpt[0])
    again = commit_task(store, 1, "a", "h1", {"attempt": 0})
    assert again == first  # a retried commit (crash after the manifest) returns the existing manifest
    store.upload_dir(ckpt[0], "tasks/2-b/checkpoint")
    with pytest.raises(StorageError, match="eval.json"):
        commit_task(store, 2, "b", "h2", {})
    assert not store.exists("tasks/2-b/manifest.json")


def test_upload_killed_halfway_is_not_committed(store: Store, ckpt: Ckpt) -> None:
    """A file missing, or the manifest missing: not committed; resume continues from the last good task and
    prepare_task wipes the leftovers before the redo."""
    src, _ = ckpt
    _commit(store, 0, "base", None)
    _commit(store, 1, "a", src)
    # Task 2: stages wrote part of their files, then the pod died before the manifest.
    store.upload_file(src / "config.json", "tasks/2-b/checkpoint/config.json")
    store.put_json("tasks/2-b/rif.json", {"kept": 1})
    # Task 3: committed, then a checkpoint file vanished (partial copy, lifecycle rule, manual delete).
    _commit(store, 3, "c", src)
    store.delete_keys(["tasks/3-c/checkpoint/tokenizer.json"])
    assert sorted(load_committed(store)) == [0, 1]
    assert resume_point(store).index == 1  # 3 does not count: 2 before it is missing, and 3 is broken
    assert prepare_task(store, 2, "b", "h2") is None
    assert store.list("tasks/2-b") == []
    _commit(store, 2, "b", src)
    assert resume_point(store).index == 2
    assert prepare_task(store, 3, "c", "h3") is None  # broken commit: reset, redone
    _commit(store, 3, "c", src)
    assert resume_point(store).index == 3
    assert prepare_task(store, 3, "c", "h3").index == 3  # committed for this spec: skipped, kept


def test_process_killed_mid_upload(store: Store, tmp_path: Path) -> None:
    """SIGKILL a real uploader process while it is uploading a checkpoint, then resume."""
    src = tmp_path / "many"
    for i in range(40):
        (src / f"shard-{i:02d}.bin").parent.mkdir(parents=True, exist_ok=True)
        (src / f"shard-{i:02d}.bin").write_bytes(os.urandom(64 << 10))
    _commit(store, 0, "base", None)
    if isinstance(store, LocalStore):
        opener = f"open_store({str(store.root)!r})"
    else:
        opener = (f"open_store({store.uri!r}, endpoint={store.client.meta.endpoint_url!r}, path_style=True, "
                  f"credentials=Credentials({ACCESS_KEY!r}, {SECRET_KEY!r}))")
    child = (
        "import time, pathlib; from cpt_core.storage import open_store, commit_task, Credentials\n"
        f"st = {opener}\n"
        f"for p in sorted(pathlib.Path({str(src)!r}).iterdir()):\n"
        "    st.upload_file(p, 'tasks/1-a/checkpoint/' + p.name); time.sleep(0.05)\n"
        "st.put_json('tasks/1-a/eval.json', {}); commit_task(st, 1, 'a', 'h1', {})\n")
    proc = subprocess.Popen([sys.executable, "-c", child])
    deadline = time.time() + 30
    while len(store.list("tasks/1-a")) < 5 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert 0 < len(store.list("tasks/1-a")) < 40
    assert sorted(load_committed(store)) == [0]
    assert resume_point(store).index == 0
    assert prepare_task(store, 1, "a", "h1") is None and store.list("tasks/1-a") == []
    write_task(store, 1, "a", src)
    commit_task(store, 1, "a", "h1", {})
    assert resume_point(store, verify="sha256").index == 1


def test_corrupted_file_is_refused(store: Store, ckpt: Ckpt, tmp_path: Path) -> None:
    src, files = ckpt
    _commit(store, 0, "base", None)
    _commit(store, 1, "a", src)
    _commit(store, 2, "b", src)
    key = "tasks/2-b/checkpoint/model.safetensors"
    data = bytearray(files["model.safetensors"])
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte: only sha256 can tell
    _overwrite(store, key, bytes(data))
    assert resume_point(store, verify="sha256").index == 1
    task = load_committed(store, verify="size")[2]  # a size check cannot see it ...
    with pytest.raises(CorruptTask):  # ... but fetching verifies every byte and refuses it
        fetch_checkpoint(store, task, tmp_path / "out")
    assert not (tmp_path / "out" / "model.safetensors").exists()
    _overwrite(store, key, b"truncated")  # a different size is caught even by the cheap check
    assert sorted(load_committed(store)) == [0, 1]


def test_garbage_manifest_is_ignored(store: Store, ckpt: Ckpt) -> None:
    _commit(store, 0, "base", None)
    store.put_bytes("tasks/1-a/manifest.json", b'{"version": 1, "index": 1, "na')  # torn or foreign write
    store.put_json("tasks/2-b/manifest.json", {"version": 1, "index": 7, "name": "zz", "spec_hash": "x",
                                               "files": [], "results": {"eval": {}}})  # wrong place
    assert sorted(load_committed(store)) == [0]


def test_stale_spec_hash_is_not_taken(store: Store, ckpt: Ckpt) -> None:
    src, _ = ckpt
    _commit(store, 0, "base", None)
    _commit(store, 1, "a", src, spec_hash="old")
    assert load_committed(store)[1].spec_hash == "old1"
    store.put_json("tasks/1-a/eval.json", {"tasks": {"a": 0.9}})  # the new attempt's results ...
    with pytest.raises(CommitConflict):  # ... cannot be committed over the old manifest
        commit_task(store, 1, "a", "new1", {})
    assert prepare_task(store, 1, "a", "new1") is None  # stale: wiped
    assert store.list("tasks/1-a") == [] and sorted(load_committed(store)) == [0]
    write_task(store, 1, "a", src, acc=0.9)
    commit_task(store, 1, "a", "new1", {})
    task = load_committed(store)[1]
    assert task.index == 1 and task.spec_hash == "new1" and task.eval["tasks"] == {"a": 0.9}


def test_renamed_task_same_index_newest_wins(store: Store) -> None:
    _commit(store, 1, "old", None)
    time.sleep(0.01)
    _commit(store, 1, "new", None)
    assert load_committed(store)[1].name == "new"


def test_reset_task_removes_everything(store: Store, ckpt: Ckpt) -> None:
    _commit(store, 1, "a", ckpt[0])
    _commit(store, 2, "b", None)
    reset_task(store, 1, "a")
    assert store.list("tasks/1-a") == [] and sorted(load_committed(store)) == [2]


def test_many_tasks_resume(store: Store) -> None:
    for i in range(30):
        _commit(store, i, f"t{i}", None)
    store.delete_keys(["tasks/17-t17/eval.json"])
    assert sorted(load_committed(store)) == [i for i in range(30) if i != 17]
