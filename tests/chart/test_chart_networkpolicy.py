"""Only learner pods reach the rollout (vLLM) servers, whose routes accept weight updates."""

from __future__ import annotations

import pytest
from chart_common import FULL_VALUES, NAMESPACE, by_kind


def _policies(render, values):
    return {p["metadata"]["namespace"]: p for p in by_kind(render(values), "NetworkPolicy")}


@pytest.mark.parametrize("values, namespaces", [
    ({}, [NAMESPACE]),                                            # cluster-wide: the release namespace
    ({"watchNamespaces": ["a", "b"]}, ["a", "b"]),                # namespaced: every watched namespace
    ({"watchNamespaces": ["a"], "networkPolicy": {"namespaces": ["c"]}}, ["c"]),  # explicit list wins
    ({"networkPolicy": {"enabled": False}}, []),
])
def test_policy_lands_where_runs_live(render, values, namespaces):
    assert sorted(_policies(render, values)) == namespaces


def test_only_learner_pods_may_reach_rollout_pods(render):
    (policy,) = _policies(render, {}).values()
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/component": "rollout"}}
    (rule,) = spec["ingress"]
    # A bare podSelector (no namespaceSelector, no ipBlock) admits only pods of the policy's own namespace.
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/component": "learner"}}}]
    assert "ports" not in rule  # all ports: NCCL opens ephemeral ones besides the HTTP route


def test_ports_and_extra_peers_are_configurable(render):
    policy = _policies(render, FULL_VALUES)["research"]
    learner, extra = policy["spec"]["ingress"]
    assert {p["port"] for p in learner["ports"]} == {8000, 51216, 30000}
    assert extra["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}


def test_selectors_match_the_pods_the_operator_creates(render):
    """The policy is useless if its selectors miss the labels manifests.py puts on rollout and learner pods."""
    manifests = pytest.importorskip("cpt_operator.kube.manifests")
    (policy,) = _policies(render, {}).values()
    rollout_labels = manifests.labels("run", 1, "rollout")
    learner_labels = manifests.labels("run", 1, "learner", "train", 0)
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= rollout_labels.items()
    learner_selector = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert learner_selector.items() <= learner_labels.items()
    assert not learner_selector.items() <= rollout_labels.items(), "rollout pods must not admit each other"
