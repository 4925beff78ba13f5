"""Greedy evaluation: accuracy of a model on task eval sets and general benchmarks (one matrix row).

Accuracy = fraction of rows whose reward counts as correct (rewards.is_correct), so RIF, GRPO and evaluation
share one notion of "solved".
"""

from __future__ import annotations

import time

from cpt_core.rewards import is_correct
from cpt_core.tasks import Task, prompt_text, reward_values


def accuracy(engine, tokenizer, task: Task, max_tokens: int = 64, samples: int = 3,
             per_prompt: list | None = None) -> tuple[float, list[dict]]:
    """Greedy accuracy on task.rows and a few sample completions for the report; `per_prompt` (a list), when
    given, is extended with each row's correctness in row order."""
    rows = task.rows
    groups = engine.generate([prompt_text(tokenizer, r["prompt"]) for r in rows], n=1, temperature=0.0,
                             max_tokens=max_tokens)
    texts = [g[0].text for g in groups]
    rewards = reward_values(task, rows, texts)
    correct = [is_correct(v) for v in rewards]
    if per_prompt is not None:
        per_prompt.extend(correct)
    shown = [{"prompt": r["prompt"], "answer": r["answer"], "completion": t, "correct": c}
             for r, t, c in list(zip(rows, texts, correct))[:samples]]
    return sum(correct) / len(rows), shown


def evaluate_row(engine, tokenizer, task_index: int, tasks: list[Task], general: list[Task],
                 max_tokens: int = 64) -> dict:
    """eval.json: {"task_index", "tasks": {name: acc}, "general": {name: score}, "samples", "correct",
    "seconds"}; `correct` holds, per set, one character per row in row order ("1" solved, "0" not), so a
    benchmark can resample prompts (per-prompt bootstrap intervals) without re-running the evaluation."""
    t0 = time.time()
    out = {"task_index": task_index, "tasks": {}, "general": {}, "samples": {}, "correct": {}}
    for kind, group in (("tasks", tasks), ("general", general)):
        for task in group:
            flags: list = []
            acc, shown = accuracy(engine, tokenizer, task, max_tokens, per_prompt=flags)
            out[kind][task.name] = round(acc, 6)
            out["samples"][task.name] = shown
            out["correct"][task.name] = "".join("1" if c else "0" for c in flags)
    out["seconds"] = round(time.time() - t0, 3)
    return out


def solved_rows(engine, tokenizer, task: Task, max_tokens: int) -> list[dict]:
    """The rows of `task` the model answers correctly, greedily, each with its answer as `cpt_completion` (replay
    of mastered prompts: SFT replays the row, self-sft the model's own answer)."""
    rows = task.rows
    if not rows:
        return []
    groups = engine.generate([prompt_text(tokenizer, r["prompt"]) for r in rows], n=1, temperature=0.0,
                             max_tokens=max_tokens)
    texts = [g[0].text for g in groups]
    return [dict(r, cpt_completion=t) for r, t, v in zip(rows, texts, reward_values(task, rows, texts))
            if is_correct(v)]
