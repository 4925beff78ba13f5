"""Protocol v3's statistics (bench/forgetting/stats.py) and the pilot's datasets: pure and fast."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

import stats as st

ROOT = Path(__file__).resolve().parents[2]


def test_best_constant_is_the_most_frequent_answer():
    assert st.best_constant(["1", "2", "1", "3"]) == 0.5


def test_wilson_lower_bound_matches_known_values():
    # 50/100: Wilson 95% interval [0.4038, 0.5962]; 0/10: lower bound 0
    assert st.wilson_lower(0.5, 100) == pytest.approx(0.4038, abs=1e-4)
    assert st.wilson_lower(0.0, 10) == pytest.approx(0.0, abs=1e-12)
    assert st.wilson_lower(0.9, 500) == pytest.approx(0.8705, abs=1e-3)


def test_admission_rule():
    # base <= 0.80; both methods a - c >= 0.10 and Wilson lower bound above c
    assert st.admitted(0.3, [0.6, 0.55], c=0.2, n=500)
    assert not st.admitted(0.85, [0.99, 0.99], c=0.2, n=500)           # base too good
    assert not st.admitted(0.3, [0.6, 0.29], c=0.2, n=500)             # grpo: a - c < 0.10
    assert not st.admitted(0.3, [0.6, None], c=0.2, n=500)             # a run that failed
    assert not st.admitted(0.1, [0.35, 0.35], c=0.2, n=20)             # margin met, Wilson bound (0.18) not above c
    assert st.admitted(0.8, [0.9, 0.9], c=0.0, n=100)                  # the boundary base accuracy is admitted


def test_t_interval_uses_n_minus_1_degrees_of_freedom():
    vals = [0.1, 0.2, 0.3, 0.0, -0.1, 0.2, 0.1, 0.3, 0.2]
    ci = st.t_interval(vals)
    mean = sum(vals) / 9
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / 8)
    assert ci["n"] == 9 and ci["mean"] == pytest.approx(mean)
    assert ci["hi"] - ci["mean"] == pytest.approx(2.3060 * sd / 3, rel=1e-4)
    assert st.t_interval([0.5])["lo"] is None and st.t_interval([])["mean"] is None


def test_verdict_needs_all_nine_pairs():
    below = {"n": 9, "mean": -0.2, "lo": -0.3, "hi": -0.1}
    assert st.verdict(below, "A forgets more", "B forgets more") == "A forgets more"
    assert st.verdict(dict(below, lo=0.1, hi=0.3), "A", "B") == "B"
    assert st.verdict(dict(below, hi=0.05), "A", "B") == "not distinguishable"
    assert st.verdict(dict(below, n=3), "A", "B") == "not decided: 3 of 9 pairs"


def run_with_dev(task, points):
    curve = [{"step": s, "tasks": {}, "general": {f"dev-{task}": a}} for s, a in points]
    return {"trains": [None, {"curve": curve}]}


def test_matched_steps_both_methods_stop_at_the_lower_final_level():
    a = run_with_dev("sort", [(20, 0.3), (40, 0.6), (60, 0.9), (80, 0.95)])   # final 0.95
    b = run_with_dev("sort", [(20, 0.5), (40, 0.7), (60, 0.65), (80, 0.7)])   # final 0.70 = L
    sa, sb = st.matched_steps(a, b, ["sort"])
    assert sa == [60] and sb == [40]   # first checkpoint >= 0.70 for each arm, the lower arm too
    assert st.matched_steps(a, {"trains": [None, {"steps": 0}]}, ["sort"]) is None


def test_bootstrap_is_paired_and_deterministic():
    a = "1" * 60 + "0" * 40
    b = "1" * 40 + "0" * 60
    stat = lambda idx: st.mean_at(a, idx["t"]) - st.mean_at(b, idx["t"])  # noqa: E731
    ci = st.bootstrap(stat, {"t": 100}, reps=500, seed=1)
    assert ci["mean"] == pytest.approx(0.2)
    assert ci["lo"] <= 0.2 <= ci["hi"] and ci == st.bootstrap(stat, {"t": 100}, reps=500, seed=1)
    assert st.pilot_verdict(ci, "lower", "higher") in ("higher", "not distinguishable")
    assert st.pilot_verdict({"n": 1, "mean": 0.1, "lo": 0.05, "hi": 0.15}, "l", "h") == "not distinguishable"


def test_pilot_datasets_are_disjoint_and_sized(tmp_path):
    path = ROOT / "examples" / "data" / "smollm2-pilot" / "make.py"
    spec = importlib.util.spec_from_file_location("pilot_make", path)
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    sizes = make.write_all(tmp_path, seed=0)
    for task in make.TASKS:
        assert sizes[task] == {"train": 64, "dev": 32, "eval": 100}
        seen = [json.dumps(json.loads(ln)["prompt"]) for part in ("train", "dev", "eval")
                for ln in (tmp_path / f"{task}-{part}.jsonl").read_text().splitlines()]
        assert len(seen) == len(set(seen)) == 196
        shot = make.SHOTS[task][0]
        assert all(json.loads(p)[-1]["content"] != shot for p in seen)
    assert sizes["capitals"] == {"eval": 40} and sizes["mul"] == {"eval": 80}
    # the committed seed-0 files are what make.py writes
    for name in ("sub-train.jsonl", "add2-eval.jsonl", "capitals-eval.jsonl"):
        assert (tmp_path / name).read_text() == (ROOT / "examples" / "data" / "smollm2-pilot" / name).read_text()
    # v4's training sets (issue 28): the same rows, each with SFT's target in the worked example's own form
    on_format = tmp_path / "v4"
    make.write_all(on_format, seed=0, solutions=True)
    expected = {"sub": "11 - 5 = 6. The answer is \\boxed{6}.", "max2": "93 is larger than 30. The answer is \\boxed{93}."}
    for task in make.TASKS:
        plain = (tmp_path / f"{task}-train.jsonl").read_text().splitlines()
        rows = [json.loads(ln) for ln in (on_format / f"{task}-train.jsonl").read_text().splitlines()]
        assert [{k: v for k, v in r.items() if k != "solution"} for r in rows] == [json.loads(ln) for ln in plain]
        assert all(r["solution"].endswith(f"The answer is \\boxed{{{r['answer']}}}.") for r in rows)
        if task in expected:
            assert rows[0]["solution"] == expected[task]
        assert "solution" not in (on_format / f"{task}-eval.jsonl").read_text()


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_every_arm_spec_of_v3_and_the_pilot_validates(tmp_path, device):
    """The specs the runner writes (full runs, matched reruns, admission) pass the product's own validation."""
    import protocols as v3
    from runs import spec
    from cpt_core.validation import validate_resource

    tasks = [("sort", tmp_path / "t.jsonl", tmp_path / "e.jsonl", "exact"),
             ("max", tmp_path / "t2.jsonl", tmp_path / "e2.jsonl", "exact")]
    general = [("copy", None, tmp_path / "c.jsonl", "exact"), ("dev-sort", None, tmp_path / "d.jsonl", "exact")]
    for proto in (v3.V3, v3.pilot_protocol(device), v3.smoke_protocol()):
        for name, arm in proto["arms"].items():
            for max_steps, every in ((None, proto["every"]), (7, None)):
                doc = spec(f"x-{name}", tmp_path / "m", tmp_path / "run", arm, tasks, general, 0,
                              proto["tokens"], every, max_steps=max_steps)
                validate_resource(doc, mode="local")
                key = "sft" if arm["method"] in ("sft", "self-sft") else "grpo"
                assert doc["spec"][key].get("maxSteps") == (max_steps or arm[key].get("maxSteps"))
