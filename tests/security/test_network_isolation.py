"""Issue 15 item 3: each run gets its own NetworkPolicy (its pods reach only each other, DNS and storage) and
a rollout key Secret that the operator creates; nothing else can reach the rollout servers' routes."""

from __future__ import annotations

import kubernetes_validate
import pytest
from chart_common import KUBE_VERSION
from children_common import METHODS, NOW, base_committed, children, example
from pss import pod_specs

from cpt_operator.kube import manifests
from cpt_operator.kube.children import render
from cpt_operator.kube.defaults import PlanDefaults
from cpt_operator.planner import Observed, plan


def selects(selector: dict, labels: dict) -> bool:
    """matchLabels / matchExpressions (In, NotIn, Exists, DoesNotExist) as the API server evaluates them."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        ok = {"In": labels.get(key) in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def _pod_labels(objects):
    for obj in objects:
        for kind in ("PyTorchJob", "Deployment"):
            if obj["kind"] == kind:
                templates = ([r["template"] for r in obj["spec"]["pytorchReplicaSpecs"].values()]
                             if kind == "PyTorchJob" else [obj["spec"]["template"]])
                for t in templates:
                    yield obj, t["metadata"]["labels"]


def _policy(objects):
    (policy,) = [o for o in objects if o["kind"] == "NetworkPolicy"]
    return policy


@pytest.mark.parametrize("method", METHODS)
def test_every_pod_of_the_run_is_isolated_by_its_policy(method):
    objects = children(example(method))
    policy = _policy(objects)
    kubernetes_validate.validate(policy, KUBE_VERSION, strict=True)
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    for obj, labels in _pod_labels(objects):
        assert selects(spec["podSelector"], labels), obj["metadata"]["name"]
    (ingress,) = spec["ingress"]
    assert "ports" not in ingress  # all ports, but only these peers (NCCL/gloo open ephemeral ports)
    (peer,) = ingress["from"]
    assert set(peer) == {"podSelector"}  # no namespaceSelector / ipBlock: same namespace, selected pods only
    for obj, labels in _pod_labels(objects):
        assert selects(peer["podSelector"], labels)


def test_peers_are_selected_by_run_uid_not_by_a_role_label():
    policy = _policy(children(example("grpo")))
    peer = policy["spec"]["ingress"][0]["from"][0]["podSelector"]
    learner = manifests.pod_labels(example("grpo"), manifests.labels("seven-tasks", 1, "learner", "train", 0))
    assert selects(peer, learner)
    # A pod that merely calls itself a learner (the old chart policy's rule) is not admitted...
    assert not selects(peer, {manifests.LABEL_COMPONENT: "learner"})
    # ...nor a pod of a deleted-and-recreated run with the same name (another uid)...
    assert not selects(peer, {**learner, manifests.LABEL_RUN_UID: "uid-other"})
    # ...nor a pod of another run in the same namespace.
    other = children(example("grpo", name="other"))
    for _, labels in _pod_labels(other):
        assert not selects(peer, labels)


def test_egress_is_each_other_dns_and_the_storage_port(monkeypatch):
    monkeypatch.setenv("CPT_ALLOWED_INTERNAL_ENDPOINTS", ".svc")  # an in-cluster MinIO, as the admin allows
    resource = example("grpo")
    resource["spec"]["storage"]["endpoint"] = "http://minio.storage.svc:9000"
    egress = _policy(children(resource))["spec"]["egress"]
    peers, dns, storage = egress
    assert peers == {"to": [{"podSelector": _policy(children(resource))["spec"]["podSelector"]}]}
    assert sorted((p["port"], p["protocol"]) for p in dns["ports"]) == [(53, "TCP"), (53, "UDP")]
    assert storage["ports"] == [{"port": 9000, "protocol": "TCP"}]
    assert "to" not in storage  # a host name and no CIDRs from the admin: the port, at any address
    resource["spec"]["storage"].pop("endpoint")
    assert _policy(children(resource))["spec"]["egress"][2]["ports"] == [{"port": 443, "protocol": "TCP"}]


def test_storage_egress_is_limited_to_the_endpoints_address_where_known(monkeypatch):
    """Issue 26: the storage rule names addresses where they are known: the endpoint's own IP when it is written
    as one, else the admin's CIDRs (chart networkPolicy.storageCIDRs); never the port open to every address then."""
    monkeypatch.setenv("CPT_ALLOWED_INTERNAL_ENDPOINTS", "10.0.0.0/8,fd00::/8,.svc")
    resource = example("grpo")
    for endpoint, cidr in (("http://10.1.2.3:9000", "10.1.2.3/32"), ("http://[fd00::7]:9000", "fd00::7/128"),
                           ("https://52.216.8.1", "52.216.8.1/32")):
        resource["spec"]["storage"]["endpoint"] = endpoint
        storage = _policy(children(resource))["spec"]["egress"][2]
        assert storage["to"] == [{"ipBlock": {"cidr": cidr}}], endpoint
        kubernetes_validate.validate(_policy(children(resource)), KUBE_VERSION, strict=True)
    cidrs = PlanDefaults(storage_cidrs=("10.20.0.0/16", "192.168.5.0/24"))
    resource["spec"]["storage"]["endpoint"] = "http://minio.storage.svc:9000"
    storage = _policy(children(resource, cidrs))["spec"]["egress"][2]
    assert storage == {"ports": [{"port": 9000, "protocol": "TCP"}],
                       "to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}, {"ipBlock": {"cidr": "192.168.5.0/24"}}]}
    resource["spec"]["storage"].pop("endpoint")  # AWS S3 through the admin's VPC endpoint range
    assert _policy(children(resource, cidrs))["spec"]["egress"][2]["to"][0] == {"ipBlock": {"cidr": "10.20.0.0/16"}}


def test_the_chart_setting_reaches_the_policy(monkeypatch):
    from cpt_operator.kube.settings import Settings, SettingsError

    parsed = Settings.from_env({"CPT_STORAGE_CIDRS": "10.20.0.0/16, 2001:db8::/32"})
    assert parsed.plan_defaults.storage_cidrs == ("10.20.0.0/16", "2001:db8::/32")
    with pytest.raises(SettingsError, match="CPT_STORAGE_CIDRS: '10.20.0.1/16' is not a CIDR"):
        Settings.from_env({"CPT_STORAGE_CIDRS": "10.20.0.1/16"})


def test_each_run_namespace_gets_a_policy_per_run():
    seen = {}
    for name, namespace in (("a", "research"), ("b", "research"), ("a", "prod-training")):
        policy = _policy(children(example("sft", name=name, namespace=namespace)))
        seen[(namespace, name)] = policy["metadata"]
        assert policy["metadata"]["ownerReferences"][0]["uid"] == f"uid-{name}"
    assert {(m["namespace"], m["name"]) for m in seen.values()} == {
        ("research", "a-pods"), ("research", "b-pods"), ("prod-training", "a-pods")}


def test_policy_and_key_precede_the_pods_and_are_sent_only_with_new_pods():
    resource = example("grpo")
    p = plan(resource, Observed(now=NOW, committed=base_committed(resource)))
    created = render(p, resource, ()).create
    kinds = [o["kind"] for o in created]
    assert kinds[:2] == ["NetworkPolicy", "Secret"] and {"Deployment", "PyTorchJob"} <= set(kinds[2:])
    # Everything already there: nothing new to protect, neither is re-sent.
    present = {(o["kind"], o["metadata"]["name"]) for o in created}
    again = [o["kind"] for o in render(p, resource, present).create]
    assert "NetworkPolicy" not in again and "Secret" not in again
    # Switched off in the chart (networkPolicy.enabled=false): no policy, the key stays.
    off = [o["kind"] for o in render(p, resource, (), PlanDefaults(network_policies=False)).create]
    assert "NetworkPolicy" not in off and "Secret" in off


def test_the_rollout_key_reaches_the_pods_only_by_secret_reference():
    resource = example("grpo")
    objects = children(resource)
    (secret,) = [o for o in objects if o["kind"] == "Secret"]
    kubernetes_validate.validate(secret, KUBE_VERSION, strict=True)
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-seven-tasks"
    for obj in objects:
        for where, spec, _ in pod_specs(obj):
            env = {e["name"]: e for c in spec["containers"] for e in c.get("env", [])}
            is_rollout = obj["kind"] == "Deployment"
            wanted = {"VLLM_API_KEY", "CPT_WEIGHT_SYNC_TOKEN"} if is_rollout else {"CPT_ROLLOUT_API_KEY"}
            if not is_rollout and "CPT_WEIGHT_SYNC_PORT" not in env:
                continue  # a stage without rollout servers (evaluate) needs no key
            for name in wanted:
                assert env[name]["valueFrom"]["secretKeyRef"] == {
                    "name": secret["metadata"]["name"], "key": manifests.ROLLOUT_KEY}, (where, name)


def test_the_key_is_random_and_made_only_at_creation():
    """Plans stay deterministic and print no key (a placeholder); what is POSTed carries a fresh random key,
    never derived from anything a tenant can read."""
    (secret,) = [o for o in children(example("grpo")) if o["kind"] == "Secret"]
    assert secret["stringData"][manifests.ROLLOUT_KEY] == manifests.KEY_PLACEHOLDER
    keys = {manifests.with_key(secret)["stringData"][manifests.ROLLOUT_KEY] for _ in range(2)}
    assert len(keys) == 2 and all(len(k) >= 32 and k != manifests.KEY_PLACEHOLDER for k in keys)
    assert secret["stringData"][manifests.ROLLOUT_KEY] == manifests.KEY_PLACEHOLDER  # not mutated
    other = {"kind": "ConfigMap", "stringData": {"token": manifests.KEY_PLACEHOLDER}}
    assert manifests.with_key(other) is other


def test_no_blockowner_deletion_on_any_child():
    """blockOwnerDeletion needs `update` on continualposttrainings/finalizers, which the operator lacks."""
    for method in METHODS:
        for obj in children(example(method)):
            for ref in obj["metadata"]["ownerReferences"]:
                assert not ref.get("blockOwnerDeletion"), obj["metadata"]["name"]


def test_long_run_names_keep_child_names_valid():
    resource = example("grpo", name="r" * 63)
    for obj in children(resource):
        assert len(obj["metadata"]["name"]) <= 63
        if obj["kind"] != "PyTorchJob":
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
