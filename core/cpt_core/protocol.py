"""How a stage process talks to whoever started it: stdout lines, exit codes, the fork-server handshake.

A stage (`cpt-trainer filter|train|evaluate`) prints `CPT_PROGRESS {json}` while it works and `CPT_RESULT {json}`
once at the end; its exit code says how it ended. Pod logs and the local executor read the same lines. The fork
server that `cpt run` uses (cpt_trainer.forkserver) adds three lines of its own around each stage.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
from typing import Any

PROGRESS = "CPT_PROGRESS"
RESULT = "CPT_RESULT"

# A line a stage prints for something that went wrong but does not stop it (a tracking server that cannot be
# reached): `cpt run` shows it under the stage, a pod log keeps it.
STAGE_WARNING = "cpt-trainer: warning:"

EXIT_OK = 0
EXIT_FAILED = 1  # anything unexpected: the stage is retried per spec.retry
EXIT_BAD_INPUT = 2  # missing dataset, unknown reward, bad config: nothing was trained, a retry cannot help

# Fork server (one stage at a time): server -> READY; client -> {"argv": [...], "cwd": "/dir"};
# server -> PID <pid>, then the stage's output lines, then EXIT <code>.
FORKSERVER_READY = "CPT_FORKSERVER_READY"
FORKSERVER_PID = "CPT_FORKSERVER_PID "
FORKSERVER_EXIT = "CPT_FORKSERVER_EXIT "


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else round(value, 6)
    return value


_STDOUT = threading.Lock()  # a train stage's step uploads report from their own thread


def emit(kind: str, payload: dict) -> None:
    """One protocol line, written whole: print() writes the text and its newline separately, so two threads'
    lines could join into one the reader cannot parse (seen: a step's progress and a step checkpoint's)."""
    line = f"{kind} " + json.dumps({k: _clean(v) for k, v in payload.items()}, sort_keys=False) + "\n"
    with _STDOUT:
        sys.stdout.write(line)
        sys.stdout.flush()


def progress(stage: str, task_index: int, step: int, total_steps: int, reward=None, loss=None, **extra) -> None:
    emit(PROGRESS, {"stage": stage, "task_index": task_index, "step": step, "total_steps": total_steps,
                    "reward": reward, "loss": loss, **extra})


def result(summary: dict) -> None:
    emit(RESULT, summary)


def parse(line: str) -> tuple[str, dict] | None:
    """(kind, payload) of a protocol line, None for any other output (a malformed payload reads as {})."""
    for kind in (PROGRESS, RESULT):
        if line.startswith(kind + " "):
            try:
                payload = json.loads(line[len(kind) + 1:])
            except ValueError:
                payload = {}
            return kind, payload if isinstance(payload, dict) else {}
    return None


def die_with_parent() -> None:
    """A preexec_fn: this process must not outlive its parent (a stage its fork server, the server `cpt run`);
    a stage left behind could commit behind a rerun's back."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
