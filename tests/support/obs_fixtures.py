"""A realistic run for the observability tests: three tasks, task 1 regresses after task 2 beyond maxDrop."""

from __future__ import annotations

import copy

SPEC = {
    "model": "s3://models/tiny/",
    "method": "rif-grpo",
    "tasks": [
        {"name": "add", "train": "s3://data/add/train.jsonl", "eval": "s3://data/add/test.jsonl", "reward": "numeric"},
        {"name": "mul", "train": "s3://data/mul/train.jsonl", "eval": "s3://data/mul/test.jsonl", "reward": "numeric"},
        {"name": "rev", "train": "s3://data/rev/train.jsonl", "eval": "s3://data/rev/test.jsonl", "reward": "exact"},
    ],
    "general": [{"name": "general", "eval": "s3://data/general/test.jsonl", "reward": "exact"}],
    "storage": {"uri": "s3://ckpt/run/"},
    "forgetting": {"maxDrop": 0.05, "onRegression": "alert"},
}

# Rows: base, after add, after mul (task 3 "rev" is training). add: best 0.80, now 0.70 -> drop 0.10 > 0.05.
MATRIX = [
    [0.30, 0.20, 0.40],
    [0.80, 0.25, 0.41],
    [0.70, 0.75, 0.39],
    [None, None, None],
]
GENERAL = [[0.90], [0.86], [0.80], [None]]

STATUS = {
    "phase": "Running",
    "conditions": [{"type": "StorageReachable", "status": "True", "reason": "Reachable", "message": "",
                    "lastTransitionTime": "2026-11-01T00:00:00Z"},
                   {"type": "StorageIntact", "status": "True", "reason": "Intact", "message": "",
                    "lastTransitionTime": "2026-11-01T00:00:00Z"}],
    "currentTask": "rev",
    "completedTasks": 2,
    "totalTasks": 3,
    "progress": "2/3",
    "tasks": [
        {"index": 0, "name": "base", "phase": "Succeeded", "attempts": 1},
        {"index": 1, "name": "add", "phase": "Succeeded", "attempts": 1, "filteredFraction": 0.4,
         "kept": 60, "dropped": 40},
        {"index": 2, "name": "mul", "phase": "Succeeded", "attempts": 2, "filteredFraction": 0.5,
         "kept": 50, "dropped": 50, "skippedGroups": 12, "rolloutsSaved": 96,
         "policyKl": {"base": {"last": 0.42, "max": 0.5}, "taskStart": {"last": 0.3, "max": 0.31}}},
        {"index": 3, "name": "rev", "phase": "Running", "stage": "train", "attempts": 1,
         "filteredFraction": 0.25, "kept": 75, "dropped": 25},
    ],
    "accuracy": {"tasks": ["add", "mul", "rev"], "matrix": MATRIX},
    "general": {"benchmarks": ["general"], "matrix": GENERAL},
    "averageAccuracy": 0.725,      # (0.70 + 0.75) / 2
    "backwardTransfer": -0.1,      # 0.70 - 0.80
    "forgetting": 0.1,             # max(0.80) - 0.70
    "plasticity": 0.525,           # ((0.80 - 0.30) + (0.75 - 0.20)) / 2
}

STATS = {
    1: {"rolloutTokens": 120000, "learnerSteps": 200, "stageDurations": {"filter": 30.0, "train": 600.0,
                                                                          "evaluate": 45.0}},
    2: {"rolloutTokens": 98000, "learnerSteps": 180, "stageDurations": {"filter": 28.0, "train": 590.0,
                                                                         "evaluate": 44.0},
        "stageAttempts": {"train": 2}, "trainResumes": 1},
    "rev": {"rolloutTokens": 15000, "stageStartedAt": 1_700_000_000.0,
            "rolloutPolicyVersions": {"0": 12, "1": None}, "rolloutLearnerStep": 12,
            "policyKl": {"base": {"last": 0.61, "max": 0.61}, "taskStart": {"last": 0.2, "max": 0.2}}},
}


def run():
    """Fresh deep copies (tests mutate them)."""
    return copy.deepcopy(SPEC), copy.deepcopy(STATUS), copy.deepcopy(STATS)
