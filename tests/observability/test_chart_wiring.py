"""One source: the chart's PrometheusRule and dashboard ConfigMap carry exactly the files this suite tests."""

from __future__ import annotations

import json

import pytest
import yaml

from obs_common import DASHBOARD, ROOT, RULES

helm_python = pytest.importorskip("helm_python", reason="helm-python-sdk (dev extra) renders the chart")


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    chart = helm_python.Chart.load(str(ROOT / "charts/cpt-operator"))
    out = chart.render({"prometheus": {"prometheusRule": {"enabled": True}},
                        "grafana": {"dashboard": {"enabled": True}}}, name="cpt", namespace="cpt-system")
    return [d for path, text in out.items() if path.endswith(".yaml") for d in yaml.safe_load_all(text) if d]


def test_prometheus_rule_is_the_rules_file(rendered):
    (rule,) = [d for d in rendered if d["kind"] == "PrometheusRule"]
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_dashboard_configmap_is_the_dashboard(rendered):
    maps = [d for d in rendered if d["kind"] == "ConfigMap" and any(k.endswith(".json") for k in d.get("data", {}))]
    assert len(maps) == 1
    (text,) = [v for k, v in maps[0]["data"].items() if k.endswith(".json")]
    assert json.loads(text) == json.loads(DASHBOARD.read_text())


def test_policy_drift_threshold_comes_from_values():
    """CptPolicyDrift's threshold is prometheus.prometheusRule.policyKlThreshold; the rest of the rule is the file's."""
    chart = helm_python.Chart.load(str(ROOT / "charts/cpt-operator"))
    out = chart.render({"prometheus": {"prometheusRule": {"enabled": True, "policyKlThreshold": 0.25}}},
                       name="cpt", namespace="cpt-system")
    (rule,) = [d for path, text in out.items() if path.endswith(".yaml") for d in yaml.safe_load_all(text)
               if d and d["kind"] == "PrometheusRule"]
    rendered = {r.get("alert"): r for g in rule["spec"]["groups"] for r in g["rules"]}
    source = {r.get("alert"): r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    drift, file_drift = rendered["CptPolicyDrift"], source["CptPolicyDrift"]
    assert file_drift["expr"].endswith("> 1") and drift["expr"] == file_drift["expr"][:-1] + "0.25"
    assert {k: v for k, v in drift.items() if k != "expr"} == {k: v for k, v in file_drift.items() if k != "expr"}
    assert {k: v for k, v in rendered.items() if k != "CptPolicyDrift"} == {
        k: v for k, v in source.items() if k != "CptPolicyDrift"}
