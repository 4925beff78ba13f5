"""PROTOCOL-v4.md Amendment 1 (bench/forgetting/v4curve.py): Part M's dev curve from the product's step
checkpoints, kept while a real `cpt run` trains (the product deletes them when it publishes the task) and scored
after the run through the product's evaluation code.

The run is a real `cpt run` of the shipped tiny base (SFT, 3 steps, a step checkpoint after every step) that also
asks for the product's own in-learner curve (`evaluation.everySteps: 1`, engine hf: allowed there). Scoring the
kept checkpoints with the hf engine must give exactly that curve, prompt for prompt: the kept files are the weights
the learner had at those steps, and the scorer formats, generates and rewards as the product does. The engine is
the scorer's only switch (make_engine / sync_weights are one interface for both), so the vllm-marked test scores
the same checkpoints through a real vLLM server (run in .venv-vllm: `.venv-vllm/bin/pytest -m vllm FILE`)."""

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

import runs
import v4curve

ROOT = Path(__file__).resolve().parents[2]


EX = ROOT / "examples"
TASK = "count"


def _doc(run_dir: Path) -> dict:
    arm = {"method": "sft", "sft": {"learningRate": 1e-3, "batchSize": 8, "maxSteps": 3}}
    doc = runs.spec("v4-curve-test", EX / "models" / "tiny-base", run_dir, arm,
                    [(TASK, EX / "data" / "count-train.jsonl", EX / "data" / "count-eval.jsonl", "numeric")],
                    [(f"dev-{TASK}", None, EX / "data" / "count-eval.jsonl", "numeric")], 0, 8, 1,
                    eval_engine="hf")
    doc["spec"]["evaluation"]["maxSamples"] = 16
    doc["spec"]["checkpoint"] = {"everySteps": 1, "everyMinutes": 0, "keep": 100}
    return doc


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One real `cpt run` (this venv's `cpt`), its step checkpoints kept while it ran."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    run_dir = tmp_path_factory.mktemp("v4curve") / "run"
    doc = _doc(run_dir)
    cpt = str(Path(sys.executable).parent / "cpt")
    with v4curve.Keep(run_dir, TASK, doc, period=0.1):
        res = runs.cached(True, run_dir, doc, 0, cpt)
    return run_dir, doc, res


def test_step_checkpoints_are_kept_while_the_product_deletes_them(finished):
    """Steps 1 and 2 of 3 (none at the last step) kept with their weights, config and tokenizer, every file's
    sha256 as step.json says; the optimizer and RNG states are not kept; the product itself deleted its copies
    when it published the task (so only a keeper running during the run has them)."""
    run_dir, doc, res = finished
    assert res["phase"] == "Succeeded"
    assert not list((run_dir / "out").glob("steps/*/*/step.json"))  # cleared by the product
    kept = v4curve.kept_steps(run_dir)
    assert sorted(kept) == v4curve.expected_steps(3, 1) == [1, 2]
    assert v4curve.all_kept(run_dir, TASK, 1) and v4curve.valid(run_dir, doc)
    for step, d in kept.items():
        info = json.loads((d / "step.json").read_text())
        names = {f["name"] for f in info["files"]}
        assert info["step"] == step and {"model.safetensors", "config.json", "tokenizer.json"} <= names
        assert not any(n.startswith(("optimizer", "rng_state", "scheduler")) for n in names)
        assert all(v4curve._sha(d / f["name"]) == f["sha256"] for f in info["files"])
    assert not v4curve.valid(run_dir, dict(doc, metadata={"name": "other"}))


def test_scoring_kept_checkpoints_reproduces_the_products_curve(finished):
    """hf scores of the kept checkpoints == the product's in-learner hf curve at steps 1 and 2, flag for flag;
    the curve points add the final row at step 3; the weights are dropped once scored; a second call scores
    nothing (cached)."""
    run_dir, doc, res = finished
    run = runs.read_run(res)
    product = {p["step"]: p["general"][f"dev-{TASK}"] for p in run["trains"][1]["curve"]}
    scores = v4curve.score(run_dir, "hf", python=Path(sys.executable))
    assert [p["step"] for p in scores["points"]] == [1, 2] and {p["engine"] for p in scores["points"]} == {"hf"}
    for p in scores["points"]:
        assert p["general"][f"dev-{TASK}"] == product[p["step"]]
        assert len(p["correct"][f"dev-{TASK}"]) == 16
    assert not any((d / "model.safetensors").exists() for d in v4curve.kept_steps(run_dir).values())
    pts = v4curve.points(run_dir, doc, run, TASK, 1, "hf")
    assert [p["step"] for p in pts] == [1, 2, 3] and pts[-1]["final"]
    assert [p["general"] for p in pts] == [{f"dev-{TASK}": product[s]} for s in (1, 2, 3)]
    assert v4curve.score(run_dir, "hf", python=Path(sys.executable))["meta"]["calls"] == 1
    assert v4curve.points(run_dir, doc, run, TASK, 1, "vllm") is None  # the final row was scored by hf


@pytest.mark.vllm
def test_kept_checkpoints_scored_through_a_real_vllm_server(finished):
    """The same kept checkpoints scored by a vLLM server started from the base, each checkpoint's weights pushed
    to it (as the evaluate stage does with evaluation.engine vllm): the engine used is vLLM, every dev prompt is
    scored, and greedy vLLM agrees with the product's hf curve on most prompts (fp32 on both)."""
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed in this venv (run in .venv-vllm)")
    run_dir, doc, res = finished
    (run_dir / "curve" / "scores-vllm.json").unlink(missing_ok=True)
    if not all((d / "model.safetensors").exists() for d in v4curve.kept_steps(run_dir).values()):
        pytest.skip("the hf test scored these checkpoints and dropped their weights (run with -m vllm)")
    scores = v4curve.score(run_dir, "vllm", python=Path(sys.executable))
    assert [p["step"] for p in scores["points"]] == [1, 2] and {p["engine"] for p in scores["points"]} == {"vllm"}
    assert scores["meta"]["server_start_s"] > 0
    product = {p["step"]: p for p in runs.read_run(res)["trains"][1]["curve"]}
    for p in scores["points"]:
        assert len(p["correct"][f"dev-{TASK}"]) == 16
        assert abs(p["general"][f"dev-{TASK}"] - product[p["step"]]["general"][f"dev-{TASK}"]) <= 0.25
