"""The operator's settings are declared once (kube/settings_table.py): the docs table is generated from it and the
dataclass defaults are its defaults. A drift in either fails here (issue 30 item 2)."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from cpt_operator.cli import main as cpt
from cpt_operator.kube import settings_table
from cpt_operator.kube.defaults import PlanDefaults
from cpt_operator.kube.settings import Settings, SettingsError

REPO = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"<!-- settings-table:[^\n]*-->\n(.*?)<!-- /settings-table -->", re.S)


def test_docs_table_is_the_generated_one(capsys):
    """docs/operator.md embeds `cpt settings --markdown` unchanged; regenerate it after editing the table."""
    (committed,) = BLOCK.findall((REPO / "docs" / "operator.md").read_text())
    assert cpt(["settings", "--markdown"]) == 0
    assert committed == capsys.readouterr().out == settings_table.markdown(), \
        "docs/operator.md's settings table differs from `cpt settings --markdown`: paste its output there"


def test_every_field_has_one_row_and_the_dataclass_defaults_are_the_rows():
    rows = {s.field for s in settings_table.TABLE if s.field}
    declared = {f.name for f in fields(Settings) if f.name != "plan_defaults"}
    declared |= {f"plan_defaults.{f.name}" for f in fields(PlanDefaults) if f.name != "child_key"}
    assert rows == declared
    plain, parsed = Settings(), Settings.from_env({"CPT_CHILD_KEY": "k" * 40})
    for field in rows:
        obj_a, obj_b, name = (plain.plan_defaults, parsed.plan_defaults, field.split(".")[1]) \
            if "." in field else (plain, parsed, field)
        assert getattr(obj_a, name) == getattr(obj_b, name) == settings_table.default_value(field), field


def test_each_row_parses_its_default_and_refuses_nonsense_by_name():
    for row in settings_table.TABLE:
        row.parse(row.env, row.default)
    for name, bad in [("CPT_ROLLOUT_PORT", "0"), ("CPT_METRICS_PORT", "70000"), ("CPT_JOB_BACKEND", "argo"),
                      ("CPT_STORAGE_CIDRS", "10.0.0.0/33"), ("CPT_WATCH_TIMEOUT", "0.5"),
                      ("CPT_STORAGE_PREFIX_WITHOUT_SECRET", "s3://{team}/"), ("CPT_NETWORK_POLICIES", "sure")]:
        with pytest.raises(SettingsError, match=name):
            Settings.from_env({name: bad, "CPT_CHILD_KEY": "k" * 40})
