"""Two learner ranks under DeepSpeed ZeRO-3 (torchrun, CPU, gloo) train through a real vLLM server: every rank
joins the parameter gather of each sync, rank 0 sends, and the server ends up serving the saved checkpoint."""

import json
import os
import socket
import subprocess
import sys

import pytest

pytest.importorskip("vllm", reason="vllm is not installed in this venv (make test runs tests/vllm_server in .venv-vllm)")

from cpt_core.stage import StageConfig  # noqa: E402
from cpt_core.storage import layout, open_store  # noqa: E402
from greedy_probe import assert_server_matches_learner, learner_greedy, probe_prompts  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_zero3_two_ranks_sync_the_gathered_weights(server, random_base, data_dir, tmp_path):
    from cpt_trainer.stages import load_model

    storage = tmp_path / "run"
    spec = {
        "model": random_base, "method": "grpo", "seed": 0,
        "tasks": [{"name": "reverse", "train": str(data_dir / "reverse-train.jsonl"),
                   "eval": str(data_dir / "reverse-eval.jsonl"), "reward": "vllm_test_rewards:has_e"}],
        "grpo": {"groupSize": 4, "learningRate": 5e-3, "klCoef": 0.0, "promptsPerStep": 4, "maxSteps": 2,
                 "maxCompletionTokens": 16},
        "rollout": {"engine": "vllm"}, "learner": {"replicas": 2, "zeroStage": 3},
        "storage": {"uri": str(storage)},
    }
    cfg = StageConfig.model_validate({"run": "z3", "stage": "train", "task_index": 1, "spec": spec,
                                      "spec_hash": "h", "rollout_url": server.url,
                                      "world_size": 2})  # the 2 ranks torchrun starts below (learner.replicas)
    path = tmp_path / "stage.yaml"
    path.write_text(cfg.dump_yaml())
    env = dict(os.environ, OMP_NUM_THREADS="1", DS_BUILD_OPS="0", CUDA_VISIBLE_DEVICES="",
               TORCH_EXTENSIONS_DIR=os.path.join(REPO, ".tools", "torch_extensions"),
               PYTHONPATH=os.pathsep.join([os.path.join(REPO, "tests", "support"), os.path.join(REPO, "trainer"),
                                           os.path.join(REPO, "operator"), os.path.join(REPO, "core")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "cpt_trainer.cli", "train", "--config", str(path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    result = [json.loads(x.split(" ", 1)[1]) for x in proc.stdout.splitlines() if x.startswith("CPT_RESULT")]
    assert len(result) == 2 and all(r["steps"] == 2 and r["engine"] == "vllm" for r in result)
    local = tmp_path / "ckpt"
    open_store(str(storage)).download_dir(layout.task_key(1, "reverse", layout.CHECKPOINT), str(local))
    model, tok = load_model(str(local))
    trained = assert_server_matches_learner(model, tok, server.url)  # the last sync carried the final weights
    base, _ = load_model(random_base)
    assert learner_greedy(base, tok, probe_prompts(tok)) != trained, "training did not move the greedy outputs"
