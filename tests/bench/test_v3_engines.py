"""bench/forgetting's pilot engine check (v3engines.py): which rows it re-scores, when a cached score counts, and
the report it renders (the same-weights comparison and the claims recomputed with every row scored by hf). Pure
and fast: stub runs, nothing is scored."""

import json
from pathlib import Path

import v3enginedoc
import v3engines
from protocols import PILOT


SEQ = ["sub", "add2"]


def row(engine, flags):
    acc = {k: v.count("1") / len(v) for k, v in flags.items()}
    return {"engine": engine, "correct": flags, "tasks": {k: a for k, a in acc.items() if k in SEQ},
            "general": {k: a for k, a in acc.items() if k not in SEQ}}


def run(tmp: Path, name: str, engines: list, rows: list, tasks=SEQ) -> dict:
    d = tmp / name
    evals = [row(e, f) for e, f in zip(engines, rows)]
    for i, (n, ev) in enumerate(zip(["base", *tasks], evals)):
        (d / "out" / "tasks" / f"{i}-{n}").mkdir(parents=True)
        (d / "out" / "tasks" / f"{i}-{n}" / "eval.json").write_text(json.dumps(ev))
    return {"phase": "Succeeded", "tasks": list(tasks), "evals": evals, "run": {"dir": str(d)}}


def flags(sub, add2, cap, mul):
    return {"sub": sub, "add2": add2, "capitals": cap, "mul": mul}


def fixture(tmp):
    base = flags("1100", "1000", "10", "11")
    sft = run(tmp, "sft", ["hf"] * 3, [base, flags("1100", "1000", "00", "00"), flags("1000", "1100", "00", "00")])
    grpo = run(tmp, "grpo", ["hf", "vllm", "vllm"],
               [base, flags("1110", "1000", "10", "11"), flags("1100", "1110", "10", "11")])
    arms = {0: {"full": {"sft": sft, "grpo": grpo}, "matched": {}}}
    return arms, sft, grpo


def cache(tmp, job, flags_, code="/snap/trainer"):
    path = v3engines.cache_file(tmp / "work", job)
    path.parent.mkdir(parents=True, exist_ok=True)
    sha = v3engines._sha(v3engines._row_file(job["run"], job["row"]))
    path.write_text(json.dumps(dict(row(job["engine"], flags_), meta={"code": code, "source_eval_sha256": sha})))


def test_jobs_rescore_every_vllm_row_with_hf_and_the_base_row_once_with_vllm(tmp_path):
    arms, _, _ = fixture(tmp_path)
    got = [(Path(j["run"]["run"]["dir"]).name, j["row"], j["engine"]) for j in v3engines.jobs(arms, [])]
    assert got == [("grpo", 1, "hf"), ("grpo", 2, "hf"), ("sft", 0, "vllm")]


def test_a_cached_score_counts_only_under_the_same_code_and_the_same_source_row(tmp_path):
    arms, _, grpo = fixture(tmp_path)
    job = v3engines.jobs(arms, [])[0]
    cache(tmp_path, job, grpo["evals"][1]["correct"])
    assert v3engines.load(tmp_path / "work", job) is not None  # no snapshot on PYTHONPATH: "working tree" both
    cache(tmp_path, job, grpo["evals"][1]["correct"], code="/w/code-0123456789ab/trainer")
    assert v3engines.load(tmp_path / "work", job) is None
    cache(tmp_path, job, grpo["evals"][1]["correct"])
    v3engines._row_file(grpo, 1).write_text("{}")  # the pilot's row changed: the score is stale
    assert v3engines.load(tmp_path / "work", job) is None


def test_report_compares_the_engines_and_recomputes_the_claims_with_hf(tmp_path):
    arms, sft, grpo = fixture(tmp_path)
    data = {"arms": arms, "sequence": SEQ, "protocol": PILOT, "admission": {"table": {}}}
    assert "has not run" in "\n".join(v3enginedoc.section(dict(data, engine_check=None)))
    nothing = v3engines.collect(tmp_path / "work", 10, arms, {"table": {}}, run=False)
    assert "has not run" in "\n".join(v3enginedoc.section(dict(data, engine_check=nothing)))
    todo = v3engines.jobs(arms, [])
    cache(tmp_path, todo[0], flags("1100", "1000", "10", "11"))  # hf differs from vLLM on one sub prompt
    partial = v3engines.collect(tmp_path / "work", 10, arms, {"table": {}}, run=False)
    assert partial["hf_arms"] is None and len(partial["pairs"]) == 1
    cache(tmp_path, todo[1], grpo["evals"][2]["correct"])
    cache(tmp_path, todo[2], sft["evals"][0]["correct"])
    ec = v3engines.collect(tmp_path / "work", 10, arms, {"table": {}}, run=False)
    assert ec["hf_arms"][0]["full"]["grpo"]["evals"][1]["correct"]["sub"] == "1100"
    assert arms[0]["full"]["grpo"]["evals"][1]["correct"]["sub"] == "1110"  # the pilot's runs are left as they are
    sub = next(r for r in v3enginedoc.set_table(ec["pairs"]) if r[0] == "sub")
    assert sub[1:] == [3, 12, "0.500", "0.583", "+0.083", "0.250", "0.083 (1)"]
    text = "\n".join(v3enginedoc.section(dict(data, engine_check=ec)))
    assert "| sub | 3 | 12 |" in text and "all hf: d [95% CI]" in text
    assert ("No pilot verdict changes" in text) != ("Verdicts that change" in text)


def test_the_rescore_of_a_matched_first_run_is_checked_against_the_second_runs_hf_row_0(tmp_path):
    """grpo-m4 (sub) ends in the checkpoint grpo-m4-4 starts from; the pilot scored it with vLLM (grpo-m4 row 1)
    and with hf (grpo-m4-4 row 0): the hf re-score is compared with the latter."""
    arms, _, _ = fixture(tmp_path)
    probe = {"capitals": "10", "mul": "11"}
    first = run(tmp_path, "grpo-m4", ["hf", "vllm"], [dict(probe, sub="1100"), dict(probe, sub="1110")], ["sub"])
    second = run(tmp_path, "grpo-m4-4", ["hf", "vllm"], [dict(probe, add2="1000", sub="1100"),
                                                          dict(probe, add2="1100", sub="1100")], ["add2"])
    arms[0]["matched"] = {("sft", "grpo"): {"steps": {"grpo": [4, 4]}, "grpo": {"phase": "Succeeded",
                                                                                "first": first, "second": second}}}
    job = next(j for j in v3engines.jobs(arms, []) if j["run"] is first)
    assert v3engines.collect(tmp_path / "work", 10, arms, {"table": {}}, run=False)["reproduced"]["prompts"] == 0
    cache(tmp_path, job, dict(probe, sub="1101"))
    assert v3engines.collect(tmp_path / "work", 10, arms, {"table": {}}, run=False)["reproduced"] == {
        "prompts": 8, "same": 7}
