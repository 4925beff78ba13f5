"""A whole run through the operator: task after task, until the accuracy matrix is in status."""

from __future__ import annotations

import re

import pytest
from operator_harness import JOB_KIND, accuracy, cpt_body, new_bucket, run_to_end, wait_for


def test_three_tasks_end_to_end(world, operator):
    body = cpt_body("vl", world.endpoint, new_bucket(world.endpoint), tasks=3, method="rif-grpo",
                    learner={"replicas": 3, "gpusPerReplica": 2},
                    grpo={"promptsPerStep": 6, "groupSize": 8})  # 48 completions per step over 6 ranks
    world.create(body)

    # Task 0 first: the base model is evaluated (row 0 of the matrix) before anything is trained.
    job = wait_for(lambda: world.jobs("vl"), what="the base evaluation job")[0]
    assert job["metadata"]["name"] == "vl-0-evaluate"
    resource = world.get("vl")
    assert job["metadata"]["ownerReferences"][0]["uid"] == resource["metadata"]["uid"]
    world.play_trainer("vl")

    # Task 1 begins with the RIF filter; its job has the shape its controller expects (3 nodes of 2 GPUs).
    job = wait_for(lambda: [j for j in world.jobs("vl") if j["metadata"]["name"] == "vl-1-filter"], what="filter")[0]
    if JOB_KIND == "PyTorchJob":  # the Kubeflow training operator: Master + Workers, container `pytorch`
        replicas = job["spec"]["pytorchReplicaSpecs"]
        assert set(replicas) == {"Master", "Worker"}
        assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 2
        container = replicas["Master"]["template"]["spec"]["containers"][0]
        assert container["name"] == "pytorch"
    else:  # Kubeflow Trainer v2: numNodes x numProcPerNode on the operator's runtime
        trainer = job["spec"]["trainer"]
        assert trainer["numNodes"] == 3 and trainer["numProcPerNode"] == 2
        container = {"env": trainer["env"], "resources": trainer["resourcesPerNode"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert "CPT_WEIGHT_SYNC_PORT" in env  # it generates with rollout servers (URL and storage: stage config)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    labels = job["metadata"]["labels"]
    assert labels["cpt.dev/stage"] == "filter" and labels["cpt.dev/task-index"] == "1"
    assert labels["app.kubernetes.io/managed-by"] == "cpt-operator"
    children = world.children("vl")
    assert {("Deployment", "vl-1-rollout"), ("Service", "vl-1-rollout")} <= children
    # The stage ConfigMap's name ends in a suffix only the operator's key gives (nobody can take it first).
    assert [n for k, n in children if k == "ConfigMap" and re.fullmatch(r"vl-1-filter-[0-9a-f]{10}", n)]

    status = run_to_end(world, "vl", timeout=60)
    assert status["phase"] == "Succeeded", status
    assert status["completedTasks"] == 3 and status["progress"] == "3/3"
    assert status["accuracy"]["tasks"] == ["t1", "t2", "t3"]
    expected = [[accuracy(row, j) for j in (1, 2, 3)] for row in range(0, 4)]
    assert status["accuracy"]["matrix"] == expected
    assert status["tasks"][1]["filteredFraction"] == pytest.approx(0.4)
    assert status["backwardTransfer"] < 0 and status["averageAccuracy"] > 0
    cond = {c["type"]: c for c in status["conditions"]}
    assert all(c["observedGeneration"] == 1 for c in status["conditions"]), status["conditions"]
    assert cond  # metav1.Condition shape: type, status, reason, message, lastTransitionTime
    for c in status["conditions"]:
        assert {"type", "status", "reason", "lastTransitionTime"} <= set(c)

    # One job per stage, in order; rollout servers of finished tasks are gone.
    names = [j["metadata"]["name"] for j in world.jobs("vl")]
    assert sorted(names) == sorted(["vl-0-evaluate"] + [f"vl-{i}-{s}" for i in (1, 2, 3)
                                                          for s in ("filter", "train", "evaluate")])
    wait_for(lambda: not {k for k in world.children("vl") if k[0] in ("Deployment", "Service")},
             what="rollout servers removed")
    reasons = [e["reason"] for e in world.events_with("vl", "StageStarted", "TaskCommitted", "Succeeded")]
    assert "StageStarted" in reasons and "TaskCommitted" in reasons and "Succeeded" in reasons
    # Every pass published the run to the Prometheus exporter and counted itself.
    from prometheus_client import generate_latest

    from cpt_operator import metrics

    exported = generate_latest(metrics.REGISTRY).decode()
    assert 'cpt="vl"' in exported and "cpt_operator_reconcile" in exported
    # kopf kept its bookkeeping out of the strict status.
    assert set(world.status("vl")) <= {f for f in _status_fields()}


def _status_fields() -> set[str]:
    from cpt_core import api

    return {field.alias or name for name, field in api.CptStatus.model_fields.items()}


def test_vllm_evaluation_serves_the_base_row_and_removes_every_server(world, operator):
    """evaluation.engine vllm: an SFT run gets rollout servers for the base model's evaluation (task 0) and for
    every task, the stage jobs are told where they are, and none is left once the run has succeeded."""
    body = cpt_body("ve", world.endpoint, new_bucket(world.endpoint), tasks=2, method="sft",
                    evaluation={"engine": "vllm"})
    world.create(body)
    job = wait_for(lambda: world.jobs("ve"), what="the base evaluation job")[0]
    assert job["metadata"]["name"] == "ve-0-evaluate"
    assert {("Deployment", "ve-0-rollout"), ("Service", "ve-0-rollout")} <= world.children("ve")
    seen = set()

    def servers() -> None:
        seen.update(name for kind, name in world.children("ve") if kind == "Deployment")

    status = run_to_end(world, "ve", timeout=60, step=servers)
    assert status["phase"] == "Succeeded", status
    assert {"ve-1-rollout", "ve-2-rollout"} <= seen, seen
    wait_for(lambda: not {k for k in world.children("ve") if k[0] in ("Deployment", "Service")},
             what="rollout servers removed, the base model's included")
