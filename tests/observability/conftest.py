"""Observability tests: puts this folder on sys.path (helpers) and finds promtool (skip, with the reason, if absent)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # obs_common, obs_fixtures

from obs_common import ROOT  # noqa: E402


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool from PATH or the Makefile's .tools/; `make promtool` installs it."""
    local = ROOT / ".tools/promtool"
    found = shutil.which("promtool") or (str(local) if os.access(local, os.X_OK) else None)
    if not found:
        pytest.skip("promtool not found on PATH or in .tools/: run `make promtool` (Debian's prometheus package)")
    return found
