"""The alerting and recording rules: promtool checks them, promtool unit tests them, and they only use real
metrics. The same file is the chart's PrometheusRule source (charts/cpt-operator/templates/prometheusrule.yaml)."""

from __future__ import annotations

import subprocess

import yaml

from obs_common import OBSERVABILITY, RULES, exported_sample_names, metric_names

RULE_TESTS = OBSERVABILITY / "tests/rules_test.yaml"


def _rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def _promtool(promtool: str, *args: str) -> str:
    proc = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_promtool_check_rules(promtool):
    assert "SUCCESS" in _promtool(promtool, "check", "rules", str(RULES))


def test_promtool_unit_tests_pass(promtool):
    assert "SUCCESS" in _promtool(promtool, "test", "rules", str(RULE_TESTS))


def test_every_alert_is_tested_firing_and_not_firing():
    """Each alert has a unit test where it fires (labels + annotations checked) and one where it must not."""
    cases = [c for t in yaml.safe_load(RULE_TESTS.read_text())["tests"] for c in t.get("alert_rule_test", [])]
    for rule in (r for r in _rules() if "alert" in r):
        mine = [c for c in cases if c["alertname"] == rule["alert"]]
        firing = [a for c in mine for a in c.get("exp_alerts") or []]
        assert firing, f"{rule['alert']}: no firing case"
        assert any(not c.get("exp_alerts") for c in mine), f"{rule['alert']}: no pending/not-firing case"
        assert all(a.get("exp_annotations", {}).keys() >= {"summary", "description"} for a in firing), rule["alert"]
        assert all(a.get("exp_labels", {}).get("severity") for a in firing), rule["alert"]


def test_every_recording_rule_is_tested():
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    tested = {e["expr"] for t in tests for e in t.get("promql_expr_test", [])}
    for rule in (r for r in _rules() if "record" in r):
        assert rule["record"] in tested, rule["record"]


def test_alerts_carry_severity_summary_and_description():
    for rule in (r for r in _rules() if "alert" in r):
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]


def test_rules_use_only_exported_metrics():
    names = exported_sample_names()
    recorded = {r["record"] for r in _rules() if "record" in r}
    for rule in _rules():
        used = metric_names(rule["expr"])
        assert used, rule
        assert used <= names | recorded, (rule.get("alert") or rule.get("record"), used - names - recorded)


def test_metric_name_extraction():
    """The extractor the name checks rely on: labels, strings and grouping clauses are not metric names."""
    expr = ('sum by (namespace, cpt) (rate(cpt_a_total{stage="train", x=~"cpt_fake"}[5m])) '
            '/ on (namespace) group_left (cpt_label) cpt:b:ratio > 0.5')
    assert metric_names(expr) == {"cpt_a_total", "cpt:b:ratio"}
