"""Shared by the observability tests: paths, the names the exporter really serves, and a PromQL name extractor.

(tests/support is on pytest's pythonpath: module names here are unique on purpose.)
"""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cpt_operator import metrics
from obs_fixtures import run

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "charts/cpt-operator/files/prometheus-rules.yaml"
DASHBOARD = ROOT / "charts/cpt-operator/files/dashboard.json"
OBSERVABILITY = ROOT / "observability"

# PromQL words that look like identifiers but are not metric names.
_IDENT = re.compile(r"(?<![\w:$\"'.])([a-zA-Z_:][\w:]*)(?=\s*(\{|\[|\)|$|\s|[-+*/><=!]))")


def exported_sample_names() -> set[str]:
    """Sample names (with _total, _bucket, ...) served after publishing the fixture run and one reconcile."""
    spec, status, stats = run()
    metrics.publish("names-probe", "probe", spec, status, stats)
    metrics.observe_reconcile(0.1, error=True)
    try:
        text = generate_latest(metrics.REGISTRY).decode()
    finally:
        metrics.forget("names-probe", "probe")
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples if s.value is not None}


def metric_names(expr: str) -> set[str]:
    """cpt_* / cpt:* series names an expression selects (every name this project owns starts with cpt)."""
    no_strings = re.sub(r'"[^"]*"', '""', expr)
    no_labels = re.sub(r"\{[^}]*\}", "{}", no_strings)
    no_grouping = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", no_labels)
    return {m.group(1) for m in _IDENT.finditer(no_grouping) if m.group(1).startswith("cpt")}
