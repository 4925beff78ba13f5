"""bench/rif_cost/prefilter_exact.py: prefilter's cost, recomputed from the committed per-run records, is exactly
floor(K/B) x B / P + N / (E G) (the learner trains full batches only), while the registered approximation
(1 - f) + N / (E G) misses it wherever a partial batch was left out (claim C4's E=1 gap)."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECORDS = ROOT / "bench" / "rif_cost" / "online-runs.json"


def _module():
    spec = importlib.util.spec_from_file_location("prefilter_exact", ROOT / "bench" / "rif_cost" / "prefilter_exact.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_exact_formula_gives_every_measured_ratio_and_the_step_counts():
    mod = _module()
    rows = mod.rows(json.loads(RECORDS.read_text()))
    assert len(rows) == 12  # 3 seeds x 2 epoch settings x 2 tasks
    for r in rows:
        kept = round((1 - r["f"]) * mod.POOL)
        assert r["steps"] == r["E"] * (kept // mod.BATCH), r  # the learner's own count of full batches
        assert abs(r["measured"] - r["exact"]) < 1e-9, r
    partial = [r for r in rows if round((1 - r["f"]) * mod.POOL) % mod.BATCH]
    assert partial and all(r["registered"] > r["measured"] for r in partial)  # the gap: only partial batches


def test_the_script_prints_the_table_and_both_summaries(capsys):
    assert _module().main([str(RECORDS)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n| 1 |") + out.count("\n| 4 |") == 12
    assert "E=1: mean |measured - registered| 0.109; max |measured - exact| 0.000" in out
