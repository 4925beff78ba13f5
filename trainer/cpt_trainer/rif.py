"""RIF: rollout-based instance filtering (docs/design.md), run once per task before training.

For each training prompt, N rollouts with the current model; a prompt solved fewer than minCorrect times is an
"incompetent sample" (all-zero rewards give GRPO no gradient) and is dropped.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from cpt_core.rewards import is_correct
from cpt_core.tasks import Task, prompt_text, reward_values


@dataclass
class RifResult:
    kept_rows: list[dict]
    kept: int
    dropped: int
    filtered_fraction: float
    rollouts: int
    min_correct: int
    rollout_tokens: int
    seconds: float
    mean_correct: float
    solutions: list[list[str]]  # per kept row: its distinct correct completions (self-sft's SFT targets)

    def stats(self) -> dict:
        d = asdict(self)
        d.pop("kept_rows")
        d.pop("solutions")
        return d

    def solution_rows(self) -> list[dict]:
        """One row per distinct correct completion, its text as the SFT target (`solution`): self-sft's data."""
        return [dict(row, solution=text) for row, texts in zip(self.kept_rows, self.solutions) for text in texts]


def run_rif(engine, tokenizer, task: Task, *, rollouts: int, min_correct: int, temperature: float,
            max_tokens: int, seed: int = 0) -> RifResult:
    """Filter `task`'s rows. The settings have no defaults here: their one declaration is the spec
    (cpt_core.api.RifSpec for rollouts/minCorrect, GrpoSpec for the sampling)."""
    t0 = time.time()
    rows = task.rows
    groups = engine.generate([prompt_text(tokenizer, r["prompt"]) for r in rows], n=rollouts,
                             temperature=temperature, max_tokens=max_tokens, seed=seed)
    flat_rows = [r for r in rows for _ in range(rollouts)]
    flat = [c for g in groups for c in g]
    rewards = reward_values(task, flat_rows, [c.text for c in flat])
    kept, n_correct, solutions = [], [], []
    for p, row in enumerate(rows):
        group = range(p * rollouts, (p + 1) * rollouts)
        right = [flat[k].text for k in group if is_correct(rewards[k])]
        n_correct.append(len(right))
        if len(right) >= min_correct:
            kept.append(row)
            solutions.append(list(dict.fromkeys(right)))
    dropped = len(rows) - len(kept)
    return RifResult(
        kept_rows=kept, kept=len(kept), dropped=dropped, filtered_fraction=dropped / len(rows),
        rollouts=rollouts, min_correct=min_correct, rollout_tokens=sum(c.tokens for c in flat),
        seconds=round(time.time() - t0, 3), mean_correct=sum(n_correct) / (len(rows) * rollouts),
        solutions=solutions)
