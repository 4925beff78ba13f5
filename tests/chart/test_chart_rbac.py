"""RBAC is exactly operator/cpt_operator/permissions.py: every verb the operator uses, nothing more, no wildcards."""

from __future__ import annotations

import pytest
from chart_common import NAMESPACE, by_kind, one

from cpt_operator.kube.permissions import REQUIRED_RULES

# Resources that exist outside namespaces: a Role cannot grant them.
CLUSTER_SCOPED = {("apiextensions.k8s.io", "customresourcedefinitions"), ("", "namespaces")}
READ_VERBS = {"get", "list", "watch"}


def required() -> set[tuple[str, str, str]]:
    return {(g, r, v) for g, r, verbs in REQUIRED_RULES for v in verbs}


def granted(rules: list[dict]) -> set[tuple[str, str, str]]:
    out = set()
    for rule in rules:
        assert not rule.get("nonResourceURLs"), rule
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                for v in rule["verbs"]:
                    out.add((g, r, v))
    return out


def assert_no_wildcards(rules: list[dict]) -> None:
    for rule in rules:
        for key in ("apiGroups", "resources", "verbs"):
            assert all("*" not in item for item in rule[key]), f"wildcard in {key}: {rule}"
        assert "resourceNames" not in rule or rule["resourceNames"], rule


def test_cluster_wide_role_is_exactly_the_required_rules(render):
    objects = render()
    role = one(objects, "ClusterRole")
    assert_no_wildcards(role["rules"])
    assert granted(role["rules"]) == required()
    assert not by_kind(objects, "Role") and not by_kind(objects, "RoleBinding")
    binding = one(objects, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": role["metadata"]["name"]}
    sa = one(objects, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": NAMESPACE}]
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


def test_namespaced_mode_grants_namespaced_rules_only_in_watched_namespaces(render):
    watched = ["team-a", "team-b"]
    objects = render({"watchNamespaces": watched})
    roles = by_kind(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == watched
    namespaced_required = {t for t in required() if (t[0], t[1]) not in CLUSTER_SCOPED}
    for role in roles:
        assert_no_wildcards(role["rules"])
        assert granted(role["rules"]) == namespaced_required
    # The only cluster-wide grant left: read access to the two cluster-scoped kinds kopf reads.
    cluster = one(objects, "ClusterRole")
    assert_no_wildcards(cluster["rules"])
    cluster_grants = granted(cluster["rules"])
    assert {(g, r) for g, r, _ in cluster_grants} <= CLUSTER_SCOPED
    assert {v for _, _, v in cluster_grants} <= READ_VERBS
    # Together they cover everything the operator uses, in each watched namespace.
    assert cluster_grants | namespaced_required == required()
    bindings = by_kind(objects, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == watched
    for b in bindings:
        assert b["roleRef"]["kind"] == "Role"
        assert b["subjects"][0]["namespace"] == NAMESPACE


def test_required_rules_are_well_formed():
    """The list the chart mirrors has no duplicates or wildcards itself."""
    keys = [(g, r) for g, r, _ in REQUIRED_RULES]
    assert len(keys) == len(set(keys))
    for g, r, verbs in REQUIRED_RULES:
        assert "*" not in (g + r) and "*" not in verbs and verbs


@pytest.mark.parametrize("values", [{"rbac": {"create": False}}])
def test_rbac_can_be_left_to_the_cluster_admin(render, values):
    kinds = {o["kind"] for o in render(values)}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
