"""The report says which engine scored the matrix, and warns when rows were scored by different ones (an older
run, or a vLLM server that was unavailable for some stages): differences between such rows are partly the engines'."""

from cpt_core.results import CommittedTask
from cpt_operator.local.report import build_report, render_markdown

SPEC = {"method": "grpo", "tasks": [{"name": "add"}, {"name": "sub"}], "general": []}


def _committed(engines):
    names = ["base", "add", "sub"]
    return {i: CommittedTask(i, names[i], "h", {"tasks": {"add": 0.5, "sub": 0.25}, "general": {}, "engine": e})
            for i, e in enumerate(engines)}


def test_one_engine_is_named():
    text = render_markdown(build_report(SPEC, _committed(["vllm", "vllm", "vllm"])))
    assert "Every row scored by the vllm engine (greedy)." in text and "different engines" not in text


def test_mixed_engines_are_a_warning_that_names_each_row():
    report = build_report(SPEC, _committed(["hf", "vllm", "vllm"]))
    assert [t["evalEngine"] for t in report["perTask"]] == ["hf", "vllm", "vllm"]
    text = render_markdown(report)
    assert "**Warning: the rows were scored by different engines** (base: hf, add: vllm, sub: vllm)" in text


def test_report_shows_each_tasks_kl_and_replayed_prompts():
    committed = _committed(["hf", "hf", "hf"])
    committed[2] = CommittedTask(2, "sub", "h", {"tasks": {"add": 0.5, "sub": 0.25}, "general": {}, "engine": "hf"},
                                 train={"policy_kl": {"base": {"last": 0.25, "max": 0.5},
                                                      "task_start": {"last": 0.125, "max": 0.2}},
                                        "replay": {"replayed_prompts": 6}})
    report = build_report(SPEC, committed)
    assert report["perTask"][2]["policyKl"] == {"base": {"last": 0.25, "max": 0.5},
                                                "taskStart": {"last": 0.125, "max": 0.2}}
    text = render_markdown(report)
    assert "| sub | 0.2500 / 0.5000 | 0.1250 / 0.2000 | 6 |" in text
