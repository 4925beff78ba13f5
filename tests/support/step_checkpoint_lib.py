"""Shared by the step-checkpoint tests (one process, and two DeepSpeed ranks): the tiny run's spec, the stage's
CPT_ messages and the committed weights."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file

from cpt_trainer import synthetic

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "examples" / "models" / "tiny-base"
ROWS, PER_STEP, STEPS, EVERY = 8, 4, 9, 3  # 2 steps per epoch; saves at 3 (epoch 2) and 6; 9 is the last


def checkpoint_spec(tmp_path, method, storage, **over):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    for pool in ("train", "eval"):
        synthetic.write_jsonl(synthetic.generate("copy", ROWS, seed=0, pool=pool), str(data / f"{pool}.jsonl"))
    spec = {"model": str(TINY), "method": method, "seed": 1,
            "tasks": [{"name": "copy", "train": str(data / "train.jsonl"), "eval": str(data / "eval.jsonl")}],
            "grpo": {"groupSize": 4, "learningRate": 1e-3, "klCoef": 0.0, "promptsPerStep": PER_STEP,
                     "maxSteps": STEPS, "maxCompletionTokens": 16, "temperature": 1.5},
            "sft": {"learningRate": 1e-3, "batchSize": PER_STEP, "maxSteps": STEPS},
            "rollout": {"engine": "hf"}, "checkpoint": {"everySteps": EVERY, "keep": 2},
            "storage": {"uri": str(storage)}}
    spec.update(over)
    return spec


def stage_messages(lines):
    return [(line.split(" ", 1)[0], json.loads(line.split(" ", 1)[1])) for line in lines if line.startswith("CPT_")]


def stored_weights(store_dir: Path, prefix: str):
    return load_file(str(store_dir / prefix / "model.safetensors"))
