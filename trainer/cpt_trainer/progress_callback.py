"""A Trainer callback that reports each logging step as a `CPT_PROGRESS` line (cpt_core.protocol) and keeps the
reward/loss curves for train.json."""

from __future__ import annotations

from transformers import TrainerCallback

from cpt_core.protocol import progress


class ProgressCallback(TrainerCallback):
    """Turns Trainer logs into CPT_PROGRESS lines and keeps the reward/loss curves for train.json."""

    def __init__(self, stage: str, task_index: int, quiet: bool = False):
        self.stage, self.task_index, self.quiet = stage, task_index, quiet
        self.rewards: list[float] = []
        self.losses: list[float] = []
        self.accuracies: list[float] = []
        self.zero_std: list[float] = []  # GRPO: fraction of groups whose rewards were all equal (no gradient)

    def on_train_begin(self, args, state, control, **kwargs):
        """A resumed Trainer starts with the checkpoint's log history: the curves continue it (no lines)."""
        for logs in state.log_history:
            self._record(logs)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if self._record(logs) and state.is_world_process_zero and not self.quiet:
            progress(self.stage, self.task_index, state.global_step, state.max_steps, reward=logs.get("reward"),
                     loss=logs.get("loss"))

    def _record(self, logs: dict) -> bool:
        if "loss" not in logs and "reward" not in logs:
            return False  # end-of-training summary logs (train_runtime...)
        reward = logs.get("reward")
        loss = logs.get("loss")
        if reward is not None:
            self.rewards.append(float(reward))
        if loss is not None:
            self.losses.append(float(loss))
        if logs.get("frac_reward_zero_std") is not None:
            self.zero_std.append(float(logs["frac_reward_zero_std"]))
        acc = logs.get("mean_token_accuracy")
        if acc is not None:
            self.accuracies.append(float(acc))
        return True
