"""Observability tests: finds promtool (skip, with the reason, if absent; under CI a missing promtool fails)."""

from __future__ import annotations

import os
import shutil

import pytest
from obs_common import ROOT


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool from PATH or the Makefile's .tools/; `make promtool` installs it."""
    local = ROOT / ".tools/promtool"
    found = shutil.which("promtool") or (str(local) if os.access(local, os.X_OK) else None)
    if not found and os.environ.get("CI"):
        pytest.fail("promtool not found on PATH or in .tools/: `make test` installs it (make promtool)")
    if not found:
        pytest.skip("promtool not found on PATH or in .tools/: run `make promtool` (Debian's prometheus package)")
    return found
