"""`cpt run` with `rollout.engine: vllm` and `evaluation.engine: vllm`: it starts its own vLLM server (from the
planner's RolloutServers intent) for the base model's evaluation, hands it on to the task, every stage generates
and every row of the matrix is scored through it, the report has the usual structure, and
no server is left running afterwards."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vllm is not installed in this venv (make test runs tests/vllm_server in .venv-vllm)")

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

SPEC = """apiVersion: cpt.dev/v1alpha1
kind: ContinualPostTraining
metadata: {name: with-vllm}
spec:
  model: base
  method: rif-grpo
  tasks:
    - {name: reverse, train: reverse-train.jsonl, eval: reverse-eval.jsonl, reward: "rewards:has_e"}
  general:
    - {name: copy, eval: copy-eval.jsonl, reward: "rewards:has_e"}
  grpo: {groupSize: 4, learningRate: 5.0e-3, klCoef: 0.0, promptsPerStep: 4, maxSteps: 2, maxCompletionTokens: 12}
  rif: {rollouts: 4, mode: prefilter}
  evaluation: {maxCompletionTokens: 12, maxSamples: 16, engine: vllm}
  retry: {limit: 0, backoffSeconds: 0}
  rollout: {engine: vllm, replicas: 1}
  storage: {uri: out}
"""


def test_cpt_run_with_engine_vllm(random_base, data_dir, tmp_path):
    from cpt_core.storage import load_committed, open_store

    shutil.copytree(random_base, tmp_path / "base")
    for name in ("reverse-train", "reverse-eval", "copy-eval"):
        shutil.copy(data_dir / f"{name}.jsonl", tmp_path)
    shutil.copy(Path(__file__).parents[1] / "support" / "vllm_test_rewards.py", tmp_path / "rewards.py")
    (tmp_path / "run.yaml").write_text(SPEC)
    proc = subprocess.run([sys.executable, "-m", "cpt_operator.cli", "run", "run.yaml", "--metrics-port", "-1"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "starting 1 vLLM rollout server(s) for task 0" in out and "Accuracy matrix" in out
    assert "rollout server(s) for task 1" not in out  # task 0's server is handed on, not restarted

    committed = load_committed(open_store(str(tmp_path / "out")))
    assert sorted(committed) == [0, 1]
    assert committed[1].rif["engine"] == "vllm" and committed[1].train["engine"] == "vllm"
    assert committed[0].eval["engine"] == "vllm" and committed[1].eval["engine"] == "vllm"  # one engine
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["phase"] == "Succeeded" and report["completedTasks"] == 1 and len(report["matrix"]) == 2
    assert report["totals"]["learnerSteps"] == 2 and report["totals"]["rolloutTokens"] > 0

    # the server is gone: its port no longer answers
    log = next((tmp_path / "out" / ".cpt-local" / "rollout").rglob("rollout-0.log"))
    port = int(log.read_text().split("--port ", 1)[1].split()[0])
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the rollout server outlived cpt run"
