"""docs/metrics.md documents every metric, label, recording rule and alert that exists (and nothing is forgotten
when one is added)."""

from __future__ import annotations

import yaml

from cpt_operator import metrics
from obs_common import ROOT, RULES

DOC = (ROOT / "docs/metrics.md").read_text()


def test_every_metric_and_label_is_documented():
    for name, (_, labels) in metrics.FAMILIES.items():
        assert f"`{name}`" in DOC, name
        for label in labels:
            assert f"`{label}`" in DOC, (name, label)
    for collector_name in ("cpt_operator_reconcile_total", "cpt_operator_reconcile_errors_total",
                           "cpt_operator_reconcile_duration_seconds"):
        assert f"`{collector_name}`" in DOC, collector_name


def test_every_rule_is_documented():
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            assert f"`{name}`" in DOC, name
