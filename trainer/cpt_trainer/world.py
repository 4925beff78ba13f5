"""A stage's first check: does it run in the world its executor meant to start?

A learner that silently runs alone (a launcher that started one process, `accelerate launch` inside a TrainJob,
a torchrun with the wrong --nproc-per-node) would train at a fraction of the speed and still "succeed", or hang
at its first collective. The executor writes how many processes it starts into the stage config
(`StageConfig.world_size`); every rank compares it with the WORLD_SIZE its launcher set, before importing the ML
stack, and stops with both numbers (exit 2: relaunching the same job cannot help).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from cpt_core.stage import StageConfig


class WorldSizeError(ValueError):
    """The launcher started a different number of processes than the stage config asks for."""


def rank(env: Mapping[str, str] = os.environ) -> int:
    """This process's global rank (RANK, set by every launcher above); 0 without a launcher."""
    return int(env.get("RANK", "0"))


def seen_world_size(env: Mapping[str, str]) -> int:
    """WORLD_SIZE as torchrun, the Kubeflow operators and DeepSpeed's launcher set it; 1 without a launcher."""
    raw = env.get("WORLD_SIZE", "1").strip() or "1"
    try:
        return int(raw)
    except ValueError:
        raise WorldSizeError(f"WORLD_SIZE={raw!r} is not a number") from None


def check_world(cfg: StageConfig, env: Mapping[str, str] = os.environ) -> None:
    seen = seen_world_size(env)
    if seen != cfg.world_size:
        learner = cfg.spec.learner
        raise WorldSizeError(
            f"the {cfg.stage} stage of task {cfg.task_index} sees WORLD_SIZE={seen} but its config asks for "
            f"world_size={cfg.world_size} (learner.replicas {learner.replicas} x "
            f"{learner.processes_per_replica} processes per replica on a cluster, 1 under `cpt run`): the "
            "launcher started the wrong number of processes (torchrun's --nproc-per-node / --nnodes, or a "
            "launcher such as `accelerate launch` that starts one); nothing was trained")
