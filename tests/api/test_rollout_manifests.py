"""A rollout Deployment on a cluster runs vLLM exactly as `cpt run` and tests/vllm_server do (cpt_core.rollout):
the same flags and plugins, no dev-mode routes, the run's key; every replica reachable through a headless
Service; the learner knows where to host the weight-transfer rendezvous."""

import json
from datetime import datetime, timezone

import pytest
import yaml

from cpt_core import rollout
from cpt_core.results import CommittedTask
from cpt_core.validation import validate_resource
from cpt_operator.kube.children import render
from cpt_operator.local.rollout_server import server_args as local_server_args
from cpt_operator.planner import Observed, plan, task_spec_hash

from planner_golden import GOLDEN_DEFAULTS


def _children(resource):
    resource["spec"]["rollout"] = {"engine": "vllm", "replicas": 2, "gpus": 1, "tensorParallel": 1}
    spec = validate_resource(resource).spec
    base = {0: CommittedTask(0, "base", task_spec_hash(spec, 0), {"tasks": {}})}
    return render(plan(resource, Observed(now=datetime.now(timezone.utc), committed=base)), resource, (),
                  GOLDEN_DEFAULTS).create


def test_rollout_servers_use_the_shared_flags_and_no_dev_mode(resource):
    objects = _children(resource)
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    model = container["args"][0]
    assert model == resource["spec"]["model"]
    shared = rollout.server_args(model, 8000, "nccl", host="0.0.0.0")
    # an s3:// model streams its safetensors straight from S3 (vLLM's runai streamer)
    assert container["args"][1:] == [*shared, "--load-format", "runai_streamer"]
    # what the local executor and the real-server tests start, with this host and backend
    assert local_server_args(model, 8000, backend="nccl", host="0.0.0.0") == [model, *shared]
    env = {e["name"]: e for e in container["env"]}
    assert env["VLLM_PLUGINS"]["value"] == rollout.PLUGINS
    assert "VLLM_SERVER_DEV_MODE" not in env and not any("worker-extension" in a for a in container["args"])
    for name in rollout.KEY_ENV:  # vLLM's --api-key and the weight-sync routes' token: the run's Secret
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "demo-rollout-key-b5b6086993"
    assert deployment["spec"]["replicas"] == 2


def test_every_replica_is_reachable_and_the_learner_hosts_the_rendezvous(resource):
    objects = _children(resource)
    service = next(o for o in objects if o["kind"] == "Service")
    assert service["spec"]["clusterIP"] == "None"  # headless: one DNS name, every ready replica's address
    job = next(o for o in objects if o["kind"] == "PyTorchJob")
    env = {e["name"]: e for e in job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["env"]}
    cm = next(o for o in objects if o["kind"] == "ConfigMap" and "stage.yaml" in o.get("data", {}))
    assert yaml.safe_load(cm["data"]["stage.yaml"])["rollout_url"] == "dns+http://demo-1-rollout.ml.svc:8000"
    assert env["CPT_WEIGHT_SYNC_PORT"]["value"] == str(rollout.WEIGHT_SYNC_PORT)
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["CPT_ROLLOUT_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "demo-rollout-key-b5b6086993"


@pytest.mark.parametrize("learner_gpus, server_gpus, backend", [(4, 1, "nccl"), (0, 1, "gloo")])
def test_one_weight_sync_backend_reaches_both_sides(resource, learner_gpus, server_gpus, backend):
    """Issue 30 item 2: the backend is chosen once (cpt_core.rollout.weight_sync_backend, torch-free) and both ends
    get the answer: the servers' --weight-transfer-config and the learner's CPT_WEIGHT_SYNC_BACKEND."""
    resource["spec"]["learner"] = {**resource["spec"].get("learner", {}), "gpusPerReplica": learner_gpus}
    resource["spec"]["rollout"] = {"engine": "vllm", "replicas": 1, "gpus": server_gpus}
    spec = validate_resource(resource).spec
    base = {0: CommittedTask(0, "base", task_spec_hash(spec, 0), {"tasks": {}})}
    objects = render(plan(resource, Observed(now=datetime.now(timezone.utc), committed=base)), resource, (),
                     GOLDEN_DEFAULTS).create
    server = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    args = server["args"]
    assert json.loads(args[args.index("--weight-transfer-config") + 1]) == {"backend": backend}
    learner = next(o for o in objects if o["kind"] == "PyTorchJob")["spec"]["pytorchReplicaSpecs"]["Master"]
    env = {e["name"]: e.get("value") for e in learner["template"]["spec"]["containers"][0]["env"]}
    assert env[rollout.WEIGHT_SYNC_BACKEND_ENV] == backend


def test_the_rule_is_torch_free_and_an_override_must_be_known():
    assert rollout.weight_sync_backend(True) == "nccl" and rollout.weight_sync_backend(False) == "gloo"
    assert rollout.weight_sync_backend(True, {rollout.WEIGHT_SYNC_BACKEND_ENV: "gloo"}) == "gloo"
    with pytest.raises(ValueError, match=rollout.WEIGHT_SYNC_BACKEND_ENV):
        rollout.weight_sync_backend(False, {rollout.WEIGHT_SYNC_BACKEND_ENV: "mpi"})


def test_cpt_run_hands_its_servers_and_its_stages_the_same_backend(tmp_path, monkeypatch, resource):
    from cpt_operator.local import rollout_server

    monkeypatch.setenv(rollout.WEIGHT_SYNC_BACKEND_ENV, "gloo")
    local = rollout_server.LocalRollout(validate_resource(resource).spec, tmp_path, tmp_path / "logs", log=lambda _: 0)
    assert local.backend == local.client_env()[rollout.WEIGHT_SYNC_BACKEND_ENV] == "gloo"
    servers = rollout_server.RolloutServers("m", tmp_path, replicas=2, token="t", backend=local.backend)
    for server in servers.servers:
        args = rollout_server.server_args(server.model, server.port, backend=server.backend)
        assert json.loads(args[args.index("--weight-transfer-config") + 1]) == {"backend": "gloo"}
