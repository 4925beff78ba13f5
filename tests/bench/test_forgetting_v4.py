"""bench/forgetting protocol v4 (PROTOCOL-v4.md): the base-clustered bootstrap and the minimum detectable effect on
synthetic records with known answers, the matching rule and its reruns on stub runs, Part M's specs against the
product's validation, and `run.py --protocol v4 --quick` end to end (real `cpt run`s of the tiny base)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import stats as st
import v4
import v4doc

ROOT = Path(__file__).resolve().parents[2]


def test_clustered_bootstrap_resamples_bases_not_pairs():
    """Two bases, one all 0, one all 1 (3 seeds each): a replicate mean is 0, 1/2 or 1 with probabilities 1/4,
    1/2, 1/4, so the 95% interval is [0, 1]. Three bases at 0, 0.1, 0.2 (3 seeds each, equal within a base): all
    three drawn bases are 0 with probability 1/27 > 2.5%, so the clustered interval is [0, 0.2], while the
    t-interval over the nine pairs, which treats them as independent, is [0.033, 0.167]. Equal values give a
    zero-width interval at that value."""
    vals = {(b, s): float(b) for b in (0, 1) for s in range(3)}
    ci = st.clustered_bootstrap(vals, reps=4000)
    assert (ci["n"], ci["mean"], ci["lo"], ci["hi"]) == (6, 0.5, 0.0, 1.0)
    three = {(b, s): b / 10 for b in range(3) for s in range(3)}
    c, t = st.clustered_bootstrap(three, reps=4000), st.t_interval(list(three.values()))
    assert (c["lo"], c["hi"]) == (0.0, 0.2) and abs(t["lo"] - 0.0334) < 1e-3 and abs(t["hi"] - 0.1666) < 1e-3
    flat = st.clustered_bootstrap({(b, s): 0.25 for b in range(3) for s in range(3)}, reps=500)
    assert flat["lo"] == flat["hi"] == 0.25
    assert st.clustered_bootstrap({})["mean"] is None


def test_clustered_bootstrap_within_one_base_is_the_seed_bootstrap():
    vals = {(0, s): v for s, v in enumerate([0.0, 0.0, 1.0, 1.0])}
    ci = st.clustered_bootstrap(vals, reps=4000, seed=3)
    assert ci["lo"] == 0.0 and ci["hi"] == 1.0 and ci["mean"] == 0.5


def test_mde_matches_the_registered_table_and_power():
    """PROTOCOL-v4.md: SD 0.075 per pair detects 0.079 / 0.052 / 0.031 at 9 / 18 / 49 pairs (80% power,
    two-sided 5%); the exact noncentral t agrees to 0.001. At the MDE the power is 0.80, at 0 it is the size."""
    for n, registered in v4doc.REGISTERED_MDE.items():
        assert abs(st.mde(0.075, n) - registered) <= 0.0012
    tc = st.t_quantile_975(8)
    assert abs(tc - 2.3060) < 1e-3 and abs(st.t_quantile_975(48) - 2.0106) < 1e-3
    assert abs(st._t_power(0.0, tc, 8) - 0.05) < 2e-3
    assert abs(st._t_power(st.mde(0.075, 9) / 0.075 * 3, tc, 8) - 0.80) < 1e-3
    assert abs(st.mde(0.15, 9) - 2 * st.mde(0.075, 9)) < 1e-6  # linear in the SD
    assert round(st.mde_binomial(600), 2) == 0.08 and round(st.mde_binomial(300), 2) == 0.11


def test_verdict_needs_both_intervals():
    below = {"n": 9, "mean": -0.1, "lo": -0.2, "hi": -0.01}
    across = {"n": 9, "mean": -0.1, "lo": -0.2, "hi": 0.02}
    assert st.both_verdict(below, below, "A loses more", "B", 9) == "A loses more"
    assert st.both_verdict(below, across, "A loses more", "B", 9) == "not distinguishable"
    assert st.both_verdict(dict(below, n=5), below, "A", "B", 9).startswith("not decided")
    assert st.match_level(0.6, 0.5, 0.4, 0.05) == 0.5 and st.match_level(0.6, 0.42, 0.4, 0.05) is None


def _run(task, points, final_row, phase="Succeeded", base=None):
    evals = [base or {"general": {f"dev-{task}": 0.2}, "correct": {}}, final_row]
    return {"phase": phase, "trains": [None, {"curve": [{"step": s, "general": {f"dev-{task}": a}}
                                                        for s, a in points]}], "evals": evals,
            "run": {"dir": "/x", "wallSeconds": 1}}


def test_group_matches_at_the_lower_final_level_and_reruns_only_when_needed(monkeypatch):
    """L = the lower final dev (0.5); grpo reaches it at its last step (no rerun); sft at step 4 of 8, so sft is
    rerun with maxSteps 4 and the level that rerun reached is reported."""
    row = lambda acc: {"general": {"dev-t": acc}, "correct": {}}  # noqa: E731
    full = {"sft": _run("t", [(4, 0.55), (8, 0.7)], row(0.7)), "grpo": _run("t", [(4, 0.3), (8, 0.5)], row(0.5))}
    launched = []

    def launch(name, arm, steps):
        launched.append((name, arm, steps))
        return {"dir": name} if steps is None else {"dir": name, "rerun": True}

    monkeypatch.setattr(v4, "read_run", lambda res: full[res["dir"]] if "rerun" not in res else
                        dict(_run("t", [], row(0.52)), run={"dir": res["dir"]}))
    g = v4.Group("t", ["sft", "grpo"], launch, margin=0.05, gain=0.10)
    adm = g.admission()
    assert adm["start"] == 0.2 and adm["arms"]["grpo"]["admitted"] and abs(adm["arms"]["sft"]["gain"] - 0.5) < 1e-9
    m = g.matched("sft", "grpo")
    assert m["status"] == "matched" and m["level"] == 0.5
    assert m["grpo"]["step"] == 8 and m["grpo"]["rerun"] is None and m["grpo"]["reached"] == 0.5
    assert m["sft"]["step"] == 4 and m["sft"]["rerun"] == "sft-m4" and m["sft"]["reached"] == 0.52
    assert ("sft-m4", "sft", 4) in launched and not any(n.startswith("grpo-m") for n, _, _ in launched)
    g.gain = 0.4  # grpo's gain (+0.30) misses the bar: nothing involving it is decided
    assert g.matched("sft", "grpo")["status"] == "not decided: admission"


def test_part_m_specs_pass_cpt_validate(tmp_path, monkeypatch):
    """Part M's five arms (and a matched rerun) as the runner writes them: the answer-only arm on rows without
    `solution`, every row scored by vLLM. PROTOCOL-v4.md Amendment 1: the full runs carry step checkpoints every 4
    steps, all kept (`checkpoint.everySteps`, `keep`), and no `evaluation.everySteps` (the product refuses it with
    `evaluation.engine: vllm`); their dev curve is scored from those checkpoints by vLLM after the run
    (v4curve.py). Every spec passes the product's validation; the rerun saves no step checkpoints."""
    from cpt_core.validation import validate_resource

    docs = []
    monkeypatch.setattr(v4, "cached", lambda run, run_dir, doc, nice, cpt=None: docs.append(doc))
    part = v4.PartM(tmp_path, 0)
    d = part.data()
    assert all("solution" in json.loads(ln) for ln in (d / "add2-train.jsonl").read_text().splitlines())
    assert not any("solution" in json.loads(ln) for ln in (d / "add2-train-answer.jsonl").read_text().splitlines())
    assert [len((d / f"{p}-probe.jsonl").read_text().splitlines()) for p in ("sub", "add1", "max2")] == [200] * 3
    g = part.group(False, 0)
    g.launch("grpo-m4", "grpo", 4)
    assert len(docs) == 6
    for doc in docs:
        validate_resource(doc, mode="local")
        assert doc["spec"]["evaluation"]["engine"] == "vllm" and "everySteps" not in doc["spec"]["evaluation"]
    for doc in docs[:5]:
        assert doc["spec"]["checkpoint"] == {"everySteps": 4, "everyMinutes": 0, "keep": 100}
        steps = doc["spec"]["sft" if doc["spec"]["method"] in ("sft", "self-sft") else "grpo"]
        assert steps.get("maxSteps", 16) // 4 <= doc["spec"]["checkpoint"]["keep"]
    assert "checkpoint" not in docs[5]["spec"]
    assert docs[0]["spec"]["tasks"][0]["train"].endswith("add2-train-answer.jsonl")
    assert docs[-1]["spec"]["grpo"]["maxSteps"] == 4


