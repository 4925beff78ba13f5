"""tests/security: this folder (pss, children_common) and tests/chart (chart_common) importable by name."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "chart"))
