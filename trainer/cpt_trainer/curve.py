"""Learning and forgetting curves: evaluate during training every `spec.evaluation.everySteps` optimizer steps.

Why: a matrix row after each task says how much was learned and forgotten at the end; comparing methods at
*matched* learning (bench/forgetting protocol v3) needs the same measures along the way. The callback scores the
learner's model greedily (the `hf` engine on the model being trained) on the tasks seen so far and the general
benchmarks, and keeps the points for train.json. One process only: under a distributed launcher generation would
need every rank, so the curve is left out there (and says so).
"""

from __future__ import annotations

import logging

from transformers import TrainerCallback

from cpt_trainer.evaluate import evaluate_row
from cpt_trainer.learners.common import world_size

log = logging.getLogger(__name__)


class CurveCallback(TrainerCallback):
    """Evaluates every `every` optimizer steps (and at the last step); `points` is train.json's `curve`."""

    def __init__(self, tokenizer, task_index: int, tasks: list, general: list, every: int, max_tokens: int):
        self.tokenizer, self.task_index, self.tasks, self.general = tokenizer, task_index, tasks, general
        self.every, self.max_tokens = every, max_tokens
        self.points: list[dict] = []
        self.enabled = world_size() == 1
        if not self.enabled:
            log.warning("evaluation.everySteps: no curve under a distributed launcher (WORLD_SIZE > 1)")

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if not self.enabled or model is None or (step % self.every and step != state.max_steps):
            return
        if self.points and self.points[-1]["step"] == step:
            return
        from cpt_trainer.rollout.hf import HfEngine

        row = evaluate_row(HfEngine(model, self.tokenizer), self.tokenizer, self.task_index, self.tasks,
                           self.general, self.max_tokens)
        self.points.append({"step": step, "tasks": row["tasks"], "general": row["general"]})
