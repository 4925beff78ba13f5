"""bench/forgetting: a cached run is reused only for the same spec and the same code snapshot."""

import json

import yaml

import cptbench as cb
from runs import cached, code_id


def test_a_finished_run_is_reused_only_under_the_code_it_ran_with(tmp_path, monkeypatch):
    monkeypatch.setitem(cb.ENV, "PYTHONPATH", f"{tmp_path}/code-aaa/core:{tmp_path}/code-aaa/trainer")
    assert code_id() == "code-aaa"
    doc = {"kind": "ContinualPostTraining", "spec": {"method": "sft"}}
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "cpt.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    done = run_dir / "done.json"

    done.write_text(json.dumps({"phase": "Succeeded", "code": "code-aaa"}))
    assert cached(False, run_dir, doc, 0)["phase"] == "Succeeded"
    done.write_text(json.dumps({"phase": "Succeeded", "code": "code-bbb"}))  # measured under other code
    assert cached(False, run_dir, doc, 0) is None
    done.write_text(json.dumps({"phase": "Succeeded"}))  # recorded before the code was: the registered snapshot
    assert cached(False, run_dir, doc, 0)["phase"] == "Succeeded"
    assert cached(False, run_dir, dict(doc, spec={"method": "grpo"}), 0) is None  # another spec


def test_a_report_only_pass_never_starts_the_base_evaluation(tmp_path, monkeypatch):
    from v3parta import PartA

    part = PartA(tmp_path, 0, smoke=True)  # smoke: the shipped tiny base is "built"
    monkeypatch.setattr("subprocess.run", lambda *a, **k: (_ for _ in ()).throw(AssertionError("evaluation ran")))
    assert part.base_eval(0, run=False) is None  # nothing cached: nothing to report, nothing run
    assert not (tmp_path / "base-eval").exists() and not (tmp_path / "data").exists()
    cache = tmp_path / "base-eval" / "tiny-base-0.json"
    cache.parent.mkdir()
    cache.write_text(json.dumps({"add": 0.5}))
    assert part.base_eval(0, run=False) == {"add": 0.5}
