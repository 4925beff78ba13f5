"""The chart's defaults are the operator's defaults (kube/settings_table.py, one row per variable): rendered with
its default values, every CPT_* variable the chart passes parses to the row's default, unless the row says why the
chart differs on purpose (`chart_default`, shown in the docs table). A changed values.yaml default, or a changed
row default the chart did not follow, fails here (issue 30 item 2)."""

from __future__ import annotations

import pytest
import yaml
from chart_common import CHART_DIR, one

from cpt_operator.kube.settings_table import TABLE

PASSED = [row for row in TABLE if row.chart]


def _env(render) -> dict:
    (container,) = one(render(), "Deployment")["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize("row", PASSED, ids=[row.env for row in PASSED])
def test_chart_default_is_the_settings_default(render, row):
    rendered = _env(render)[row.env]
    default = row.parse(row.env, row.default)
    if row.chart_default:  # differs on purpose; a note that no longer holds is stale and fails too
        assert not isinstance(rendered, str) or row.parse(row.env, rendered.strip()) != default, \
            f"{row.env}: the chart's default is the operator's now; drop chart_default from its row"
    else:
        assert isinstance(rendered, str), f"{row.env} is not a plain value in the chart"
        assert row.parse(row.env, rendered.strip()) == default, \
            f"values.yaml `{row.chart}` renders {row.env}={rendered!r}, the operator's default is {row.default!r}"


def test_each_rows_chart_value_exists_and_feeds_the_template():
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    templates = "".join(p.read_text() for p in (CHART_DIR / "templates").iterdir() if p.is_file())
    for row in PASSED:
        node = values
        for key in row.chart.split("."):
            assert isinstance(node, dict) and key in node, f"{row.env}: values.yaml has no `{row.chart}`"
            node = node[key]
        assert f".Values.{row.chart}" in templates, f"{row.env}: no template reads .Values.{row.chart}"


def test_variables_the_chart_sets_are_the_rows_with_a_chart_value(render):
    set_by_chart = {name for name in _env(render) if name.startswith("CPT_")}
    assert set_by_chart == {row.env for row in PASSED}
