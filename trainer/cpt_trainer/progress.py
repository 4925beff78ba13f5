"""Machine-readable progress lines on stdout, read by the local executor and pod logs.

`CPT_PROGRESS {json}` once per logging step, `CPT_RESULT {json}` once at the end of a stage.
"""

from __future__ import annotations

import json
import math
import sys

from transformers import TrainerCallback


def _clean(v):
    if isinstance(v, float):
        return None if math.isnan(v) or math.isinf(v) else round(v, 6)
    return v


def emit(kind: str, payload: dict) -> None:
    print(f"{kind} " + json.dumps({k: _clean(v) for k, v in payload.items()}, sort_keys=False), flush=True)


def progress(stage: str, task_index: int, step: int, total_steps: int, reward=None, loss=None, **extra) -> None:
    emit("CPT_PROGRESS", {"stage": stage, "task_index": task_index, "step": step, "total_steps": total_steps,
                          "reward": reward, "loss": loss, **extra})


def result(summary: dict) -> None:
    emit("CPT_RESULT", summary)


class ProgressCallback(TrainerCallback):
    """Turns Trainer logs into CPT_PROGRESS lines and keeps the reward/loss curves for train.json."""

    def __init__(self, stage: str, task_index: int, quiet: bool = False):
        self.stage, self.task_index, self.quiet = stage, task_index, quiet
        self.rewards: list[float] = []
        self.losses: list[float] = []
        self.accuracies: list[float] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" not in logs and "reward" not in logs:
            return  # end-of-training summary logs (train_runtime...)
        reward = logs.get("reward")
        loss = logs.get("loss")
        if reward is not None:
            self.rewards.append(float(reward))
        if loss is not None:
            self.losses.append(float(loss))
        acc = logs.get("mean_token_accuracy")
        if acc is not None:
            self.accuracies.append(float(acc))
        if state.is_world_process_zero and not self.quiet:
            progress(self.stage, self.task_index, state.global_step, state.max_steps, reward=reward, loss=loss)
