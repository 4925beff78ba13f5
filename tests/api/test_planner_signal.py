"""The planner's status figures beside the phase: tasks that taught nothing (spec.noSignal), and each task's
policy KL and replayed prompts."""

import pytest
from planner_golden import NOW, base_committed, check_golden, committed, plan, three_stage

from cpt_operator.planner import Observed


@pytest.fixture
def resource(resource):
    return three_stage(resource)


@pytest.fixture
def base_done(resource):
    return base_committed(resource)


def test_task_without_training_signal_fails_by_default_or_is_skipped_on_request(resource, base_done):
    why = "RIF dropped all 64 training prompts (none solved 1+ times in 8 rollouts)"
    done = dict(base_done)
    done[1] = committed(resource, 1, {"add": 0.3}, rif={"kept": 0, "dropped": 64, "filtered_fraction": 1.0},
                        train={"steps": 0, "no_signal": why})
    p = plan(resource, Observed(now=NOW, committed=done))
    got = check_golden("13-no-signal-failed", p)
    assert p.status["phase"] == "Failed" and not [c for c in got["create"] if c.startswith("PyTorchJob")]
    cond = {c["type"]: c for c in p.status["conditions"]}
    assert cond["NoTrainingSignal"]["status"] == "True" and why in cond["NoTrainingSignal"]["message"]
    assert cond["Failed"]["reason"] == "NoTrainingSignal" and "spec.noSignal: skip" in cond["Failed"]["message"]
    assert ["Warning", "NoTrainingSignal"] in [[e.type, e.reason] for e in p.events]

    resource["status"] = p.status  # the same observation again: no second event
    assert not [e for e in plan(resource, Observed(now=NOW, committed=done)).events if e.reason == "NoTrainingSignal"]

    resource["spec"]["noSignal"] = "skip"
    p = plan(resource, Observed(now=NOW, committed=done))
    assert p.status["phase"] == "Running" and "PyTorchJob/demo-2-filter" in [
        f"{o['kind']}/{o['metadata']['name']}" for o in p.create]
    cond = {c["type"]: c for c in p.status["conditions"]}
    assert cond["NoTrainingSignal"]["status"] == "True" and "went on" in cond["NoTrainingSignal"]["message"]

    resource["spec"]["noSignal"] = "fail"  # the last task without signal: never a silent Succeeded
    done[1] = committed(resource, 1, {"add": 0.3}, train={"steps": 4})
    done[2] = committed(resource, 2, {"add": 0.3}, train={"steps": 4})
    done[3] = committed(resource, 3, {"add": 0.3}, train={"steps": 4, "no_signal": "every group got equal rewards"})
    p = plan(resource, Observed(now=NOW, committed=done))
    assert p.status["phase"] == "Failed" and "task 3 'sort' taught nothing" in p.status["message"]


def test_tasks_with_signal_have_no_no_signal_condition(resource, base_done):
    p = plan(resource, Observed(now=NOW, committed=base_done))
    assert "NoTrainingSignal" not in {c["type"] for c in p.status["conditions"]}


def test_status_carries_each_tasks_policy_kl_and_replayed_prompts(resource, base_done):
    """The KL early warning (train.json policy_kl, per reference) and replay's count reach status.tasks[]; a task
    trained before the base reference existed (top-level last/max of task_start) still shows its task-start KL."""
    done = dict(base_done)
    done[1] = committed(resource, 1, {"add": 0.8}, train={"policy_kl": {"reference": "task_start", "estimator": "k3",
                                                                         "points": [[2, 0.1]], "last": 0.1, "max": 0.1}})
    done[2] = committed(resource, 2, {"add": 0.7, "reverse": 0.6}, train={
        "policy_kl": {"estimator": "k3", "prompts": 8, "base": {"points": [[2, 0.3], [4, 0.2]], "last": 0.2, "max": 0.3},
                      "task_start": {"points": [[2, 0.05], [4, 0.07]], "last": 0.07, "max": 0.07}},
        "replay": {"replayed_prompts": 12, "by_task": {"add": 12}}})
    tasks = plan(resource, Observed(now=NOW, committed=done)).status["tasks"]
    assert tasks[1]["policyKl"] == {"taskStart": {"last": 0.1, "max": 0.1}} and "replayedPrompts" not in tasks[1]
    assert tasks[2]["policyKl"] == {"base": {"last": 0.2, "max": 0.3}, "taskStart": {"last": 0.07, "max": 0.07}}
    assert tasks[2]["replayedPrompts"] == 12
