"""Tracking never fails a stage (cpt_trainer.tracking): a server that never answers costs one short request and
a warning; a store that loses the run after it was opened fails transformers' MLflowCallback inside the Trainer,
which the guard turns into a warning while training goes on. Real MLflow client, real Trainer, no mock."""

from __future__ import annotations

import shutil
import socket
import time

import pytest

from cpt_core.api import CptSpec, SftSpec
from cpt_core.rewards import load_reward
from cpt_core.stage import StageConfig
from cpt_core.tasks import Task
from cpt_trainer import tracking

pytest.importorskip("mlflow", reason="the [tracking] extra (make install) brings mlflow-skinny")
MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", "MLFLOW_ALLOW_FILE_STORE",
              "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES")


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    for key in MLFLOW_ENV:  # whatever open_tracking sets is undone after the test
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    monkeypatch.setattr(tracking, "_active", None)
    yield
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run()


def _cfg(model: str, uri: str, tmp_path) -> StageConfig:
    spec = CptSpec(model=model, method="sft", tasks=[{"name": "reverse", "train": "t.jsonl", "eval": "e.jsonl"}],
                   storage={"uri": str(tmp_path / "out")}, tracking={"mlflow": {"trackingUri": uri}})
    return StageConfig(run="guard", stage="train", task_index=1, spec=spec, spec_hash="0" * 16)


def test_a_server_that_never_answers_is_one_short_request_and_a_warning(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    try:
        t0 = time.monotonic()
        tracker = tracking.open_tracking(_cfg("m", f"http://127.0.0.1:{silent.getsockname()[1]}", tmp_path))
        elapsed = time.monotonic() - t0
    finally:
        silent.close()
    assert tracker.report_to == [] and tracking.report_to() == []  # the Trainer gets no report_to
    assert elapsed < 15, elapsed
    tracker.log({"x": 1.0})  # no-ops, never raise
    tracker.finish(True)
    err = capfd.readouterr().err
    assert "cpt-trainer: warning: tracking: mlflow: opening a run at http://127.0.0.1:" in err


def test_a_store_that_loses_the_run_mid_stage_is_a_warning_and_training_goes_on(random_base, tmp_path, capfd):
    from cpt_trainer.learners.sft import train_sft
    from cpt_trainer.stages import load_model

    store = tmp_path / "mlruns"
    tracker = tracking.open_tracking(_cfg(random_base, f"file://{store}", tmp_path))
    assert tracker.report_to == ["mlflow"]
    shutil.rmtree(store)  # the run is gone before the Trainer's MLflowCallback resumes it
    model, tokenizer = load_model(random_base)
    rows = [{"prompt": f"reverse: ab{c}", "answer": f"{c}ba"} for c in "cdefgh"]
    stats, trainer = train_sft(model, tokenizer, [Task("reverse", rows, load_reward("exact"))], str(tmp_path / "t"),
                               SftSpec(learning_rate=1e-4, batch_size=2, max_steps=2))
    assert stats["steps"] == 2 and trainer.state.global_step == 2
    integrations = [type(getattr(cb, "inner", cb)).__name__ for cb in trainer.callback_handler.callbacks]
    assert "MLflowCallback" in integrations  # report_to gave the Trainer its callback
    err = capfd.readouterr().err
    assert "cpt-trainer: warning: tracking: MLflowCallback.on_train_begin failed" in err
    assert err.count("warning: tracking") == 1  # dropped after its first failure, not one warning per step
