"""The progress display: plain log lines off a terminal, one live line on it, ETA from the step rate."""

import io
import re

from cpt_operator.local import display as progress_mod
from cpt_operator.local.display import ProgressDisplay


def test_plain_lines_when_not_a_terminal(monkeypatch):
    clock = iter([0.0, 100.0, 110.0])
    monkeypatch.setattr(progress_mod.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    display = ProgressDisplay(out=out, tty=False, every=0)
    display.stage_started(2, 3, "sort", "train", 1, "demo-2-train-r1")   # t=0
    display.update({"step": 1, "total_steps": 11, "reward": 0.25})        # t=100: start-up took 100 s
    display.update({"step": 2, "total_steps": 11, "reward": 0.5, "loss": 0.1})  # t=110: 10 s per step
    lines = out.getvalue().splitlines()
    assert lines[0] == "==> task 2/3 'sort': train (attempt 2)  [demo-2-train-r1]"
    assert "step 1/11" in lines[1] and "ETA ?" in lines[1]
    assert "step 2/11" in lines[2] and "reward 0.500" in lines[2] and "loss 0.1000" in lines[2]
    assert "ETA 1m30s" in lines[2]  # 9 steps left x 10 s, not inflated by the 100 s start-up
    assert "\r" not in out.getvalue()


def test_live_line_on_a_terminal():
    out = io.StringIO()
    display = ProgressDisplay(out=out, tty=True)
    display.stage_started(0, 3, "base", "evaluate", 0, "demo-0-evaluate")
    display.update({"step": 1, "total_steps": 2})
    display.log("next")
    text = out.getvalue()
    assert re.search(r"\rbase model evaluate|\r    base model evaluate", text)
    assert text.rstrip().endswith("next")
