"""Shared helpers: the promtool binary (skip with a reason when absent) and an exporter scrape."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "charts/cpt-operator/files/prometheus-rules.yaml"
DASHBOARD = ROOT / "charts/cpt-operator/files/dashboard.json"
OBSERVABILITY = ROOT / "observability"

sys.path.insert(0, str(Path(__file__).parent))  # obs_fixtures.py (a unique name: tests run with --import-mode=importlib)


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool from PATH or the Makefile's .tools/; `make promtool` installs it."""
    found = shutil.which("promtool") or (str(ROOT / ".tools/promtool")
                                         if os.access(ROOT / ".tools/promtool", os.X_OK) else None)
    if not found:
        pytest.skip("promtool not found on PATH or in .tools/: run `make promtool` (Debian's prometheus package)")
    return found
