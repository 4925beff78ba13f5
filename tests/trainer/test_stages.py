"""Stage entry points end to end on a local storage URI: row 0, filter, train, evaluate, commit, bad input."""

import json
import os

import pytest
import yaml

from cpt_trainer import cli
from cpt_trainer.stages import load_model
from cpt_core.storage import layout, load_committed, open_store
from cpt_trainer.tinymodel import greedy_accuracy
from stage_cli import run_stage_cli, stage_spec, write_stage_config


def test_stage_pipeline(tiny_base, data_dir, tmp_path, capsys):
    storage = tmp_path / "run"
    spec = stage_spec(tiny_base, data_dir, storage)
    store = open_store(str(storage))

    # row 0: the base model on ALL tasks and the general benchmark
    rc, lines, res = run_stage_cli(capsys, "evaluate", "--config", write_stage_config(tmp_path, spec, "evaluate", 0))
    assert rc == 0 and res["task_index"] == 0 and set(res["tasks"]) == {"reverse", "add"}
    row0 = store.get_json(layout.task_key(0, "base", layout.EVAL))
    assert set(row0) >= {"task_index", "tasks", "general", "samples", "seconds"}
    model, tok = load_model(tiny_base)
    for name, files in (("reverse", "reverse-eval"), ("add", "add-eval"), ("copy", "copy-eval")):
        rows = [json.loads(x) for x in open(data_dir / f"{files}.jsonl")][:32]
        expected = greedy_accuracy(model, tok, rows, max_new_tokens=16)  # an independent implementation
        got = row0["general" if name == "copy" else "tasks"][name]
        assert got == pytest.approx(expected), name
    assert row0["general"]["copy"] > row0["tasks"]["reverse"] > 0 and row0["tasks"]["reverse"] < 0.9

    # task 1: filter -> train -> evaluate; committed only after evaluate
    rc, lines, res = run_stage_cli(capsys, "filter", "--config", write_stage_config(tmp_path, spec, "filter", 1))
    rif = store.get_json(layout.task_key(1, "reverse", layout.RIF))
    assert rc == 0 and rif["kept"] + rif["dropped"] == 64 and 0 < rif["kept"] < 64 and rif["engine"] == "hf"
    kept = store.get_bytes(layout.task_key(1, "reverse", layout.KEPT)).decode().splitlines()
    assert len(kept) == rif["kept"]
    expected = {"stage": "filter", "task_index": 1, "step": 1, "total_steps": 1, "kept": rif["kept"],
                "dropped": rif["dropped"]}
    assert {key: lines[-2].get(key) for key in expected} == expected

    rc, lines, res = run_stage_cli(capsys, "train", "--config", write_stage_config(tmp_path, spec, "train", 1))
    progress = [x for x in lines if "total_steps" in x]
    assert rc == 0 and [p["step"] for p in progress] == [1, 2, 3, 4]
    assert all(p["stage"] == "train" and p["total_steps"] == 4 and p["reward"] is not None for p in progress)
    train = store.get_json(layout.task_key(1, "reverse", layout.TRAIN_STATS))
    assert train["steps"] == 4 and train["prompts"] == rif["kept"] and len(train["reward_curve"]) == 4
    assert store.exists(layout.task_key(1, "reverse", "checkpoint/model.safetensors"))
    assert 1 not in load_committed(store)

    rc, lines, res = run_stage_cli(capsys, "evaluate", "--config", write_stage_config(tmp_path, spec, "evaluate", 1))
    committed = load_committed(store)
    assert rc == 0 and sorted(committed) == [0, 1]
    assert set(committed[1].eval["tasks"]) == {"reverse"} and set(committed[1].eval["general"]) == {"copy"}
    assert committed[1].rif["kept"] == rif["kept"] and committed[1].train["steps"] == 4
    assert committed[1].spec_hash == "h1" and committed[1].checkpoint

    # a committed task's stages are no-ops; task 2 starts from task 1's committed checkpoint
    rc, _, res = run_stage_cli(capsys, "evaluate", "--config", write_stage_config(tmp_path, spec, "evaluate", 1))
    assert rc == 0 and res["skipped"] == "already committed"
    rc, _, res = run_stage_cli(capsys, "filter", "--config", write_stage_config(tmp_path, spec, "filter", 2))
    assert rc == 0 and store.get_json(layout.task_key(2, "add", layout.RIF))["rollouts"] == 4


