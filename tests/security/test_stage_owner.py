"""Issue 26, "protections that live only in the operator": a stage process checks the storage owner marker before
it prepares, writes or deletes anything, so another run's stage (a copied spec, a re-created run) cannot wipe a
committed task; and `cpt run` claims the prefix like the operator. Real stage entry point, real local store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cpt_core.resource_file import read_one
from cpt_core.stage import StageConfig
from cpt_core.storage import commit_task, layout, load_task, open_store
from cpt_core.storage.owner import claim
from cpt_core.validation import validate_resource

ROOT = Path(__file__).resolve().parents[2]


def _spec(storage: Path):
    doc = read_one(str(ROOT / "examples" / "local.yaml"))
    doc["spec"]["storage"] = {"uri": str(storage)}
    doc["spec"]["model"] = str(ROOT / "examples" / "models" / "tiny-base")
    return doc, validate_resource(doc, mode="local").spec


def test_another_runs_stage_cannot_touch_a_committed_task(tmp_path):
    from cpt_trainer.stages import StageError, run_stage

    storage = tmp_path / "store"
    doc, spec = _spec(storage)
    store = open_store(str(storage))
    assert claim(store, "uid-owner", "ns", "owner") == (None, True)
    name = spec.tasks[0].name
    cfg = StageConfig(run="intruder", namespace="ns", run_uid="uid-intruder", stage="filter"
                      if spec.has_filter_stage else "train", task_index=1, spec=spec, spec_hash="0" * 64)
    store.put_json(layout.task_key(1, name, layout.EVAL), {"tasks": {}, "general": {}})
    commit_task(store, 1, name, "h1", {"index": 1})  # committed by the owner (a spec hash the intruder lacks)
    before = sorted(store.list(""))
    with pytest.raises(StageError, match="belongs to another run"):
        run_stage(cfg, str(tmp_path / "work"))
    assert sorted(store.list("")) == before and load_task(store, 1, name) is not None
    # the owner's own stage passes the check (and would go on to run)
    ok = cfg.model_copy(update={"run_uid": "uid-owner", "stage": "evaluate", "task_index": 0})
    from cpt_core.storage import owner
    assert owner.check(store, ok.run_uid, ok.namespace, ok.run) is None


def test_cpt_run_refuses_a_prefix_another_run_owns(tmp_path):
    storage = tmp_path / "store"
    doc = read_one(str(ROOT / "examples" / "local.yaml"))
    doc["spec"]["storage"] = {"uri": str(storage)}
    for folder in ("data", "models"):  # the example's relative paths, from the run file's folder
        (tmp_path / folder).symlink_to(ROOT / "examples" / folder)
    claim(open_store(str(storage)), "uid-cluster-run", "team-a", "theirs")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = subprocess.run([sys.executable, "-m", "cpt_operator.cli", "run", str(path)], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "belongs to another run" in result.stderr and "nothing was trained" in result.stderr
    assert "uid-cluster-run" not in result.stderr and "team-a" not in result.stderr
    assert sorted(p.name for p in storage.iterdir()) == ["owner.json"]  # nothing written there
