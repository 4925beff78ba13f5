"""A task the model never solves: RIF drops every prompt, and `cpt run` says so instead of a silent Succeeded.

spec.noSignal: fail (the default) stops the run after that task is evaluated; `skip` goes on. Both put a warning
line in the report and keep the reason in report.json.
"""

import json
import os
import subprocess
import sys

import pytest

from cpt_trainer import synthetic

from .conftest import write_spec

pytestmark = pytest.mark.slow
CPT = [sys.executable, "-m", "cpt_operator.cli"]


def cpt_run(spec, cwd):
    return subprocess.run([*CPT, "run", str(spec), "--metrics-port", "-1"], cwd=cwd, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_a_task_rif_drops_entirely_fails_the_run_or_is_skipped_loudly(workspace):
    # An answer longer than maxCompletionTokens (12): no rollout can ever match it.
    for pool in ("train", "eval"):
        rows = [{"prompt": f"Say the password {i}.", "answer": "q" * 20} for i in range(6)]
        synthetic.write_jsonl(rows, str(workspace / f"never-{pool}.jsonl"))
    second = "{name: add, train: add-train.jsonl, eval: add-eval.jsonl, reward: numeric}"
    spec = write_spec(workspace, name="nosig", storage="out-nosig", max_steps=2, no_signal=None,
                      **{second: "{name: never, train: never-train.jsonl, eval: never-eval.jsonl}"})

    proc = cpt_run(spec, workspace)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    reason = "RIF dropped all 6 training prompts (none solved 1+ times in 4 rollouts)"
    assert "**Warning: task 'never' taught the model nothing**: " + reason in proc.stdout
    assert "spec.noSignal: skip" in proc.stderr  # the error line says how to go on
    report = json.loads((workspace / "out-nosig" / "report.json").read_text())
    # the last task taught nothing: never a silent Succeeded
    assert report["phase"] == "Failed" and report["completedTasks"] == 2
    assert report["perTask"][2]["noSignal"] == reason and report["perTask"][2]["learnerSteps"] == 0
    assert report["perTask"][1]["noSignal"] is None and report["perTask"][1]["learnerSteps"] == 2
    assert "'never' taught nothing" in report["message"]

    spec.write_text(spec.read_text() + "  noSignal: skip\n")  # the user's decision: go on with it untrained
    proc = cpt_run(spec, workspace)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((workspace / "out-nosig" / "report.json").read_text())
    assert report["phase"] == "Succeeded" and report["completedTasks"] == 2
    assert report["perTask"][2]["noSignal"] == reason and "taught the model nothing" in proc.stdout
    assert "already committed, not redone" in proc.stdout  # the decision needed no new training
