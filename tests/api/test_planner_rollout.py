"""The planner's rollout servers: which tasks get them (GRPO-family generation, and every row when
spec.evaluation.engine is vllm) and which methods never do."""

import json

from cpt_operator.planner import Observed

from planner_golden import NOW, committed, plan


def test_sft_has_no_filter_stage_and_no_rollout_servers(resource):
    resource["spec"]["method"] = "sft"
    base_done = {0: committed(resource, 0, {"add": 0.3})}  # the method is part of what was trained
    p = plan(resource, Observed(now=NOW, committed=base_done))
    assert [f"{o['kind']}/{o['metadata']['name']}" for o in p.create] == [
        "NetworkPolicy/demo-pods", "ConfigMap/demo-1-train-431d7e4675", "PyTorchJob/demo-1-train"]


def test_evaluation_engine_vllm_serves_every_row_even_sft_and_the_base(resource):
    """One engine scores the whole matrix: with evaluation.engine vllm the base model's evaluation (row 0) and
    every task of an SFT run get rollout servers (with the default hf, SFT and row 0 never do)."""
    resource["spec"]["method"] = "sft"
    resource["spec"]["evaluation"] = {"engine": "vllm"}
    p = plan(resource, Observed(now=NOW))
    assert [f"{o['kind']}/{o['metadata']['name']}" for o in p.create] == [
        "NetworkPolicy/demo-pods", "Secret/demo-rollout-key-b5b6086993", "Deployment/demo-0-rollout",
        "Service/demo-0-rollout", "ConfigMap/demo-0-evaluate-40062d75a8", "PyTorchJob/demo-0-evaluate"]
    stage = next(o for o in p.create if o["kind"] == "ConfigMap")
    assert "demo-0-rollout" in json.dumps(stage)  # the evaluate stage is told where its servers are
    done = {0: committed(resource, 0, {"add": 0.3})}
    p = plan(resource, Observed(now=NOW, committed=done),
             children=frozenset({("Deployment", "demo-0-rollout"), ("Service", "demo-0-rollout")}))
    created = [f"{o['kind']}/{o['metadata']['name']}" for o in p.create]
    assert "Deployment/demo-1-rollout" in created and "PyTorchJob/demo-1-train" in created
    assert sorted(f"{d.kind}/{d.name}" for d in p.delete) == ["Deployment/demo-0-rollout",
                                                                "Service/demo-0-rollout"]


def test_self_sft_samples_with_rollout_servers_before_it_trains(resource):
    resource["spec"]["method"] = "self-sft"
    done = {0: committed(resource, 0, {"add": 0.3})}  # the method is part of what was trained
    created = [f"{o['kind']}/{o['metadata']['name']}" for o in plan(resource, Observed(now=NOW, committed=done)).create]
    assert "PyTorchJob/demo-1-filter" in created and "Deployment/demo-1-rollout" in created


def test_rif_grpo_filters_online_by_default_and_first_with_prefilter(resource):
    """rif-grpo without rif.mode filters inside GRPO (api.DEFAULT_RIF_MODE, picked by bench/rif_cost): task 1 starts
    with its train stage and rollout servers; rif.mode prefilter (the paper's method) starts with the filter stage."""
    done = {0: committed(resource, 0, {"add": 0.3})}
    created = [f"{o['kind']}/{o['metadata']['name']}" for o in plan(resource, Observed(now=NOW, committed=done)).create]
    assert "PyTorchJob/demo-1-train" in created and "Deployment/demo-1-rollout" in created
    assert not any(name.endswith("-filter") or "-filter-" in name for name in created), created
    resource["spec"]["rif"] = {"mode": "prefilter"}
    done = {0: committed(resource, 0, {"add": 0.3})}  # the mode is part of what is trained: its own hashes
    created = [f"{o['kind']}/{o['metadata']['name']}" for o in plan(resource, Observed(now=NOW, committed=done)).create]
    assert "PyTorchJob/demo-1-filter" in created and "PyTorchJob/demo-1-train" not in created


def test_a_train_stage_that_resumed_says_at_which_step_in_the_status(resource):
    """A task whose train stage resumed from a step checkpoint (train.json: resumes, resumed_at_step) shows it in
    status.tasks[] ("resumed at step k of n", r times); one that never stopped shows only its steps."""
    done = {0: committed(resource, 0, {"add": 0.3}),
            1: committed(resource, 1, {"add": 0.5}, train={"steps": 40, "resumes": 2, "resumed_at_step": 30}),
            2: committed(resource, 2, {"add": 0.5, "reverse": 0.4}, train={"steps": 40})}
    tasks = plan(resource, Observed(now=NOW, committed=done)).status["tasks"]
    assert {k: tasks[1].get(k) for k in ("learnerSteps", "trainResumes", "resumedAtStep")} == {
        "learnerSteps": 40, "trainResumes": 2, "resumedAtStep": 30}
    assert tasks[2]["learnerSteps"] == 40 and "trainResumes" not in tasks[2] and "resumedAtStep" not in tasks[2]
