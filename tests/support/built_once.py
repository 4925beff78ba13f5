"""A deterministic session fixture built once per test run, not once per xdist worker.

The tiny base models of tests/trainer and tests/local take about a minute each to build; every worker that runs
one of their tests paid that minute. Under xdist the workers of one run share the parent of their base temp
directories: the first worker to get the lock builds there, the others wait on the lock and reuse the folder.
Callers treat the folder as read-only (copy it where a test writes)."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path
from typing import Callable


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        out = tmp_path_factory.mktemp(name)
        build(out)
        return out
    root = tmp_path_factory.getbasetemp().parent  # shared by this run's workers
    out, done = root / name, root / f"{name}.built"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(out, ignore_errors=True)  # a build cut short by a killed worker
            out.mkdir()
            build(out)
            done.touch()
    return out
