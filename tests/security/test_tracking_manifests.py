"""Issue 31 item 4 on a cluster: spec.tracking reaches the stage pods the operator renders (both job backends):
the settings in the stage config, the credentials as env from the named Secrets (never a value in a manifest), an
egress rule to each tracking server; the pods still pass Pod Security `restricted`; off by default; a tracking
host is tenant input and internal hosts are refused as storage endpoints are."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml
from chart_common import KUBE_VERSION
from children_common import base_committed, children, example, NOW
from pss import pod_specs, violations

from cpt_core.stage import STAGE_CONFIG_FILE, StageConfig
from cpt_core.validation import SpecError, validate_resource
from cpt_operator.kube.children import render
from cpt_operator.kube.defaults import PlanDefaults
from cpt_operator.planner import Observed, plan

TRACKING = {"mlflow": {"trackingUri": "https://mlflow.example.com:5443/team", "experiment": "seven tasks",
                       "secretRef": "mlflow-credentials"},
            "wandb": {"project": "cpt", "entity": "research", "secretRef": "wandb-key"}}
SECRET_ENV = {"MLFLOW_TRACKING_TOKEN": ("mlflow-credentials", True),
              "MLFLOW_TRACKING_USERNAME": ("mlflow-credentials", True),
              "MLFLOW_TRACKING_PASSWORD": ("mlflow-credentials", True), "WANDB_API_KEY": ("wandb-key", None)}


def _tracked(method="rif-grpo"):
    doc = example(method)
    doc["spec"]["tracking"] = TRACKING
    return doc


def _learner_envs(objects):
    """(where, env) of every learner container: PyTorchJob pod templates and TrainJob trainers."""
    out = []
    for obj in objects:
        if obj["kind"] == "PyTorchJob":
            out += [(f"{obj['metadata']['name']}:{w}", s["containers"][0]["env"]) for w, s, _ in pod_specs(obj)]
        elif obj["kind"] == "TrainJob":
            out.append((obj["metadata"]["name"], obj["spec"]["trainer"]["env"]))
    return out


def _trainjob_children(resource):
    defaults = PlanDefaults(job_backend="trainjob")
    p = plan(resource, Observed(now=NOW, committed=base_committed(resource)))
    return render(p, resource, (), defaults).create


@pytest.mark.parametrize("method", ["sft", "rif-grpo"])
def test_stage_pods_get_the_tracking_secrets_as_env_and_stay_restricted(method):
    objects = children(_tracked(method))
    envs = _learner_envs(objects) + _learner_envs(_trainjob_children(_tracked(method)))
    assert any(w.startswith("seven-tasks-0-evaluate") for w, _ in envs)
    assert any(":" not in w for w, _ in envs), "a TrainJob is among them"
    for where, env in envs:
        by_name = {e["name"]: e for e in env}
        for name, (secret, optional) in SECRET_ENV.items():
            ref = by_name[name]["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"], ref.get("optional")) == (secret, name, optional), where
            assert "value" not in by_name[name]
    for obj in objects:
        for where, spec, _ in pod_specs(obj):
            assert violations(spec) == [], (obj["metadata"]["name"], where)
            kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
                                          "spec": spec}, KUBE_VERSION, strict=True)
    rollout = [s for o in objects if o["kind"] == "Deployment" for _, s, _ in pod_specs(o)]
    for spec in rollout:  # the rollout servers report nothing: no tracking credentials there
        assert not {e["name"] for e in spec["containers"][0]["env"]} & set(SECRET_ENV)


def test_the_stage_config_carries_the_tracking_settings_the_stage_reads():
    configmaps = [o for o in children(_tracked()) if o["kind"] == "ConfigMap"]
    assert configmaps
    for cm in configmaps:
        cfg = StageConfig.model_validate(yaml.safe_load(cm["data"][STAGE_CONFIG_FILE]))
        assert cfg.spec.tracking.wire() == TRACKING


def test_egress_to_each_tracking_server_and_nothing_more_without_tracking():
    policy = next(o for o in children(_tracked()) if o["kind"] == "NetworkPolicy")
    egress = policy["spec"]["egress"]
    assert {"ports": [{"port": 5443, "protocol": "TCP"}]} in egress  # MLflow: its port, any address (a name)
    assert {"ports": [{"port": 443, "protocol": "TCP"}]} in egress  # W&B's cloud (and S3's port here)
    plain = next(o for o in children(example()) if o["kind"] == "NetworkPolicy")["spec"]["egress"]
    assert len(plain) == 3 and len(egress) == 4  # peers, DNS, storage (+ MLflow; W&B's 443 is storage's rule)
    literal = _tracked()
    literal["spec"]["tracking"] = {"mlflow": {"trackingUri": "http://93.184.215.14:5000"}}
    rule = next(o for o in children(literal) if o["kind"] == "NetworkPolicy")["spec"]["egress"][-1]
    assert rule == {"ports": [{"port": 5000, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": "93.184.215.14/32"}}]}


def test_off_by_default_no_tracking_env_in_any_pod():
    for _, env in _learner_envs(children(example())):
        assert not {e["name"] for e in env} & set(SECRET_ENV)
    cm = next(o for o in children(example()) if o["kind"] == "ConfigMap")
    assert "tracking" not in yaml.safe_load(cm["data"][STAGE_CONFIG_FILE])["spec"]


@pytest.mark.parametrize("tracking, message", [
    ({"mlflow": {"trackingUri": "http://mlflow.mlflow.svc:5000"}},
     "spec.tracking.mlflow.trackingUri: 'mlflow.mlflow.svc' is a cluster- or site-internal name"),
    ({"mlflow": {"trackingUri": "http://169.254.169.254/latest"}},
     "spec.tracking.mlflow.trackingUri: '169.254.169.254' is a link-local address"),
    ({"wandb": {"project": "p", "baseUrl": "http://localhost:8080"}},
     "spec.tracking.wandb.baseUrl: 'localhost' is a loopback name"),
    ({"mlflow": {"trackingUri": "file:///var/mlruns"}}, "spec.tracking.mlflow.trackingUri: a file store"),
    ({}, "spec.tracking: name a backend"),
])
def test_internal_tracking_hosts_and_file_stores_are_refused_on_a_cluster(tracking, message):
    doc = example()
    doc["spec"]["tracking"] = tracking
    with pytest.raises(SpecError) as err:
        validate_resource(doc, "cluster")
    assert any(p.startswith(message) for p in err.value.problems), err.value.problems


def test_an_admin_allowed_internal_tracking_server_passes():
    from cpt_core.tenancy import TenantPolicy

    doc = example()
    doc["spec"]["tracking"] = {"mlflow": {"trackingUri": "http://mlflow.mlflow.svc:5000"}}
    validate_resource(doc, "cluster", TenantPolicy(internal_endpoints=(".svc",)))
