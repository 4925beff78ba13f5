"""Smoke runs of the benchmarks' --quick modes: they run end to end and write well-formed tables.

Not timed tests: only the structure of the tables and that every figure is a finite number (or an explicit
n/a where a metric does not apply) is checked. The rif_cost smoke run reuses bench/forgetting's quick runs
(same protocol, same scratch directory), as the full benchmark does.
"""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
       "HF_HUB_OFFLINE": "1"}
CELL = re.compile(r"^\**([+-]?\d+(?:\.\d+)?) ± (\d+(?:\.\d+)?)\**$")


def run(script, *args, timeout=900):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script / "run.py"), "--quick", "--nice", "0", *args],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def table(text, first_header):
    """The markdown table whose first header cell is first_header: (header, rows) of stripped cells."""
    lines = text.splitlines()
    start = next(k for k, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    block = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        block.append([c.strip() for c in line.strip().strip("|").split("|")])
    assert set(block[1]) <= {"---"}, block[1]
    return block[0], block[2:]


def value(cell):
    m = CELL.match(cell)
    assert m, f"not a 'mean ± std' figure: {cell!r}"
    mean, std = float(m.group(1)), float(m.group(2))
    assert math.isfinite(mean) and math.isfinite(std) and std >= 0
    return mean


@pytest.fixture(scope="module")
def forgetting(tmp_path_factory):
    work = tmp_path_factory.mktemp("bench-forgetting")
    out = run("forgetting", "--work", str(work))
    return work, out


def test_forgetting_quick_table(forgetting):
    work, out = forgetting
    text = (work / "RESULTS.md").read_text()
    assert "## Protocol" in text and "Command: `" in text and "Machine: " in text
    header, rows = table(text, "method")
    assert header == ["method", "final AA", "plasticity", "BWT", "forgetting", "general change", "RIF filtered",
                      "rollout tokens", "learner steps", "wall s"]
    names = [r[0] for r in rows]
    assert names[0] == "sft" and names[1].startswith("sft-matched") and names[2:4] == ["grpo", "rif-grpo"]
    assert names[4].startswith("multitask")
    cols = {h: k for k, h in enumerate(header)}
    for row in rows:
        aa = value(row[cols["final AA"]])
        assert 0.0 <= aa <= 1.0
        assert -1.0 <= value(row[cols["plasticity"]]) <= 1.0
        assert value(row[cols["learner steps"]]) >= 0 and value(row[cols["wall s"]]) > 0
        assert value(row[cols["rollout tokens"]]) >= 0
        assert -1.0 <= value(row[cols["general change"]]) <= 1.0
        sequential = not row[0].startswith("multitask")
        for metric in ("BWT", "forgetting"):
            if sequential:
                assert -1.0 <= value(row[cols[metric]]) <= 1.0
            else:
                assert row[cols[metric]] == "n/a"
        if row[0] == "rif-grpo":
            assert 0.0 <= value(row[cols["RIF filtered"]]) <= 1.0
        else:
            assert row[cols["RIF filtered"]] == "n/a"
    by = {r[0]: r for r in rows}
    assert value(by["sft"][cols["rollout tokens"]]) == 0 and value(by["grpo"][cols["rollout tokens"]]) > 0
    # the ratio lines are present, each a finite figure or an explicit n/a (0/0 on a base that learns nothing)
    for label in ("|BWT_sft| / |BWT_grpo| =", "|BWT_sft-matched| / |BWT_grpo| =", "rif-grpo vs grpo cost",
                  "matched-learning control scan"):
        assert label in text, label
    assert "| method |" in out  # the table is printed too
    summary = json.loads((work / "summary.json").read_text())["summary"]
    for method, seeds in summary["per"].items():
        assert seeds, method
        for metrics in seeds.values():
            for key in ("aa", "plasticity", "tokens", "steps", "wall"):
                assert isinstance(metrics[key], (int, float)) and math.isfinite(metrics[key]), (method, key)


def test_rif_cost_quick_reuses_forgetting_runs(forgetting, tmp_path):
    work, _ = forgetting
    results = tmp_path / "RIF.md"
    out = run("rif_cost", "--work", str(work), "--results", str(results))
    text = results.read_text()
    assert "2 of 2 runs reused from bench/forgetting" in text
    header, rows = table(text, "task")
    assert header[:5] == ["task", "RIF filtered", "grpo tokens", "rif tokens", "tokens grpo/rif"]
    assert [r[0] for r in rows] == ["reverse", "count", "all tasks"]
    for row in rows:
        assert 0.0 <= value(row[1]) <= 1.0
        for cell in row[2:4] + row[5:7] + row[8:10]:
            assert value(cell) >= 0
    _, quality = table(text, "method")
    assert [r[0] for r in quality] == ["grpo", "rif-grpo", "rif-grpo - grpo (paired)"]
    for row in quality[:2]:
        assert 0.0 <= value(row[1]) <= 1.0
    assert "Goal: rif-grpo >= 1.7x cheaper" in text and "Goal: rif-grpo" in out


def test_trainer_overhead_quick(forgetting, tmp_path):
    """On bench/forgetting's quick base (protocols.QUICK: the smoke base trainer_overhead --quick would build)."""
    from protocols import QUICK  # bench/forgetting (on the tests' pythonpath)

    base = forgetting[0] / f"base-seed{QUICK['base']['seed']}-{QUICK['base']['steps']}"  # v12.Runner's folder
    assert (base / "config.json").is_file(), sorted(p.name for p in forgetting[0].iterdir())
    out = run("trainer_overhead", "--work", str(tmp_path), "--base", str(base))
    text = (tmp_path / "RESULTS.md").read_text()
    header, rows = table(text, "")
    assert header[1:] == ["ours (cpt-trainer train stage)", "bare TRL GRPOTrainer", "ours / bare - 1"]
    first = rows[0]
    assert first[0].startswith("seconds per step")
    ours, bare = float(first[1]), float(first[2])
    assert math.isfinite(ours) and math.isfinite(bare) and ours > 0 and bare > 0
    assert re.fullmatch(r"\*\*[+-]\d+\.\d%\*\*", first[3]), first[3]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert math.isfinite(summary["overhead"]) and len(summary["ours"]) == len(summary["bare"]) == 1
    assert all(r["steps"] == summary["steps"] for r in summary["ours"] + summary["bare"])
    assert "Goal (<= 5% per-step overhead)" in out


def test_checkpoint_quick():
    """bench/checkpoint --quick: 3 steps with and without a step checkpoint per step, then a resume; every figure
    of its table is a finite number and 2 saves were made (none at the last step)."""
    out = run("checkpoint", timeout=600)
    rows = [line.split("|")[1:3] for line in out.splitlines() if line.startswith("| ") and "measure" not in line]
    values = {name.strip(): float(value) for name, value in rows}
    assert len(values) == 7 and all(math.isfinite(v) for v in values.values()), values
    stall = "stall per save (stage time difference / saves) s"  # a difference of two timings: noise may be < 0
    assert all(v >= 0 for k, v in values.items() if k != stall), values
    assert values["stage s, one per step"] > 0 and values["stage s, no step checkpoints"] > 0
    assert "3 steps, 2 saves" in out, out[:300]
