"""bench/forgetting protocol v3 and the SmolLM2 pilot: the registered settings (PROTOCOL-v3.md) as data.

V3 and PILOT are the protocols; smoke_protocol() and pilot_protocol(device) derive the --smoke and --device cuda
variants from them. Changing a value here changes the specs written, hence every cached run's key: never edit a
registered value."""

from __future__ import annotations

import json
from typing import Optional

BASE_SEEDS = [0, 1, 2]
RUN_SEEDS = [0, 1, 2]
# PROTOCOL-v3.md execution note: pairs in an order that spans the bases early
PAIR_ORDER = [(b, s) for s in RUN_SEEDS for b in BASE_SEEDS]


def grpo(lr: float, group: int = 8, per_step: int = 8, tokens: int = 16, temperature: float = 1.0,
         epochs: int = 16, max_steps: Optional[int] = None, kl: float = 0.01) -> dict:
    g = {"groupSize": group, "learningRate": lr, "klCoef": kl, "promptsPerStep": per_step, "epochs": epochs,
         "maxCompletionTokens": tokens, "temperature": temperature}
    return dict(g, maxSteps=max_steps) if max_steps else g


V3 = {
    "name": "v3",
    "candidates": ["reverse", "sort", "count", "max", "add", "sub"],
    "ceiling_probe": "copy",
    "n_train": 100, "n_dev": 100, "n_eval": 500,
    "tokens": 16,
    "every": 20,
    "interfering": [("sort", "max"), ("sort", "count"), ("add", "sub"), ("max", "sort")],
    "unrelated": [("reverse", "sub"), ("reverse", "add"), ("reverse", "sort")],
    "probe_range": (0.20, 0.90),
    "admission": {"max_base": 0.80, "margin": 0.10},
    "arms": {
        "sft": {"method": "sft", "sft": {"learningRate": 1e-4, "batchSize": 8, "epochs": 16}},
        "grpo": {"method": "grpo", "grpo": grpo(1e-4)},
        "rif-grpo": {"method": "rif-grpo", "grpo": grpo(1e-4), "rif": {"rollouts": 8, "minCorrect": 1},
                     "noSignal": "skip"},
        "grpo-paper": {"method": "grpo", "grpo": grpo(1e-5)},
        "self-sft": {"method": "self-sft", "grpo": grpo(1e-4),
                     "sft": {"learningRate": 1e-4, "batchSize": 8, "epochs": 16, "maxSteps": 200},
                     "rif": {"rollouts": 8, "minCorrect": 1}},
    },
    # claim 1's comparisons (A, B): matched reruns for the first pair run first (the headline)
    "comparisons": [("sft", "grpo"), ("sft", "grpo-paper"), ("sft", "self-sft"), ("grpo", "self-sft")],
}



def smoke_protocol() -> dict:
    """--smoke: the v3 machinery end to end in a few minutes (the shipped tiny base stands in for all three
    bases, two candidates, 4 steps per task); never written to RESULTS.md's v3 section."""
    p = json.loads(json.dumps(V3))
    p.update(name="v3-smoke", candidates=["sort", "count", "reverse"], n_train=16, n_dev=16, n_eval=32, every=2,
             interfering=[["sort", "reverse"]], unrelated=[], probe_range=(0.0, 1.0),
             admission={"max_base": 1.0, "margin": -1.0})
    for arm in p["arms"].values():
        for part in ("grpo", "sft"):
            if part in arm:
                arm[part].update(epochs=1, maxSteps=4)
        if "grpo" in arm:
            arm["grpo"].update(groupSize=4, promptsPerStep=4)
        if "rif" in arm:
            arm["rif"]["rollouts"] = 4
    return p


PILOT_EPOCHS = 2  # 2 epochs x 64 prompts / 8 per step = 16 optimizer steps per task (amendment B3)
PILOT_STEPS = 16
PILOT_GRPO = dict(group=4, tokens=32, temperature=0.7, epochs=PILOT_EPOCHS)
PILOT = {
    "name": "pilot",
    "candidates": ["sub", "add2", "max2", "add1"],
    "probes": ["capitals", "mul"],
    "tokens": 32,
    "every": 4,
    "seeds": [0],
    "admission": {"max_base": 0.80, "margin": 0.10},
    "arms": {
        "sft": {"method": "sft", "sft": {"learningRate": 1e-5, "batchSize": 8, "epochs": PILOT_EPOCHS}},
        "grpo": {"method": "grpo", "grpo": grpo(1e-5, **PILOT_GRPO)},
        "rif-grpo": {"method": "rif-grpo", "grpo": grpo(1e-5, **PILOT_GRPO), "rif": {"rollouts": 8, "minCorrect": 1},
                     "noSignal": "skip"},
        "self-sft": {"method": "self-sft", "grpo": grpo(1e-5, **PILOT_GRPO),
                     "sft": {"learningRate": 1e-5, "batchSize": 8, "epochs": PILOT_EPOCHS, "maxSteps": PILOT_STEPS},
                     "rif": {"rollouts": 8, "minCorrect": 1}},
    },
    "comparisons": [("sft", "grpo"), ("sft", "self-sft"), ("grpo", "self-sft")],
}
# --device cuda: the same protocol at the scale PROTOCOL-v3.md names for a GPU (3 seeds, 500-prompt eval sets
# where a task has that many problems, 64 steps per task, vLLM rollouts on the GPU)
PILOT_GPU_STEPS = 64


def pilot_protocol(device: str) -> dict:
    p = json.loads(json.dumps(PILOT))
    if device == "cuda":
        p.update(seeds=[0, 1, 2], every=16, n_eval=500, engine="vllm")
        for arm in p["arms"].values():  # 8 epochs x 64 / 8 = 64 steps
            for part in ("sft", "grpo"):
                if part in arm:
                    arm[part]["epochs"] = PILOT_EPOCHS * PILOT_GPU_STEPS // PILOT_STEPS
                    if arm[part].get("maxSteps"):
                        arm[part]["maxSteps"] = PILOT_GPU_STEPS
    return p
