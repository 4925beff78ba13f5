"""What a person sees during `cpt run`: one live line on a terminal, plain log lines otherwise."""

from __future__ import annotations

import shutil
import sys
import time
from typing import Optional, TextIO


def _eta(seconds: Optional[float]) -> str:
    if seconds is None or seconds < 0:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class ProgressDisplay:
    """Live progress of the current stage; `tty=False` degrades to a log line every `every` seconds."""

    def __init__(self, out: Optional[TextIO] = None, tty: Optional[bool] = None, every: float = 10.0):
        self.out = out or sys.stdout
        self.tty = self.out.isatty() if tty is None else tty
        self.every = every
        self._label = ""
        self._started = 0.0
        self._last_print = 0.0
        self._live = False
        self._rate_origin: Optional[tuple[float, int]] = None  # (time, step) of the first step reported
        self.last: dict = {}

    def log(self, text: str) -> None:
        """A permanent line (clears the live line first)."""
        self._clear()
        self.out.write(text + "\n")
        self.out.flush()

    def stage_started(self, task_index: int, total: int, task: str, stage: str, attempt: int, job: str) -> None:
        where = "base model" if task_index == 0 else f"task {task_index}/{total} {task!r}"
        self._label = f"{where} {stage}"
        self._started = time.monotonic()
        self._last_print = 0.0
        self._rate_origin = None
        self.last = {}
        retry = f" (attempt {attempt + 1})" if attempt else ""
        self.log(f"==> {where}: {stage}{retry}  [{job}]")

    def update(self, event: dict) -> None:
        """A CPT_PROGRESS event from the stage process."""
        if event.get("resumed_at") is not None:  # the train stage continues from a step checkpoint: say so once
            self.log(f"    resumed at step {event['resumed_at']} of {event.get('total_steps')} (attempt "
                     f"{(event.get('attempt') or 0) + 1}, resume {event.get('resumes')})")
        self.last = event
        now = time.monotonic()
        line = self.render(event, now)
        if self.tty:
            width = shutil.get_terminal_size((100, 20)).columns
            self.out.write("\r" + line[: width - 1].ljust(min(width - 1, len(line) + 2)))
            self.out.flush()
            self._live = True
        elif now - self._last_print >= self.every or event.get("step") == event.get("total_steps"):
            self._last_print = now
            self.log(line)

    def render(self, event: dict, now: float) -> str:
        step, total = event.get("step") or 0, event.get("total_steps") or 0
        elapsed = now - self._started
        eta = self._eta(step, total, now)
        parts = [f"    {self._label}", f"step {step}/{total}" if total else f"step {step}"]
        if event.get("reward") is not None:
            parts.append(f"reward {event['reward']:.3f}")
        if event.get("loss") is not None:
            parts.append(f"loss {event['loss']:.4f}")
        if event.get("accuracy") is not None:
            parts.append(f"acc {event['accuracy']:.3f}")
        kl = (event.get("policy_kl") or {}).get("base")
        if kl:
            parts.append(f"KL(base) {kl['last']:.4f}")
        parts.append(f"elapsed {_eta(elapsed)}")
        parts.append(f"ETA {_eta(eta)}")
        return "  ".join(parts)

    def _eta(self, step: int, total: int, now: float) -> Optional[float]:
        """Remaining time from the step rate since the first reported step (process start-up excluded)."""
        if self._rate_origin is None or step < self._rate_origin[1]:
            self._rate_origin = (now, step)
            return None
        origin_time, origin_step = self._rate_origin
        if not total or step <= origin_step:
            return None
        return (now - origin_time) / (step - origin_step) * (total - step)

    def stage_finished(self, ok: bool, seconds: float, detail: str = "") -> None:
        mark = "done" if ok else "FAILED"
        self.log(f"    {self._label}: {mark} in {_eta(seconds)}{(' - ' + detail) if detail else ''}")

    def _clear(self) -> None:
        if self.tty and self._live:
            self.out.write("\r" + " " * (shutil.get_terminal_size((100, 20)).columns - 1) + "\r")
            self._live = False
