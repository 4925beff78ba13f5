"""Reading ContinualPostTraining documents from a YAML file: the one loader `cpt` and `cpt-trainer` share.

Every failure is a SpecError that names the file and the problem, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cpt_core.validation import SpecError


def read_documents(path: str) -> list[Any]:
    """Every non-empty YAML document of the file (at least one)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError([f"cannot read {path}: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise SpecError([f"{path} is not UTF-8 text"]) from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise SpecError([f"{path} is not valid YAML: {exc}"]) from None
    if not docs:
        raise SpecError([f"{path} holds no document"])
    return docs


def read_one(path: str) -> Any:
    """The file's single document (a local run is one resource per file)."""
    docs = read_documents(path)
    if len(docs) != 1:
        raise SpecError([f"{path} must hold exactly one ContinualPostTraining (found {len(docs)} documents)"])
    return docs[0]
