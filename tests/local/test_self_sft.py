"""`method: self-sft` through `cpt run`: the filter stage samples, its correct completions become the SFT data."""

import json
import os
import subprocess
import sys

import pytest

from cpt_core.rewards import load_reward

from .conftest import write_spec

pytestmark = pytest.mark.slow


def test_self_sft_trains_on_its_own_correct_completions(workspace):
    spec = write_spec(workspace, name="selfsft", storage="out-selfsft", method="self-sft", max_steps=2,
                      **{"maxSamples: 16}": "maxSamples: 16, everySteps: 1}"})  # and a learning curve
    spec.write_text(spec.read_text() + "  rif: {rollouts: 4}\n")
    proc = subprocess.run([sys.executable, "-m", "cpt_operator.cli", "run", spec.name, "--metrics-port", "-1"],
                          cwd=workspace, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "==> task 1/2 'reverse': filter" in proc.stdout  # self-sft samples before it trains
    run_dir = workspace / "out-selfsft"
    report = json.loads((run_dir / "report.json").read_text())
    assert report["method"] == "self-sft" and report["phase"] == "Succeeded"
    reverse = report["perTask"][1]
    assert reverse["kept"] > 0 and reverse["learnerSteps"] == 2 and reverse["stageRolloutTokens"]["filter"] > 0
    rows = [json.loads(line) for line in (run_dir / "tasks" / "1-reverse" / "kept.jsonl").read_text().splitlines()]
    exact = load_reward("exact")
    assert len(rows) >= reverse["kept"]  # one row per distinct correct completion
    assert all(exact([r["solution"]], [r["answer"]])[0] > 0.5 for r in rows)  # the model's own, correct, text
    train = json.loads((run_dir / "tasks" / "1-reverse" / "train.json").read_text())
    assert train["method"] == "sft" and train["prompts"] == len(rows)
    assert [p["step"] for p in train["curve"]] == [1, 2] and set(train["curve"][0]["tasks"]) == {"reverse"}
    assert train["curve"][-1]["tasks"]["reverse"] == report["matrix"][1][0]  # its last point is the task's row
