"""ServiceMonitor, PrometheusRule and the Grafana dashboard: gated on values, and built from the single-source
files that observability tests (files/prometheus-rules.yaml, files/dashboard.json), not from copies."""

from __future__ import annotations

import json
import shutil

import jsonschema
import pytest
import yaml
from chart_common import CHART_DIR, DASHBOARD_FILE, RULES_FILE, FULL_VALUES, NAMESPACE, by_kind, helm, one


# Everything on that can render now (the source files may still be on their way; see chart_common).
ON = {"prometheus": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": RULES_FILE.exists()}},
      "grafana": {"dashboard": {"enabled": DASHBOARD_FILE.exists()}}}

# The parts of the Prometheus Operator's CRDs (monitoring.coreos.com/v1) that the chart sets, strict.
DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
STRMAP = {"type": "object", "additionalProperties": {"type": "string"}}
RULE = {"type": "object", "additionalProperties": False, "required": ["expr"],
        "properties": {"alert": {"type": "string"}, "record": {"type": "string"},
                       "expr": {"type": ["string", "integer"]}, "for": DURATION, "keep_firing_for": DURATION,
                       "labels": STRMAP, "annotations": STRMAP},
        "oneOf": [{"required": ["alert"]}, {"required": ["record"]}]}
PROMETHEUS_RULE_SPEC = {
    "type": "object", "additionalProperties": False, "required": ["groups"],
    "properties": {"groups": {"type": "array", "minItems": 1, "items": {
        "type": "object", "additionalProperties": False, "required": ["name", "rules"],
        "properties": {"name": {"type": "string", "minLength": 1}, "interval": DURATION,
                       "query_offset": DURATION, "limit": {"type": "integer"}, "labels": STRMAP,
                       "partial_response_strategy": {"type": "string"},
                       "rules": {"type": "array", "items": RULE}}}}}}
SERVICE_MONITOR_SPEC = {
    "type": "object", "additionalProperties": False, "required": ["selector", "endpoints"],
    "properties": {
        "selector": {"type": "object", "additionalProperties": False,
                     "properties": {"matchLabels": STRMAP, "matchExpressions": {"type": "array"}}},
        "namespaceSelector": {"type": "object", "additionalProperties": False,
                              "properties": {"any": {"type": "boolean"},
                                             "matchNames": {"type": "array", "items": {"type": "string"}}}},
        "endpoints": {"type": "array", "minItems": 1, "items": {
            "type": "object", "additionalProperties": False,
            "properties": {"port": {"type": "string"}, "path": {"type": "string"}, "interval": DURATION,
                           "scrapeTimeout": DURATION, "honorLabels": {"type": "boolean"}}}}}}


def _metadata_ok(obj, kind):
    assert obj["apiVersion"] == "monitoring.coreos.com/v1" and obj["kind"] == kind
    assert obj["metadata"]["name"] and obj["metadata"]["namespace"] == NAMESPACE


def test_monitoring_objects_are_off_by_default(render):
    objects = render()
    assert not by_kind(objects, "ServiceMonitor")
    assert not by_kind(objects, "PrometheusRule")
    assert not by_kind(objects, "ConfigMap")


def test_service_monitor_scrapes_the_metrics_service(render):
    objects = render(ON)
    sm = one(objects, "ServiceMonitor")
    _metadata_ok(sm, "ServiceMonitor")
    jsonschema.validate(sm["spec"], SERVICE_MONITOR_SPEC)
    service = one(objects, "Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"


@pytest.mark.parametrize("release, expected", [("monitoring", "monitoring"), ("", None)])
def test_release_label_is_configurable(render, release, expected):
    values = {**ON, "prometheus": {**ON["prometheus"], "release": release}}
    objects = render(values)
    for kind in ("ServiceMonitor", "PrometheusRule")[: 1 + RULES_FILE.exists()]:
        assert one(objects, kind)["metadata"]["labels"].get("release") == expected


def test_service_monitor_needs_the_service(chart):
    with pytest.raises(helm.HelmRenderError, match="metrics.service.enabled"):
        chart.render({**ON, "metrics": {"service": {"enabled": False}}}, name="x", namespace=NAMESPACE)


def test_prometheus_rule_is_the_rules_file(render):
    rule = one(render(ON), "PrometheusRule")
    _metadata_ok(rule, "PrometheusRule")
    jsonschema.validate(rule["spec"], PROMETHEUS_RULE_SPEC)
    assert rule["spec"]["groups"] == yaml.safe_load(RULES_FILE.read_text())["groups"]
    alerts = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert alerts, "the rules file has no alert"


def test_dashboard_configmap_is_the_dashboard_file(render):
    cm = one(render({"grafana": FULL_VALUES["grafana"] | {"dashboard": FULL_VALUES["grafana"]["dashboard"]
                                                         | {"enabled": True}}}), "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "CPT"}
    (name, text) = next(iter(cm["data"].items()))
    assert name.endswith(".json")
    assert text == DASHBOARD_FILE.read_text(), "the ConfigMap must carry the file byte for byte"
    assert json.loads(text) == json.loads(DASHBOARD_FILE.read_text())
    # A ConfigMap holds at most 1 MiB.
    assert len(text.encode()) < 1024 * 1024


@pytest.mark.parametrize("switch, needle", [
    ({"prometheus": {"prometheusRule": {"enabled": True}}}, "prometheus-rules.yaml"),
    ({"grafana": {"dashboard": {"enabled": True}}}, "dashboard.json"),
])
def test_enabled_object_without_its_source_file_fails_loudly(tmp_path, switch, needle):
    """A chart packaged without files/ must not silently ship an empty PrometheusRule or dashboard."""
    copy = tmp_path / "cpt-operator"
    shutil.copytree(CHART_DIR, copy, ignore=shutil.ignore_patterns("files"))
    with helm.Chart.load(str(copy)) as bare:
        bare.render({}, name="x", namespace=NAMESPACE)  # off: renders fine without the files
        with pytest.raises(helm.HelmRenderError, match=needle):
            bare.render(switch, name="x", namespace=NAMESPACE)
