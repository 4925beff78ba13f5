"""The chart renders no namespace-wide NetworkPolicy: isolation is per run, created by the operator
(tests/security/test_network_isolation.py). A namespace-wide policy admitting `component: learner` pods would
add to the per-run ones and let any pod that labels itself so reach every run's weight-sync routes."""

from __future__ import annotations

import pytest
from chart_common import FULL_VALUES, by_kind, one

from cpt_operator.kube.settings import Settings


@pytest.mark.parametrize("values", [{}, FULL_VALUES, {"clusterWide": True}], ids=["default", "full", "cluster"])
def test_no_namespace_wide_policy_is_rendered(render, values):
    assert by_kind(render(values), "NetworkPolicy") == []


@pytest.mark.parametrize("enabled", [True, False])
def test_the_switch_reaches_the_operators_settings(render, enabled):
    env = {e["name"]: e.get("value") for e in one(render({"networkPolicy": {"enabled": enabled}}), "Deployment")
           ["spec"]["template"]["spec"]["containers"][0]["env"]}
    parsed = Settings.from_env({k: v for k, v in env.items() if isinstance(v, str)})
    assert parsed.plan_defaults.network_policies is enabled


def test_storage_cidrs_reach_the_operators_settings(render):
    env = {e["name"]: e.get("value") for e in one(render({"networkPolicy": {"storageCIDRs": ["10.20.0.0/16"]}}),
                                                  "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    parsed = Settings.from_env({k: v for k, v in env.items() if isinstance(v, str)})
    assert parsed.plan_defaults.storage_cidrs == ("10.20.0.0/16",)
