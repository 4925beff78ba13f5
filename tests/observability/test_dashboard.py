"""The Grafana dashboard: committed JSON is the builder's output, survives the SDK's typed round trip, every query
is valid PromQL (promtool) and selects only metrics the exporter really serves."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard

from obs_common import DASHBOARD, OBSERVABILITY, exported_sample_names, metric_names

KNOWN_TRANSFORMS = {"merge", "organize", "sortBy", "convertFieldType", "groupingToMatrix"}


@pytest.fixture(scope="module")
def board() -> dict:
    return json.loads(DASHBOARD.read_text())


def _builder():
    spec = importlib.util.spec_from_file_location("cpt_dashboard_builder", OBSERVABILITY / "dashboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _panels(board: dict) -> list[dict]:
    return [p for p in board["panels"] if p["type"] != "row"]


def _queries(board: dict) -> list[str]:
    exprs = [t["expr"] for p in _panels(board) for t in p.get("targets") or []]
    for var in board["templating"]["list"]:
        if var["type"] == "query":  # label_values(<selector>, <label>) -> the selector is PromQL
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", var["query"]["query"])
            assert inner, var["query"]
            exprs.append(inner.group(1))
    return exprs


def _concrete(expr: str) -> str:
    """Grafana variables -> values promtool can parse (a multi-value `=~` var becomes a regex)."""
    return (expr.replace("$__rate_interval", "5m").replace('=~"$namespace"', '=~"ns-a|ns-b"')
            .replace('=~"$cpt"', '=~"run-a|run-b"').replace('"$cpt"', '"run-a"'))


def _subset(original, back, path="$"):
    """Every key and value of the original is in the round-tripped model (which may add defaults)."""
    if isinstance(original, dict):
        assert isinstance(back, dict), path
        for key, value in original.items():
            assert key in back, f"{path}.{key}: dropped by the SDK (unknown key or typo)"
            _subset(value, back[key], f"{path}.{key}")
    elif isinstance(original, list):
        assert isinstance(back, list) and len(back) == len(original), path
        for i, (a, b) in enumerate(zip(original, back)):
            _subset(a, b, f"{path}[{i}]")
    else:
        assert original == back, f"{path}: {original!r} became {back!r}"


def test_committed_json_is_the_builder_output(board):
    assert board == json.loads(_builder().render()), "stale: run .venv/bin/python observability/dashboard.py"


def test_sdk_round_trip_keeps_every_key(board):
    register_default_plugins()
    back = json.loads(JSONEncoder().encode(Dashboard.from_json(board)))
    _subset(board, back)


def test_round_trip_catches_a_typo(board):
    register_default_plugins()
    broken = json.loads(json.dumps(board))
    broken["panels"][1]["options"]["textMdoe"] = "name"
    back = json.loads(JSONEncoder().encode(Dashboard.from_json(broken)))
    with pytest.raises(AssertionError, match="textMdoe"):
        _subset(broken, back)


def test_every_query_is_valid_promql(board, promtool, tmp_path):
    exprs = [_concrete(e) for e in _queries(board)]
    assert not [e for e in exprs if "$" in e], "a Grafana variable is left unsubstituted"
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query_{i}", "expr": e}
                                                          for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in proc.stdout


def test_queries_select_only_exported_metrics(board):
    exported = exported_sample_names()
    for expr in _queries(board):
        used = metric_names(expr)
        assert used, expr
        assert used <= exported, (expr, used - exported)


def test_every_per_run_metric_family_is_on_the_dashboard(board):
    """Nothing the exporter computes is invisible (info metrics and the task index are for joins and docs)."""
    from cpt_operator.metrics import FAMILIES

    used = set().union(*(metric_names(e) for e in _queries(board)))
    missing = set(FAMILIES) - used - {"cpt_task_index"}
    assert not missing, missing


def test_variables_and_required_views(board):
    names = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "namespace", "cpt"} <= names
    panels = _panels(board)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    heatmaps = [p for p in panels if any(t["id"] == "groupingToMatrix" for t in p.get("transformations") or [])
                and p["type"] == "table"]
    assert any("cpt_task_accuracy{" in p["targets"][0]["expr"] and p.get("repeat") == "cpt" for p in heatmaps)
    assert any(p["type"] == "state-timeline" and "cpt_task_active_stage" in p["targets"][0]["expr"] for p in panels)
    exprs = " ".join(_queries(board))
    for metric in ("cpt_average_accuracy", "cpt_backward_transfer", "cpt_forgetting", "cpt_general_score",
                   "cpt_rif_filtered_fraction", "cpt_stage_started_timestamp_seconds"):
        assert metric in exprs, metric
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        for t in p.get("transformations") or []:
            assert t["id"] in KNOWN_TRANSFORMS, (p["title"], t["id"])
