"""Every registered bench/forgetting protocol as data, in one place: v1, v2 (run.py's docstring and RESULTS.md),
v3 and the SmolLM2 pilot (PROTOCOL-v3.md), v4 (PROTOCOL-v4.md). REGISTRY names each one's document, runner and
RESULTS.md section; the settings dicts are what the runners turn into specs.

Why data: a protocol is a registered document, and the code that executes it should not be able to drift from it
per generation. Changing a value here changes the specs written, hence every cached run's key: never edit a
registered value (a change after results is a new protocol)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Optional

BASE_SEEDS = [0, 1, 2]
RUN_SEEDS = [0, 1, 2]
# PROTOCOL-v3.md execution note: pairs in an order that spans the bases early
PAIR_ORDER = [(b, s) for s in RUN_SEEDS for b in BASE_SEEDS]


def grpo(lr: float, group: int = 8, per_step: int = 8, tokens: int = 16, temperature: float = 1.0,
         epochs: int = 16, max_steps: Optional[int] = None, kl: float = 0.01) -> dict:
    g = {"groupSize": group, "learningRate": lr, "klCoef": kl, "promptsPerStep": per_step, "epochs": epochs,
         "maxCompletionTokens": tokens, "temperature": temperature}
    return dict(g, maxSteps=max_steps) if max_steps else g


# ------------------------------------------------------------------------------------------------ v1, v2
# v1 (fixed before any result was looked at) and v2 (v1 with lr 1e-4, registered after v1's results): the text
# that registered them is v12.py's docstring; their runner is v12.Bench.
V1 = {
    "base": {"seed": 0, "steps": None},  # None: build-base's default recipe
    "tasks": "base-targets",  # the tasks the base recipe leaves partly solved (BaseModelConfig.targets), in order
    "general": ["copy"],
    "n_train": 100,
    "n_eval": 100,
    "grpo": {"groupSize": 8, "learningRate": 5.0e-4, "klCoef": 0.01, "promptsPerStep": 8, "epochs": 16,
             "maxCompletionTokens": 16, "temperature": 1.0},
    "sft": {"learningRate": 5.0e-4, "batchSize": 8, "epochs": 16},
    "rif": {"rollouts": 8, "minCorrect": 1},
    "evaluation": {"maxCompletionTokens": 16, "maxSamples": 100},
    "control_schedule": [5, 10, 20, 40, 80],
    "seeds": [0, 1, 2],
    "multitask_method": "grpo",
}
V2 = json.loads(json.dumps(V1))  # v2: v1 with lr 1e-4 for both SFT and GRPO; nothing else changes
V2["grpo"]["learningRate"] = 1.0e-4
V2["sft"]["learningRate"] = 1.0e-4
RUNS_DIR = {"v1": "runs", "v2": "runs-v2"}  # per protocol, under the shared work dir (base and data are shared)
# --quick: v1's machinery in a minute (a smoke base of 40 steps, 2 tasks, 2 steps); never written to RESULTS.md
QUICK = {
    "base": {"seed": 0, "steps": 40, "overrides": {"tail_steps": 0, "probe_size": 8}},
    "tasks": ["reverse", "count"],
    "general": ["copy"],
    "n_train": 12,
    "n_eval": 12,
    "grpo": {"groupSize": 4, "learningRate": 5.0e-4, "klCoef": 0.01, "promptsPerStep": 4, "epochs": 1,
             "maxSteps": 2, "maxCompletionTokens": 10, "temperature": 1.0},
    "sft": {"learningRate": 5.0e-4, "batchSize": 4, "epochs": 1, "maxSteps": 2},
    "rif": {"rollouts": 4, "minCorrect": 1},
    "evaluation": {"maxCompletionTokens": 10, "maxSamples": 12},
    "control_schedule": [1],
    "seeds": [0],
    "multitask_method": "grpo",
    "noSignal": "skip",  # the smoke base (40 steps) solves nothing: its tasks teach nothing, the run goes on
}


# ------------------------------------------------------------------------------------------------ v3
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


# ------------------------------------------------------------------------------------------------ v4
V4_REGISTERED = "5cb4da5"  # the commit that registered PROTOCOL-v4.md, before any v4 run
V4_LR = 1e-5
V4_M_GRPO = grpo(V4_LR, group=4, per_step=8, tokens=32, temperature=0.7, epochs=2)
V4_M = {  # PROTOCOL-v4.md Part M: the mechanism experiment on SmolLM2-135M-Instruct, vLLM scoring every row
    "name": "v4-m",
    "task": "add2",
    "probes": ["sub", "add1", "max2"],  # pooled: the primary endpoint
    "extra_probes": ["mul", "capitals"],  # reported separately
    "n_probe": 200,
    "tokens": 32,
    "every": 4,
    "seeds": [0],  # registered [0, 1]; the budget rule dropped seed 1 before any run (PROTOCOL-v4.md, execution note)
    "registered_seeds": [0, 1],
    "engine": "vllm",
    "arms": {
        "sft-answer": {"method": "sft", "train": "answer",
                       "sft": {"learningRate": V4_LR, "batchSize": 8, "epochs": 2}},
        "sft-format": {"method": "sft", "train": "solution",
                       "sft": {"learningRate": V4_LR, "batchSize": 8, "epochs": 2}},
        "grpo": {"method": "grpo", "grpo": V4_M_GRPO},
        "self-sft": {"method": "self-sft", "grpo": V4_M_GRPO,
                     "sft": {"learningRate": V4_LR, "batchSize": 8, "epochs": 2, "maxSteps": 16},
                     "rif": {"rollouts": 8, "minCorrect": 1}},
        "rif-grpo": {"method": "rif-grpo", "grpo": V4_M_GRPO, "rif": {"mode": "online"}, "noSignal": "skip"},
    },
    "reference": "grpo",  # "X loses more" = pooled probe change of X minus grpo's, interval below 0
    "admission_gain": 0.10,
    "match_margin": 0.05,
    "reps": 10000,
}
V4_T = {  # PROTOCOL-v4.md Part T: shared start on the tiny model (v3's bases, data and arms)
    "name": "v4-t",
    "task1": "sort",
    "task1_arm": "grpo",
    "tasks2": ["count", "reverse"],
    # "the off-ceiling probes as in v3": v3's rule (candidates in neither task, base accuracy in [0.20, 0.90] on
    # all three bases) applied to v3's base evaluations (RESULTS.md, Protocol v3, Bases)
    "probes": {"count": ["reverse"], "reverse": ["count"]},
    "ceiling_probe": "copy",
    "arms": ["sft", "grpo", "grpo-paper", "self-sft"],  # settings: V3["arms"], v3's budget
    "claims": [("T1", "sft", "grpo", "forgetting"), ("T2", "sft", "grpo-paper", "forgetting"),
               ("T3", "grpo", "grpo-paper", "forgetting"), ("T4", "sft", "self-sft", "forgetting"),
               ("T5", "sft", "grpo", "probes")],
    "admission_gain": 0.10,
    "match_margin": 0.05,
    "reps": 10000,
    "sd_per_pair": 0.075,  # v3's paired differences: the SD behind the registered minimum detectable effects
}


def v4_quick() -> tuple[dict, dict]:
    """--quick: Part T's machinery end to end in well under a minute on the shipped tiny base (one pair, one task 2,
    two arms, 2 steps, tiny sets, no admission bar); a check of the wiring, never written to RESULTS.md."""
    t = json.loads(json.dumps(V4_T))
    t.update(name="v4-t-quick", tasks2=["count"], arms=["sft", "grpo"], claims=[("T1", "sft", "grpo", "forgetting")],
             admission_gain=-1.0, match_margin=-1.0, reps=200, every=1, steps=1)
    return t, V4_M


# ------------------------------------------------------------------------------------------------ registry

@dataclass(frozen=True)
class Protocol:
    """One registered protocol: its name on the command line, the document that registered it, the module that
    runs it, and the RESULTS.md section its report replaces (a heading or a marker key)."""

    name: str
    document: str
    runner: str
    section: str
    settings: Callable[[], dict]


REGISTRY = {
    "v1": Protocol("v1", "bench/forgetting/v12.py docstring", "v12", "v1", lambda: V1),
    "v2": Protocol("v2", "bench/forgetting/v12.py docstring", "v12", "v2", lambda: V2),
    "v3": Protocol("v3", "bench/forgetting/PROTOCOL-v3.md", "v3", "v3", lambda: V3),
    "pilot": Protocol("pilot", "bench/forgetting/PROTOCOL-v3.md", "v3", "pilot", lambda: PILOT),
    "v4": Protocol("v4", "bench/forgetting/PROTOCOL-v4.md", "v4", "v4", lambda: {"M": V4_M, "T": V4_T}),
}