def test_part_m_section_says_which_seeds_ran():
    """The budget rule's one permitted change (seeds dropped before any arm runs) is stated in RESULTS."""
    from protocols import V4_M

    text = "\n".join(v4doc.part_m({"import": {"sha": "x"}, "protocol": V4_M, "seeds": {}}))
    assert V4_M["seeds"] == [0] and V4_M["registered_seeds"] == [0, 1]
    assert "Seeds run: [0] of the registered [0, 1]" in text and "Not run yet" in text
    assert v4doc.probe_mde(V4_M) == "0.08 (600 prompts, one seed run)"
    assert v4doc.probe_mde(dict(V4_M, seeds=[0, 1])) == "0.06 (1200 independent draws) to 0.08 (600)"


def test_part_t_section_lists_the_bases_it_ran_on():
    """Part T's bases are rebuilt (v3's were not kept; a rebuild is not bit-identical), so RESULTS names each one."""
    from protocols import V4_T

    bases = {0: {"recipe_hash": "9393e75811267c7e", "seconds": 1149.0, "eval_accuracy": {"reverse": 0.395}}}
    text = "\n".join(v4doc.part_t({"protocol": V4_T, "pairs": {}, "order": [(0, 0)], "bases": bases}))
    assert "| 0 | 9393e75811267c7e | 1149 | {'reverse': 0.395} |" in text and "Not run yet" in text


def test_quick_end_to_end(tmp_path):
    """`run.py --protocol v4 --quick`: the shared task-1 run and two task-2 arms from its checkpoint (real
    `cpt run`s, 1 step each, the arms two at a time), the section with every part; a second pass reuses every run
    (the cache) and leaves the section byte for byte, its code line included (read from the runs' records)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(ROOT / "bench" / "forgetting" / "run.py"), "--protocol", "v4", "--quick", "--nice",
           "0", "--work", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = (tmp_path / "RESULTS.md").read_text()
    assert "<!-- protocol-v4:begin -->" in text and "### Part T" in text and "Not run: no device." in text
    assert "| b0 s0 | T1 | matched |" in text and "T1. change of task 1 (sort): sft - grpo" in text
    again = subprocess.run(cmd + ["--report-only"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    # "Code measured" comes from the runs' own done.json records, not from the report process's git describe
    # (HEAD moves while the suite runs): the section stays byte for byte
    assert (tmp_path / "RESULTS.md").read_text() == text
    assert re.search(r"Code measured \(the runs' own records, done\.json\): working tree \(\d+ runs\)\.", text)
    assert (tmp_path / "T" / "b0-s0" / "count" / "sft" / "out" / "tasks" / "1-count" / "eval.json").is_file()
