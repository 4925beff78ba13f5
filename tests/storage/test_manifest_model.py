"""Malformed values inside a manifest make that task damaged (not committed) with a clear reason, never a crash.

Manifests are parsed by cpt_core.results.ManifestModel; load_committed_report tells "never committed" from
"committed, then damaged" (a file deleted or truncated by a lifecycle rule, a stage's sha256 finding)."""

from __future__ import annotations

import json

import pytest

from cpt_core.storage import commit_task, layout, load_committed
from cpt_core.storage.manifest import load_committed_report, load_task, mark_damaged
from storage_testlib import write_task


def _commit_two(store) -> None:  # type: ignore[no-untyped-def]
    for i, name in ((0, "base"), (1, "a")):
        write_task(store, i, name, None, acc=0.5)
        commit_task(store, i, name, f"h{i}", {})


def _rewrite(store, index: int, name: str, change) -> None:  # type: ignore[no-untyped-def]
    key = layout.task_key(index, name, layout.MANIFEST)
    manifest = json.loads(store.get_bytes(key))
    change(manifest)
    store.put_bytes(key, json.dumps(manifest).encode())


@pytest.mark.parametrize("what, change, words", [
    ("accuracy '0.5x'", lambda m: m["results"]["eval"]["tasks"].update(a="0.5x"), "results.eval.tasks.a"),
    ("NaN accuracy", lambda m: m["results"]["eval"]["tasks"].update(a=float("nan")), "finite number"),
    ("rif as a list", lambda m: m["results"].update(rif=[1, 2]), "results.rif"),
    ("negative size", lambda m: m["files"][0].update(size=-1), "files.0.size"),
    ("no results", lambda m: m.pop("results"), "results"),
])
def test_malformed_values_make_the_task_damaged_not_a_crash(store, what, change, words) -> None:  # type: ignore[no-untyped-def]
    _commit_two(store)
    _rewrite(store, 1, "a", change)
    committed, damaged = load_committed_report(store)
    assert sorted(committed) == [0], what
    assert 1 in damaged and "malformed manifest" in damaged[1] and words in damaged[1], damaged


def test_a_manifest_that_is_not_json_is_damaged(store) -> None:  # type: ignore[no-untyped-def]
    _commit_two(store)
    store.put_bytes(layout.task_key(1, "a", layout.MANIFEST), b"{not json")
    committed, damaged = load_committed_report(store)
    assert sorted(committed) == [0] and "not valid JSON" in damaged[1]


def test_a_deleted_object_is_reported_as_damage_not_as_never_committed(store) -> None:  # type: ignore[no-untyped-def]
    _commit_two(store)
    store.delete_keys([layout.task_key(1, "a", layout.EVAL)])
    committed, damaged = load_committed_report(store)
    assert sorted(committed) == [0] and "eval.json is missing" in damaged[1]


def test_a_stage_marks_a_committed_task_damaged(store) -> None:  # type: ignore[no-untyped-def]
    _commit_two(store)
    mark_damaged(store, load_committed(store)[1], "checkpoint/model.safetensors sha256 mismatch")
    committed, damaged = load_committed_report(store)
    assert sorted(committed) == [0, 1]  # still counted: its later lineage must not be redone silently
    assert "sha256 mismatch" in damaged[1]
    assert load_task(store, 1, "a") is None  # but no stage builds on it
