"""`cpt run` with spec.tracking.mlflow: one MLflow run per task and stage in a real MLflow file store (the
mlflow-skinny client the learner image carries, no mock), with the Trainer's curves and, after each evaluation,
the row of the matrix, AA and BWT; a tracking server that never answers is a warning and the run succeeds."""

import json
import os
import socket
import subprocess
import sys

import pytest

from .conftest import write_spec

mlflow = pytest.importorskip("mlflow", reason="the [tracking] extra (make install) brings mlflow-skinny")

pytestmark = pytest.mark.slow
ONE_TASK = {"    - {name: add, train: add-train.jsonl, eval: add-eval.jsonl, reward: numeric}\n": ""}


def _cpt_run(workspace, spec, **env):
    proc = subprocess.run([sys.executable, "-m", "cpt_operator.cli", "run", spec.name, "--metrics-port", "-1"],
                          cwd=workspace, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_cpt_run_records_one_mlflow_run_per_stage_with_curves_and_matrix_rows(workspace, tmp_path):
    from mlflow.tracking import MlflowClient

    store = f"file://{tmp_path / 'mlruns'}"
    spec = write_spec(workspace, name="tracked", storage="out-tracked", method="sft", max_steps=3, **{
        "  retry:": f"  tracking: {{mlflow: {{trackingUri: '{store}', experiment: cpt-test}}}}\n  retry:",
        "maxSamples: 16}": "maxSamples: 16, everySteps: 2}"})
    _cpt_run(workspace, spec)

    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("cpt-test")
    runs = {(r.data.tags["cpt.task_index"], r.data.tags["cpt.stage"]): r
            for r in client.search_runs([experiment.experiment_id])}
    # sft: base evaluate, then train + evaluate of each task; one run each, all finished
    assert sorted(runs) == [("0", "evaluate"), ("1", "evaluate"), ("1", "train"), ("2", "evaluate"), ("2", "train")]
    for (index, stage), run in runs.items():
        assert run.info.status == "FINISHED", (index, stage, run.info.status)
        assert run.data.tags["cpt.run"] == "tracked" and run.data.tags["cpt.attempt"] == "0"
        assert run.data.tags["cpt.task"] == ["base", "reverse", "add"][int(index)]
        assert run.info.run_name == f"tracked/{index}-{run.data.tags['cpt.task']}/{stage}"

    train = runs[("1", "train")]
    loss = client.get_metric_history(train.info.run_id, "loss")  # TRL's log through report_to, every step
    assert [m.step for m in loss] == [1, 2, 3]
    assert train.data.params.get("learning_rate") == "0.0005"  # the Trainer's arguments, logged by MLflowCallback
    curve = client.get_metric_history(train.info.run_id, "curve/task/reverse")  # evaluation.everySteps points
    assert [m.step for m in curve] == [2, 3]
    assert train.data.metrics["train/steps"] == 3

    report = json.loads((workspace / "out-tracked" / "report.json").read_text())
    matrix = report["matrix"]
    for index in (0, 1, 2):
        metrics = runs[(str(index), "evaluate")].data.metrics
        for j, name in enumerate(["reverse"] if index == 1 else ["reverse", "add"]):  # row 0: every task
            assert metrics[f"acc/{name}"] == pytest.approx(matrix[index][j]), (index, name)
        assert "general/copy" in metrics
    last = runs[("2", "evaluate")].data.metrics
    assert last["aa"] == pytest.approx((matrix[2][0] + matrix[2][1]) / 2)
    assert last["bwt"] == pytest.approx(matrix[2][0] - matrix[1][0])
    assert "bwt" not in runs[("1", "evaluate")].data.metrics  # BWT needs a second task
    history = client.get_metric_history(runs[("2", "evaluate")].info.run_id, "aa")
    assert [m.step for m in history] == [2]  # logged at step = the task index


def test_a_tracking_server_that_never_answers_is_a_warning_and_training_goes_on(workspace, tmp_path):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts connections, never answers
    port = silent.getsockname()[1]
    try:
        spec = write_spec(workspace, name="silent", storage="out-silent", method="sft", max_steps=2, **ONE_TASK, **{
            "  retry:": f"  tracking: {{mlflow: {{trackingUri: 'http://127.0.0.1:{port}'}}}}\n  retry:"})
        proc = _cpt_run(workspace, spec, MLFLOW_HTTP_REQUEST_TIMEOUT="2", MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    finally:
        silent.close()
    assert "Succeeded" in proc.stdout
    logs = list((workspace / "out-silent" / ".cpt-local").glob("*.log"))
    warned = [p.name for p in logs if "warning: tracking: mlflow: opening a run at http://127.0.0.1" in p.read_text()]
    assert len(warned) == 3, [p.name for p in logs]  # base evaluate, train, evaluate: each warned, each succeeded
    assert "warning: tracking" in proc.stdout  # and `cpt run` shows it