def test_sft_train_stage_and_determinism(tiny_base, data_dir, tmp_path, capsys):
    results = []
    for run in ("a", "b"):
        spec = stage_spec(tiny_base, data_dir, tmp_path / run, method="sft", rollout={"engine": "hf"})
        rc, _, res = run_stage_cli(capsys, "train", "--config", write_stage_config(tmp_path, spec, "train", 1, run))
        assert rc == 0 and res["steps"] == 4
        results.append(open_store(str(tmp_path / run)).get_bytes(
            layout.task_key(1, "reverse", "checkpoint/model.safetensors")))
    assert results[0] == results[1]  # same seed, same weights


def test_bad_input_exits_2_before_training(tiny_base, data_dir, tmp_path, capsys):
    storage = tmp_path / "run"
    spec = stage_spec(tiny_base, data_dir, storage, method="grpo")
    spec["tasks"][0]["train"] = str(data_dir / "missing.jsonl")
    assert cli.main(["train", "--config", write_stage_config(tmp_path, spec, "train", 1)]) == 2
    assert "dataset file not found" in capsys.readouterr().err
    spec = stage_spec(tiny_base, data_dir, storage, method="grpo")
    spec["tasks"][0]["reward"] = "fuzzy"
    assert cli.main(["train", "--config", write_stage_config(tmp_path, spec, "train", 1)]) == 2
    assert "unknown reward 'fuzzy'" in capsys.readouterr().err
    spec = stage_spec(tiny_base, data_dir, storage, method="grpo")
    spec["tasks"][0]["reward"] = "no_such_mod:fn"
    assert cli.main(["train", "--config", write_stage_config(tmp_path, spec, "train", 1)]) == 2
    spec = stage_spec(tiny_base, data_dir, storage, method="grpo")
    assert cli.main(["train", "--config", write_stage_config(tmp_path, spec, "train", 2)]) == 2  # task 1 not committed
    assert "not committed" in capsys.readouterr().err
    assert cli.main(["filter", "--config", write_stage_config(tmp_path, spec, "filter", 1)]) == 2  # no filter for grpo
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"run": "x", "stage": "train"}))
    assert cli.main(["train", "--config", str(bad)]) == 2
    assert not os.path.exists(storage / "tasks" / "1-reverse" / "train.json")


def test_synth_cli(tmp_path, capsys):
    out = tmp_path / "add.jsonl"
    rc, _, res = run_stage_cli(capsys, "synth", "synthetic:add", "--n", "20", "--seed", "3", "--out", str(out))
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert rc == 0 and res["rows"] == 20 and len(rows) == 20 and res["reward"] == "numeric"
    assert cli.main(["synth", "nope", "--n", "2", "--out", str(out)]) == 2


def test_multitask_baseline(tiny_base, data_dir, tmp_path, capsys):
    spec = stage_spec(tiny_base, data_dir, tmp_path / "unused", method="sft", rollout={"engine": "hf"})
    path = tmp_path / "cpt.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "cpt.dev/v1alpha1", "kind": "ContinualPostTraining",
                                    "metadata": {"name": "mt"}, "spec": spec}))
    rc, _, res = run_stage_cli(capsys, "multitask", "--spec", str(path), "--out", str(tmp_path / "mt"))
    assert rc == 0 and res["multitask"] and res["steps"] == 4
    train = json.loads((tmp_path / "mt" / "train.json").read_text())
    ev = json.loads((tmp_path / "mt" / "eval.json").read_text())
    assert train["tasks"] == ["reverse", "add"] and train["prompts"] == 128  # both pools at once
    assert set(ev["tasks"]) == {"reverse", "add"} and set(ev["general"]) == {"copy"}
    assert (tmp_path / "mt" / "checkpoint" / "model.safetensors").is_file()
