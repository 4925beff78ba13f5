"""DeepSpeed ZeRO-2 with two CPU processes through the real train stage (torchrun launcher)."""

import json
import os
import socket
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from cpt_core.stage import StageConfig
from cpt_core.storage import layout, open_store

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["grpo"])
def test_zero2_two_cpu_processes(tiny_base, data_dir, tmp_path, method):
    storage = tmp_path / "run"
    spec = {
        "model": tiny_base, "method": method, "seed": 0,
        "tasks": [{"name": "reverse", "train": str(data_dir / "reverse-train.jsonl"),
                   "eval": str(data_dir / "reverse-eval.jsonl")}],
        "grpo": {"groupSize": 4, "learningRate": 1e-4, "klCoef": 0.01, "promptsPerStep": 4, "maxSteps": 3,
                 "maxCompletionTokens": 16},
        "rollout": {"engine": "hf"}, "learner": {"replicas": 2, "zeroStage": 2},
        "storage": {"uri": str(storage)},
    }
    cfg = StageConfig.model_validate({"run": "ds", "stage": "train", "task_index": 1, "spec": spec,
                                      "spec_hash": "h", "world_size": 2})
    path = tmp_path / "stage.yaml"
    path.write_text(cfg.dump_yaml())
    env = dict(os.environ, OMP_NUM_THREADS="1", DS_BUILD_OPS="0", CUDA_VISIBLE_DEVICES="",
               TORCH_EXTENSIONS_DIR=os.path.join(REPO, ".tools", "torch_extensions"),
               PYTHONPATH=os.pathsep.join([os.path.join(REPO, "trainer"), os.path.join(REPO, "operator")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "cpt_trainer.cli", "train", "--config", str(path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    result = [json.loads(x.split(" ", 1)[1]) for x in proc.stdout.splitlines() if x.startswith("CPT_RESULT")]
    assert len(result) == 2 and all(r["steps"] == 3 for r in result)  # both ranks trained the same steps
    progress = [x for x in proc.stdout.splitlines() if x.startswith("CPT_PROGRESS")]
    assert len(progress) == 3  # rank 0 only
    store = open_store(str(storage))
    train = store.get_json(layout.task_key(1, "reverse", layout.TRAIN_STATS))
    assert train["steps"] == 3 and train["rollout_tokens"] > 0
    local = tmp_path / "ckpt"
    store.download_dir(layout.task_key(1, "reverse", layout.CHECKPOINT), str(local))
    new, old = load_file(str(local / "model.safetensors")), load_file(os.path.join(tiny_base, "model.safetensors"))
    assert set(old) <= set(new)  # (a ZeRO save may also write the tied lm_head)
    assert any(not (new[k] == old[k]).all() for k in old)  # the weights moved
