"""What a person sees of a resumed train stage (issue 29): the `cpt run` line, the report, the metric."""

import io

from cpt_core.results import CommittedTask, run_stats
from cpt_operator import metrics
from cpt_operator.local.display import ProgressDisplay
from cpt_operator.local.report import build_report, render_markdown


def test_resume_line_names_step_total_attempt_and_resume_count():
    out = io.StringIO()
    display = ProgressDisplay(out=out, tty=False, every=0)
    display.stage_started(1, 2, "copy", "train", 1, "demo-1-train-r1")
    display.update({"stage": "train", "step": 6, "total_steps": 9, "resumed_at": 6, "resumes": 2, "attempt": 1})
    display.update({"stage": "train", "step": 7, "total_steps": 9, "loss": 0.5})
    lines = out.getvalue().splitlines()
    assert lines[1] == "    resumed at step 6 of 9 (attempt 2, resume 2)"
    assert "step 7/9" in lines[-1] and sum("resumed at" in line for line in lines) == 1


def _committed(train):
    spec = {"method": "grpo", "tasks": [{"name": "copy"}], "general": []}
    ev = {"tasks": {"copy": 0.5}, "general": {}, "seconds": 1.0}
    return spec, {0: CommittedTask(0, "base", "h0", eval=dict(ev)),
                  1: CommittedTask(1, "copy", "h1", eval=dict(ev), train=train, checkpoint="tasks/1-copy/checkpoint")}


def test_report_and_metric_show_the_resume():
    spec, committed = _committed({"steps": 9, "seconds": 3.0, "resumed_at_step": 6, "resumes": 1})
    report = build_report(spec, committed, {"phase": "Succeeded"})
    assert "Task 'copy': train resumed at step 6 of 9 (1 resume(s) from step checkpoints)." in render_markdown(report)
    samples = metrics.samples("ns", "run", spec, {"tasks": [{"index": 1, "name": "copy"}]}, run_stats(committed))
    got = {(s.name, s.labels[-1]): s.value for s in samples if s.name == "cpt_train_resumed_total"}
    assert got == {("cpt_train_resumed_total", "copy"): 1.0, ("cpt_train_resumed_total", "base"): 0.0}

    spec, committed = _committed({"steps": 9, "seconds": 3.0})  # never stopped: no line, the metric says 0
    assert "resumed" not in render_markdown(build_report(spec, committed, {"phase": "Succeeded"}))
