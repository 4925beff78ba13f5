"""Tasks: JSON Lines datasets plus the reward that scores them.

A row has `prompt` (a string, or chat messages) and `answer` (a string); any other fields are passed through to
reward functions as TRL passes dataset columns. Sources: a local path, file:///abs/path, or s3://bucket/key (read
through the storage layer with the run's endpoint settings, credentials from the environment).
Bad input raises TaskError naming the file and line, so a stage fails before any training (exit code 2).
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass
from typing import Optional

from cpt_core.rewards import RewardError, RewardFn, load_reward


class TaskError(ValueError):
    """A dataset that is missing or malformed, or a reward that cannot be loaded."""


def read_uri(uri: str, storage=None) -> bytes:
    """Bytes of a local path, file:// URI or s3:// object. `storage` is a StorageSpec for endpoint settings."""
    if uri.startswith("s3://"):
        from cpt_core.storage import open_store

        parent, leaf = posixpath.split(uri.rstrip("/"))
        kwargs = {}
        if storage is not None:
            kwargs = {"endpoint": storage.endpoint, "region": storage.region, "path_style": storage.path_style}
        try:
            return open_store(parent + "/", **kwargs).get_bytes(leaf)
        except Exception as exc:  # NotFound, access errors: all mean "this dataset cannot be read"
            raise TaskError(f"cannot read dataset {uri}: {exc}") from exc
    path = uri[len("file://"):] if uri.startswith("file://") else uri
    if not os.path.isfile(path):
        raise TaskError(f"dataset file not found: {uri}")
    with open(path, "rb") as fh:
        return fh.read()


def parse_jsonl(data: bytes, source: str) -> list[dict]:
    rows = []
    for lineno, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TaskError(f"{source}:{lineno}: not valid JSON: {exc}") from exc
        if not isinstance(row, dict) or "prompt" not in row or "answer" not in row:
            raise TaskError(f"{source}:{lineno}: each row needs 'prompt' and 'answer'")
        prompt = row["prompt"]
        if not (isinstance(prompt, str) or (isinstance(prompt, list) and all(
                isinstance(m, dict) and "role" in m and "content" in m for m in prompt))):
            raise TaskError(f"{source}:{lineno}: 'prompt' must be a string or a list of chat messages")
        row["answer"] = str(row["answer"])
        rows.append(row)
    if not rows:
        raise TaskError(f"{source}: dataset is empty")
    return rows


def load_rows(uri: str, storage=None, limit: Optional[int] = None) -> list[dict]:
    rows = parse_jsonl(read_uri(uri, storage), uri)
    return rows[:limit] if limit else rows


@dataclass
class Task:
    """A named dataset with its reward. `kind`/`pattern` are kept for logging and evaluation."""

    name: str
    rows: list[dict]
    reward: RewardFn
    reward_name: str = "exact"
    pattern: Optional[str] = None


def make_reward(name: str, pattern: Optional[str]) -> RewardFn:
    try:
        return load_reward(name, pattern)
    except RewardError as exc:
        raise TaskError(str(exc)) from exc


def load_task(name: str, uri: str, reward: str, pattern: Optional[str] = None, storage=None,
              limit: Optional[int] = None) -> Task:
    """Load one dataset and its reward; the reward is resolved first so a typo fails fast."""
    fn = make_reward(reward, pattern)
    return Task(name=name, rows=load_rows(uri, storage, limit), reward=fn, reward_name=reward, pattern=pattern)


def prompt_text(tokenizer, prompt) -> str:
    """The text the model continues: the chat template with a generation prompt, or the raw string if none."""
    messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n".join(str(m["content"]) for m in messages)


def reward_values(task: Task, rows: list[dict], completions: list[str]) -> list[float]:
    """Score completions[k] against rows[k] with the task's reward, passing every extra column like TRL does."""
    kwargs: dict[str, list] = {}
    for key in rows[0]:
        if key not in ("prompt", "completion"):
            kwargs[key] = [r.get(key) for r in rows]
    prompts = [r["prompt"] for r in rows]
    return [float("nan") if v is None else float(v)
            for v in task.reward(prompts=prompts, completions=completions, **kwargs)]
