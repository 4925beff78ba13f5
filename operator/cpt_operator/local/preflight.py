"""Checks that run before any training, so a typo in task 3 does not surface after hours on task 1."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..api import CptSpec


class PreflightError(ValueError):
    """Something the run needs is missing or broken; `problems` names each one."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("cannot start the run:\n" + "\n".join(f"  - {p}" for p in problems))


def resolve_paths(doc: dict, base: Path) -> dict:
    """Make local paths in the spec absolute, relative to the resource file (like docker compose)."""
    spec = doc.get("spec") or {}

    def fix(value: Any) -> Any:
        if not isinstance(value, str) or "://" in value or os.path.isabs(value):
            return value
        return str((base / value).resolve())

    if "model" in spec:
        spec["model"] = fix(spec["model"])
    if isinstance(spec.get("storage"), dict) and "uri" in spec["storage"]:
        spec["storage"]["uri"] = fix(spec["storage"]["uri"])
    for item in list(spec.get("tasks") or []) + list(spec.get("general") or []):
        if isinstance(item, dict):
            for key in ("train", "eval"):
                if key in item:
                    item[key] = fix(item[key])
    return doc


def check(spec: CptSpec) -> None:
    """Datasets readable and well-formed, rewards loadable, base model present. Raises PreflightError."""
    from cpt_trainer.tasks import TaskError, load_rows, make_reward

    problems: list[str] = []
    if "://" not in spec.model and not (Path(spec.model) / "config.json").is_file():
        problems.append(f"spec.model: no model at {spec.model} (expected a Hugging Face model directory with "
                        "config.json; build the tiny example model with `cpt-trainer build-base --out DIR`)")
    storage = _storage(spec)
    sets = [(f"spec.tasks[{i}]", t.name, t.reward, t.answer_pattern, [("train", t.train), ("eval", t.eval)])
            for i, t in enumerate(spec.tasks)]
    sets += [(f"spec.general[{i}]", b.name, b.reward, b.answer_pattern, [("eval", b.eval)])
             for i, b in enumerate(spec.general)]
    for path, name, reward, pattern, files in sets:
        try:
            make_reward(reward, pattern)
        except (TaskError, ValueError) as exc:
            problems.append(f"{path}.reward ({name}): {exc}")
        for key, uri in files:
            try:
                if not load_rows(uri, storage=storage, limit=None):
                    problems.append(f"{path}.{key} ({name}): {uri} holds no rows")
            except (TaskError, OSError, ValueError) as exc:
                problems.append(f"{path}.{key} ({name}): {exc}")
    if problems:
        raise PreflightError(problems)


def _storage(spec: CptSpec):
    """A store for s3:// datasets with the run's endpoint settings; None when everything is local."""
    uris = [spec.model] + [t.train for t in spec.tasks] + [t.eval for t in spec.tasks] + [b.eval for b in spec.general]
    if not any(u.startswith("s3://") for u in uris):
        return None
    from cpt_trainer.storage import open_store_for_spec

    return open_store_for_spec(spec.storage)
