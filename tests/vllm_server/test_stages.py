"""The three stages with `rollout.engine: vllm` against a real vLLM server, as `cpt-trainer STAGE --config`.

filter (RIF rollouts), train (GRPO rollouts + weight sync after every step) and evaluate all go through the
server; evaluation through the server equals evaluation in the learner (both greedy) on the same checkpoint.
Last, the server dies in the middle of a train stage: the stage fails naming the server, nothing is committed.
"""

import json
import os
import signal
import threading
import time

import pytest

pytest.importorskip("vllm", reason="vllm is not installed in this venv (make test runs tests/vllm_server in .venv-vllm)")

from cpt_core.stage import StageConfig  # noqa: E402
from cpt_core.storage import layout, load_committed, open_store  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
REWARD = "vllm_test_rewards:has_e"


def _spec(model, data_dir, storage, method="rif-grpo", max_steps=2):
    return {
        "model": model, "method": method, "seed": 1,
        "tasks": [{"name": "reverse", "train": str(data_dir / "reverse-train.jsonl"),
                   "eval": str(data_dir / "reverse-eval.jsonl"), "reward": REWARD}],
        "general": [{"name": "copy", "eval": str(data_dir / "copy-eval.jsonl"), "reward": REWARD}],
        "grpo": {"groupSize": 4, "learningRate": 5e-3, "klCoef": 0.0, "promptsPerStep": 4, "maxSteps": max_steps,
                 "maxCompletionTokens": 16},
        "rif": {"rollouts": 4, "minCorrect": 1, "mode": "prefilter"},  # the filter stage goes through vLLM too
        "evaluation": {"maxCompletionTokens": 16, "maxSamples": 16, "engine": "vllm"},
        "rollout": {"engine": "vllm"},
        "storage": {"uri": str(storage)},
    }


def _stage(tmp_path, spec, stage, index, url):
    from cpt_trainer import cli

    cfg = StageConfig.model_validate({"run": "vllm-test", "stage": stage, "task_index": index, "spec": spec,
                                      "spec_hash": f"h{index}", "rollout_url": url})
    path = tmp_path / f"{stage}-{index}.yaml"
    path.write_text(cfg.dump_yaml())
    assert cli.main([stage, "--config", str(path)]) == 0
    return cfg


def test_filter_train_evaluate_through_vllm(server, random_base, data_dir, tmp_path):
    from cpt_trainer.evaluate import evaluate_row
    from cpt_trainer.rollout.hf import HfEngine
    from cpt_trainer.stages import eval_tasks, load_model

    storage = tmp_path / "run"
    spec = _spec(random_base, data_dir, storage)
    store = open_store(str(storage))

    _stage(tmp_path, spec, "filter", 1, server.url)
    rif = store.get_json(layout.task_key(1, "reverse", layout.RIF))
    assert rif["engine"] == "vllm" and rif["kept"] + rif["dropped"] == 32 and rif["kept"] > 0
    assert rif["rollout_tokens"] > 0

    _stage(tmp_path, spec, "train", 1, server.url)
    train = store.get_json(layout.task_key(1, "reverse", layout.TRAIN_STATS))
    assert train["engine"] == "vllm" and train["steps"] == 2 and train["rollout_tokens"] > 0
    assert 1 not in load_committed(store)

    cfg = _stage(tmp_path, spec, "evaluate", 1, server.url)
    committed = load_committed(store)
    assert sorted(committed) == [1] and committed[1].eval["engine"] == "vllm"

    # the same checkpoint evaluated in the learner (hf engine) gives the same row: greedy on both sides
    local = tmp_path / "ckpt"
    store.download_dir(layout.task_key(1, "reverse", layout.CHECKPOINT), str(local))
    model, tok = load_model(str(local))
    tasks, general = eval_tasks(cfg.spec, 1)
    hf_row = evaluate_row(HfEngine(model, tok), tok, 1, tasks, general, 16)
    assert hf_row["tasks"] == committed[1].eval["tasks"] and hf_row["general"] == committed[1].eval["general"]


def _kill_after_first_sync(server, offset: int, done: threading.Event):
    """SIGKILL the server once this stage's learner has pushed weights and asked for rollouts (its access log
    past `offset`, where the earlier tests' requests end)."""
    log = server.servers[0].log_path
    while not done.is_set():
        text = log.read_bytes()[offset:].decode(errors="replace")
        if "POST /update_weights" in text and "POST /v1/completions" in text:
            os.killpg(server.servers[0].proc.pid, signal.SIGKILL)
            return
        time.sleep(0.2)


def test_server_dies_mid_stage(server, random_base, data_dir, tmp_path, monkeypatch):
    """Runs last in this module: it kills the module's server. Nothing restarts it here, so the learner's fleet
    recovery (cpt_trainer.rollout.fleet) waits CPT_ROLLOUT_RECOVER_TIMEOUT for it to come back (on a cluster its
    Deployment would), then fails the stage naming the server; 20 s instead of the default 900 keeps it quick."""
    from cpt_trainer.rollout.fleet import RECOVER_TIMEOUT_ENV, StalePolicyError
    from cpt_trainer.rollout.vllm import RolloutServerError
    from cpt_trainer.rollout.weight_sync import WeightSyncError

    monkeypatch.setenv(RECOVER_TIMEOUT_ENV, "20")

    storage = tmp_path / "run"
    spec = _spec(random_base, data_dir, storage, method="grpo", max_steps=200)
    done = threading.Event()
    offset = server.servers[0].log_path.stat().st_size
    killer = threading.Thread(target=_kill_after_first_sync, args=(server, offset, done), daemon=True)
    killer.start()
    t0 = time.monotonic()
    with pytest.raises((RolloutServerError, WeightSyncError, StalePolicyError)) as err:
        _stage(tmp_path, spec, "train", 1, server.url)
    done.set()
    killer.join(10)
    try:  # sockets close (the stage's error) just before the process is reapable
        server.servers[0].proc.wait(10)
    except Exception:
        pass
    assert not server.servers[0].alive(), f"the stage failed before the server was killed: {err.value}"
    assert "127.0.0.1" in str(err.value) and str(server.servers[0].port) in str(err.value), str(err.value)
    assert time.monotonic() - t0 < 180, "a dead server must fail the stage quickly"
    store = open_store(str(storage))
    assert not load_committed(store)
    assert not store.exists(layout.task_key(1, "reverse", layout.TRAIN_STATS))
    assert not store.list(layout.task_key(1, "reverse", layout.CHECKPOINT))
    print("stage failed with:", str(err.value).splitlines()[0])
