"""Greedy evaluation: accuracy of a model on task eval sets and general benchmarks (one matrix row).

Accuracy = fraction of rows whose reward counts as correct (rewards.is_correct), so RIF, GRPO and evaluation
share one notion of "solved".
"""

from __future__ import annotations

import time

from cpt_core.rewards import is_correct
from cpt_core.tasks import Task, prompt_text, reward_values


def accuracy(engine, tokenizer, task: Task, max_tokens: int = 64, samples: int = 3) -> tuple[float, list[dict]]:
    """Greedy accuracy on task.rows and a few sample completions for the report."""
    rows = task.rows
    groups = engine.generate([prompt_text(tokenizer, r["prompt"]) for r in rows], n=1, temperature=0.0,
                             max_tokens=max_tokens)
    texts = [g[0].text for g in groups]
    rewards = reward_values(task, rows, texts)
    correct = [is_correct(v) for v in rewards]
    shown = [{"prompt": r["prompt"], "answer": r["answer"], "completion": t, "correct": c}
             for r, t, c in list(zip(rows, texts, correct))[:samples]]
    return sum(correct) / len(rows), shown


def evaluate_row(engine, tokenizer, task_index: int, tasks: list[Task], general: list[Task],
                 max_tokens: int = 64) -> dict:
    """eval.json: {"task_index", "tasks": {name: acc}, "general": {name: score}, "samples", "seconds"}."""
    t0 = time.time()
    out = {"task_index": task_index, "tasks": {}, "general": {}, "samples": {}}
    for kind, group in (("tasks", tasks), ("general", general)):
        for task in group:
            acc, shown = accuracy(engine, tokenizer, task, max_tokens)
            out[kind][task.name] = round(acc, 6)
            out["samples"][task.name] = shown
    out["seconds"] = round(time.time() - t0, 3)
    return out
