"""RBAC is exactly operator/cpt_operator/permissions.py: every verb the operator uses, nothing more, no wildcards."""

from __future__ import annotations

import pytest
from chart_common import NAMESPACE, by_kind, helm, one

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


CREATE_OR_WRITE = {"create", "update", "patch", "delete", "deletecollection", "escalate", "bind", "impersonate"}


def _cluster_role_grants(objects: list[dict]) -> set[tuple[str, str, str]]:
    return {t for role in by_kind(objects, "ClusterRole") for t in granted(role["rules"])}


def test_default_install_is_namespaced_with_no_cluster_wide_secrets_or_create(render):
    """Issue 15 item 1: the default render grants nothing cluster-wide beyond reading CRDs and namespaces."""
    objects = render()
    cluster = _cluster_role_grants(objects)
    assert cluster, "kopf still needs its read-only discovery ClusterRole"
    assert {(g, r) for g, r, _ in cluster} <= CLUSTER_SCOPED
    assert not {v for _, _, v in cluster} & CREATE_OR_WRITE
    assert not any(r == "secrets" for _, r, _ in cluster)
    (role,) = by_kind(objects, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE  # the release namespace, nothing else
    (binding,) = by_kind(objects, "RoleBinding")
    assert binding["metadata"]["namespace"] == NAMESPACE and binding["roleRef"]["kind"] == "Role"
    env = {e["name"]: e.get("value") for e in one(objects, "Deployment")["spec"]["template"]["spec"]
           ["containers"][0]["env"]}
    assert env["CPT_NAMESPACES"] == NAMESPACE  # the operator watches exactly where it has rights


def test_secrets_are_never_listed_or_watched(render):
    """Secrets by name only (spec.storage.secretRef): a list/watch would hand the operator every Secret."""
    for values in ({}, {"clusterWide": True}, {"watchNamespaces": ["a", "b"]}):
        objects = render(values)
        for role in by_kind(objects, "Role") + by_kind(objects, "ClusterRole"):
            verbs = {v for g, r, v in granted(role["rules"]) if r == "secrets"}
            assert not verbs & {"list", "watch"}, (values, role["kind"], verbs)


def test_cluster_wide_is_an_explicit_opt_in_with_exactly_the_required_rules(render):
    objects = render({"clusterWide": True})
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
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["CPT_NAMESPACES"] == ""  # every namespace


def test_cluster_wide_with_a_namespace_list_is_refused(chart):
    with pytest.raises(helm.HelmRenderError, match="clusterWide"):
        chart.render({"clusterWide": True, "watchNamespaces": ["a"]}, name="x", namespace=NAMESPACE)


@pytest.mark.parametrize("values, watched", [({}, [NAMESPACE]), ({"watchNamespaces": ["team-a", "team-b"]},
                                                                   ["team-a", "team-b"])])
def test_namespaced_mode_grants_namespaced_rules_only_in_watched_namespaces(render, values, watched):
    objects = render(values)
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
