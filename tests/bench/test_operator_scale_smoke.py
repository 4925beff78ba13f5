"""Smoke run of bench/operator_scale --quick (20 resources): it runs end to end and prints a well-formed table.

Not a timed test: only the table's structure and that every figure is a finite number are checked, plus the
facts that hold on any machine (every run got its children, the baseline makes exactly its 2 creates per run).
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ("p50_s", "p99_s", "max_s", "create_span_s", "all_done_s", "throughput_per_s", "cpu_s", "cpu_ms_per_run",
           "settle_cpu_pct", "peak_rss_mb", "api_requests_per_run", "emulator_cpu_s", "storage_cpu_s",
           "servers_floor_s")


def test_operator_scale_quick(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    md = tmp_path / "RESULTS.md"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "operator_scale" / "run.py"), "--quick",
                           "--json", str(out), "--out", str(md)],
                          cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert set(rows) == {"operator", "baseline"}
    for who, row in rows.items():
        assert row["n"] == 20 and row["missing"] == 0, (who, row)
        for key in FIGURES:
            assert isinstance(row[key], (int, float)) and math.isfinite(row[key]) and row[key] >= 0, (who, key, row)
        assert 0 < row["p50_s"] <= row["p99_s"] <= row["max_s"], row
        assert row["peak_rss_mb"] > 10, row
    base, op = rows["baseline"], rows["operator"]
    # the baseline: one watch, then exactly the two children per run (+ the user's create of the run itself)
    assert base["requests"]["POST configmaps"] == base["requests"]["POST pytorchjobs"] == 21
    assert op["requests"]["POST configmaps"] == op["requests"]["POST pytorchjobs"] == 21  # idempotent: no retries
    # the S3 server works for the operator's storage claims (none for the bare client); the floor is what the
    # servers alone needed: at least the emulator's CPU, never more than the whole phase took
    assert op["storage_cpu_s"] > 0, op
    for row in (base, op):
        assert row["emulator_cpu_s"] <= row["servers_floor_s"] <= row["emulator_cpu_s"] + row["storage_cpu_s"], row
    assert op["passes_per_run"] is not None and op["passes_per_run"] >= 1 and op["pass_mean_ms"] > 0

    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert table[0] == "| | operator | baseline | operator / baseline |"
    labels = [line.split("|")[1].strip() for line in table]
    for label in ("time to first children p50 (s)", "time to first children p99 (s)", "controller peak RSS (MB)",
                  "controller CPU until done (s)", "API requests per run"):
        assert label in labels
        cells = next(line for line in table if line.split("|")[1].strip() == label).split("|")[2:5]
        for cell in cells[:2]:
            assert math.isfinite(float(cell)), (label, cells)
        assert cells[2].strip().endswith("x"), (label, cells)
    text = md.read_text()
    assert text.startswith("# Operator scale") and "run.py --quick" in text and "Goals: p99" in text
    assert "Servers' floor: a controller that cost no CPU itself" in text


def test_request_cost_prints_each_clients_cpu_per_request() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "operator_scale" / "request_cost.py"), "-n", "5"],
                          cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in proc.stdout.splitlines() if line.startswith("| ") and "ms" not in line]
    assert [name.strip() for name, _, _, _ in rows] == ["boto3 LIST (bounded, owner.json..tasks/)",
                                                     "boto3 conditional PUT of owner.json",
                                                     "kubernetes client POST ConfigMap"], proc.stdout
    for _, ms, ratio, server_ms in rows:
        assert math.isfinite(float(ms)) and float(ms) > 0, proc.stdout
        assert math.isfinite(float(server_ms)) and float(server_ms) >= 0, proc.stdout  # 10 ms clock ticks
    assert rows[-1][2].strip() == "1.0x", proc.stdout
