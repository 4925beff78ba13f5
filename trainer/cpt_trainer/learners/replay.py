"""Replay of mastered prompts (spec.replay): earlier tasks' training prompts that the model solved when that task
was evaluated (solved.jsonl, written by the evaluate stage) take a fixed share of each batch.

GRPO: r = round(fraction x B) of a step's B prompt slots are replayed prompts, B - r come from the task's own
stream (plain epochs, or online RIF's), so a step costs B x G completions as without replay and the step count is
GRPO's own (E x floor(P / B), or maxSteps). The replayed prompts of step b are a function of (seed, b) alone: a
resumed run, whose Trainer re-reads the sampler up to its step, draws the same ones. SFT and self-SFT append
replayed examples so that they are `fraction` of the examples (self-SFT's are the model's own correct answers).
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Iterator, Optional

import torch

from cpt_core.tasks import Task

COMPLETION = "cpt_completion"  # solved.jsonl: the model's correct answer at evaluation


class ReplayDraws:
    """Which replayed prompts fill step b's r slots: a seeded sample of the pool (with repeats only when the pool
    is smaller than r)."""

    def __init__(self, tasks: list[Task], slots: int, seed: int):
        self.origin = [t.name for t in tasks for _ in t.rows]  # pool index -> task name
        self.slots, self.seed = slots, seed

    def __len__(self) -> int:
        return len(self.origin)

    def draw(self, step: int) -> list[int]:
        rng = random.Random(f"{self.seed}:replay:{step}")
        pool = range(len(self.origin))
        return rng.sample(pool, self.slots) if len(pool) >= self.slots else rng.choices(pool, k=self.slots)

    def stats(self, steps: int) -> dict:
        """train.json's `replay`: replayed groups over the steps taken, and per earlier task."""
        seen = Counter(self.origin[k] for b in range(steps) for k in self.draw(b))
        return {"slots_per_step": self.slots, "pool": len(self.origin), "replayed_prompts": sum(seen.values()),
                "by_task": dict(sorted(seen.items()))}


def epoch_stream(n: int, per_step: int, steps_per_epoch: int, seed: int, total_steps: int) -> Iterator[int]:
    """The task's own prompts for `total_steps` steps of `per_step` each: epoch e is a seeded permutation of the n
    prompts, of which steps_per_epoch x per_step are used (GRPO's step count per epoch is kept; the slots replay
    took are the prompts an epoch leaves out, a different set each epoch)."""
    taken, epoch = 0, 0
    while taken < total_steps * per_step:
        g = torch.Generator()
        g.manual_seed(seed * 100_003 + epoch)
        for row in torch.randperm(n, generator=g).tolist()[:steps_per_epoch * per_step]:
            if taken >= total_steps * per_step:
                return
            taken += 1
            yield row
        epoch += 1


def sft_rows(current: list[dict], tasks: list[Task], fraction: float, seed: int, own_answers: bool
             ) -> tuple[list[dict], Optional[dict]]:
    """SFT's examples with replay: the task's rows plus k replayed ones, k = round(fraction / (1 - fraction) x
    rows), so replay is `fraction` of the examples. `own_answers` (self-sft): the replayed target is the model's
    own correct answer at evaluation; else the row's reference (its `solution` or the boxed answer)."""
    pool = [(t.name, r) for t in tasks for r in t.rows]
    if not pool or not current or not fraction:
        return current, None
    k = int(fraction / (1 - fraction) * len(current) + 0.5)
    rng = random.Random(f"{seed}:replay:sft")
    picked = rng.sample(pool, k) if len(pool) >= k else rng.choices(pool, k=k)
    rows = []
    for _, r in picked:
        row = {key: v for key, v in r.items() if key != COMPLETION}
        if own_answers:
            row["solution"] = r[COMPLETION]
        rows.append(row)
    seen = Counter(name for name, _ in picked)
    return current + rows, {"pool": len(pool), "replayed_prompts": k, "by_task": dict(sorted(seen.items()))}
