"""values.schema.json is strict: misspelled keys and wrong types fail before anything is rendered."""

from __future__ import annotations

import json

import pytest
import yaml
from chart_common import CHART_DIR, FULL_VALUES, NAMESPACE, helm

SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())

# Objects whose content is a Kubernetes type (validated by the API server, as cert-manager's schema does).
FREE_FORM = {"global", "affinity", "podSecurityContext", "securityContext", "tolerations[]", "extraEnv[]"}


def _walk(node: dict, path: str = ""):
    yield path, node
    for key, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{key}" if path else key)
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], path + "[]")


def test_every_object_in_the_schema_rejects_unknown_keys():
    loose = []
    for path, node in _walk(SCHEMA):
        if node.get("type") != "object" or path in FREE_FORM:
            continue
        if "properties" in node:
            if node.get("additionalProperties") is not False:
                loose.append(path)
        elif not isinstance(node.get("additionalProperties"), dict):
            loose.append(path)  # a map must at least say what its values are
    assert not loose, f"schema objects that accept any key: {loose}"


def test_values_yaml_and_schema_declare_the_same_keys():
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())

    def keys(v, s, path=""):
        if not isinstance(v, dict) or "properties" not in s:
            return
        assert set(v) <= set(s["properties"]), f"{path}: values.yaml keys missing from the schema"
        missing = set(s["properties"]) - set(v) - {"global"}
        assert not missing, f"{path}: schema keys without a default in values.yaml: {missing}"
        for k in v:
            keys(v[k], s["properties"][k], f"{path}.{k}")

    keys(values, SCHEMA)


@pytest.mark.parametrize("values", [{}, FULL_VALUES], ids=["default", "full"])
def test_good_values_pass(chart, values):
    chart.validate_schema(values)


BAD = {
    "misspelled top-level key": ({"watchNamespace": ["a"]}, "watchNamespace"),
    "misspelled nested key": ({"prometheus": {"serviceMonitor": {"enable": True}}}, "enable"),
    "misspelled image key": ({"image": {"repo": "x"}}, "repo"),
    "port as a string": ({"metrics": {"port": "9090"}}, "port"),
    "port out of range": ({"metrics": {"port": 70000}}, "port"),
    "boolean as a string": ({"networkPolicy": {"enabled": "yes"}}, "enabled"),
    "unknown pull policy": ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
    "namespace not a DNS label": ({"watchNamespaces": ["Team_A"]}, "watchNamespaces"),
    "namespaces not a list": ({"watchNamespaces": "team-a"}, "watchNamespaces"),
    "bad digest": ({"image": {"digest": "latest"}}, "digest"),
    "bad interval": ({"prometheus": {"serviceMonitor": {"interval": "30 seconds"}}}, "interval"),
    "label value not a string": ({"podLabels": {"team": 1}}, "podLabels"),
    "unknown log level": ({"logLevel": "verbose"}, "logLevel"),
    "the removed namespace-wide policy": ({"networkPolicy": {"rolloutSelector": {"x": "y"}}}, "rolloutSelector"),
    "clusterWide as a string": ({"clusterWide": "true"}, "clusterWide"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_values_are_rejected(chart, case):
    values, needle = BAD[case]
    with pytest.raises(helm.HelmValuesError, match=needle):
        chart.validate_schema(values)
    # `helm install` / render refuse them too, before any template runs.
    with pytest.raises(helm.HelmValuesError):
        chart.render(values, name="x", namespace=NAMESPACE)
