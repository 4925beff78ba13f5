"""The storage benchmark still runs (quick sizes); its numbers are not asserted: timings are not tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "results.md"
    proc = subprocess.run([sys.executable, str(ROOT / "bench/storage/run.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "upload_dir vs upload_file" in text and "fetch_checkpoint" in text and "Resume" in text
    assert text.count("x |") >= 3  # a ratio in every row
