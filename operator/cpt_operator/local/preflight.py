"""Checks that run before any training, so a typo in task 3 does not surface after hours on task 1."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator

from cpt_core.api import CptSpec


class PreflightError(ValueError):
    """Something the run needs is missing or broken; `problems` names each one."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("cannot start the run:\n" + "\n".join(f"  - {p}" for p in problems))


def resolve_paths(doc: dict, base: Path) -> dict:
    """Make the storage path absolute, relative to the resource file (like docker compose).

    Model and dataset paths stay as written: they are part of what identifies a trained task (its spec hash), so
    a project folder that is moved or cloned elsewhere still resumes. Stage processes run in `base`, where those
    relative paths mean what the user wrote; `check` resolves them against `base` too.
    """
    spec = doc.get("spec") or {}
    if isinstance(spec.get("storage"), dict) and isinstance(spec["storage"].get("uri"), str):
        spec["storage"]["uri"] = local_path(spec["storage"]["uri"], base)
    return doc


def local_path(value: str, base: Path) -> str:
    """`value` resolved against `base` when it is a relative local path; URIs and absolute paths unchanged."""
    if "://" in value or os.path.isabs(value):
        return value
    return str((base / value).resolve())


@contextlib.contextmanager
def importable_from(base: Path) -> Iterator[None]:
    """`module:function` rewards next to the resource file import as they will in its stage processes."""
    sys.path.insert(0, str(base))
    try:
        yield
    finally:
        sys.path.remove(str(base))


def check(spec: CptSpec, base: Path) -> None:
    """Datasets readable and well-formed, rewards loadable, base model present. Raises PreflightError.

    Relative local paths are resolved against `base`, the resource file's folder."""
    from cpt_core.tasks import TaskError, load_rows, make_reward

    problems: list[str] = []
    model = local_path(spec.model, base)
    if "://" not in model and not (Path(model) / "config.json").is_file():
        problems.append(f"spec.model: no model at {model} (expected a Hugging Face model directory with "
                        "config.json; build the tiny example model with `cpt-trainer build-base --out DIR`)")
    storage = _storage(spec)
    sets = [(f"spec.tasks[{i}]", t.name, t.reward, t.answer_pattern, [("train", t.train), ("eval", t.eval)])
            for i, t in enumerate(spec.tasks)]
    sets += [(f"spec.general[{i}]", b.name, b.reward, b.answer_pattern, [("eval", b.eval)])
             for i, b in enumerate(spec.general)]
    for path, name, reward, pattern, files in sets:
        try:
            with importable_from(base):
                make_reward(reward, pattern)
        except (TaskError, ValueError) as exc:
            problems.append(f"{path}.reward ({name}): {exc}")
        for key, uri in files:
            uri = local_path(uri, base)
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
    from cpt_core.storage import open_store_for_spec

    return open_store_for_spec(spec.storage)
