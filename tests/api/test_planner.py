"""The pure planner: golden outputs for every phase transition, determinism, and no I/O imports.

Golden files live in tests/api/golden/; regenerate after an intended change with CPT_UPDATE_GOLDEN=1 and
review the diff.
"""

import copy
import json
import subprocess
import sys
from datetime import timedelta

import pytest
import yaml
from planner_golden import NOW, base_committed, check_golden, committed, job, plan, summary, three_stage

from cpt_operator.planner import ACK_REGRESSION_ANNOTATION, Observed, ObservedJob

@pytest.fixture
def resource(resource):
    return three_stage(resource)


@pytest.fixture
def base_done(resource):
    return base_committed(resource)


def test_start_evaluates_base_model_first(resource):
    p = plan(resource, Observed(now=NOW))
    got = check_golden("01-start", p)
    assert got["create"] == ["NetworkPolicy/demo-pods", "ConfigMap/demo-0-evaluate-40062d75a8",
                             "PyTorchJob/demo-0-evaluate"]
    assert p.status["phase"] == "Running" and p.status["currentTask"] == "base"


def test_base_done_starts_task1_filter_with_rollout(resource, base_done):
    p = plan(resource, Observed(now=NOW, committed=base_done,
                                jobs=(job("demo-0-evaluate", 0, "evaluate", "Succeeded", finished=NOW),)))
    got = check_golden("02-task1-filter", p)
    assert got["create"] == ["NetworkPolicy/demo-pods", "Secret/demo-rollout-key-b5b6086993",
                             "Deployment/demo-1-rollout", "Service/demo-1-rollout",
                             "ConfigMap/demo-1-filter-4aaa7c445e", "PyTorchJob/demo-1-filter"]
    assert p.status["currentTask"] == "add"


def test_stage_success_moves_to_next_stage(resource, base_done):
    jobs = (job("demo-1-filter", 1, "filter", "Succeeded", finished=NOW),)
    p = plan(resource, Observed(now=NOW, committed=base_done, jobs=jobs),
             children=frozenset({("Deployment", "demo-1-rollout"), ("Service", "demo-1-rollout")}))
    got = check_golden("03-filter-done", p)
    assert "PyTorchJob/demo-1-train" in got["create"]
    assert p.status["tasks"][1]["stage"] == "train"


def test_running_job_is_kept_and_not_recreated_under_new_name(resource, base_done):
    jobs = (job("demo-1-filter", 1, "filter", "Running"),)
    p = plan(resource, Observed(now=NOW, committed=base_done, jobs=jobs))
    names = [o["metadata"]["name"] for o in p.create if o["kind"] == "PyTorchJob"]
    assert names == ["demo-1-filter"]  # same deterministic name: creating it again is a no-op
    assert not [e for e in p.events if e.reason == "StageStarted"]


def test_job_failure_retries_after_backoff_then_fails(resource, base_done):
    failed0 = job("demo-1-filter", 1, "filter", "Failed", finished=NOW, message="OOMKilled")
    p = plan(resource, Observed(now=NOW + timedelta(seconds=3), committed=base_done, jobs=(failed0,)))
    got = check_golden("04-retry-backoff", p)
    assert p.requeue_after == pytest.approx(7.0)
    assert not [c for c in got["create"] if c.startswith("PyTorchJob")]
    assert p.status["tasks"][1]["phase"] == "Retrying"

    p = plan(resource, Observed(now=NOW + timedelta(seconds=11), committed=base_done, jobs=(failed0,)))
    got = check_golden("05-retry-started", p)
    assert "PyTorchJob/demo-1-filter-r1" in got["create"]

    failed1 = job("demo-1-filter-r1", 1, "filter", "Failed", attempt=1, finished=NOW + timedelta(seconds=20),
                  message="OOMKilled")
    p = plan(resource, Observed(now=NOW + timedelta(seconds=31), committed=base_done, jobs=(failed0, failed1)))
    assert p.requeue_after == pytest.approx(9.0)  # backoff doubles: 20 s after the second failure

    failed2 = job("demo-1-filter-r2", 1, "filter", "Failed", attempt=2, finished=NOW + timedelta(seconds=60),
                  message="OOMKilled")
    old = copy.deepcopy(resource)
    old["status"] = p.status
    p = plan(old, Observed(now=NOW + timedelta(seconds=61), committed=base_done, jobs=(failed0, failed1, failed2)))
    got = check_golden("06-retries-exhausted", p)
    assert p.status["phase"] == "Failed"
    assert "retry limit 2" in p.status["message"] and "OOMKilled" in p.status["message"]
    assert not [c for c in got["create"] if c.startswith("PyTorchJob")]
    assert "Deployment/demo-1-rollout" not in got["create"]


def test_suspend_and_resume(resource, base_done):
    running = job("demo-1-train", 1, "train", "Running")
    filt = job("demo-1-filter", 1, "filter", "Succeeded", finished=NOW)
    resource["spec"]["suspend"] = True
    p = plan(resource, Observed(now=NOW, committed=base_done, jobs=(filt, running)))
    got = check_golden("07-suspended", p)
    assert p.status["phase"] == "Suspended"
    marked = {"annotations": {"cpt.dev/suspended-by-operator": "true"}}
    assert got["patch"] == [["PyTorchJob/demo-1-train", {"metadata": marked, "spec": {"runPolicy": {"suspend": True}}}]]
    assert not got["create"]

    resource["spec"]["suspend"] = False
    resource["status"] = p.status
    suspended = job("demo-1-train", 1, "train", "Running", suspended=True)
    p = plan(resource, Observed(now=NOW, committed=base_done, jobs=(filt, suspended)))
    got = check_golden("08-resumed", p)
    assert p.status["phase"] == "Running"
    unmarked = {"annotations": {"cpt.dev/suspended-by-operator": None}}
    assert got["patch"] == [["PyTorchJob/demo-1-train", {"metadata": unmarked,
                                                         "spec": {"runPolicy": {"suspend": False}}}]]
    assert ["Normal", "Resumed"] == got["events"][0][:2]


def test_a_job_held_by_a_queue_is_queued_and_never_resumed_by_the_operator(resource, base_done):
    """Kueue keeps a job with a queue label suspended until it admits it: the run shows Queued (a condition
    says why), the operator does not resume the job, and it still suspends it when the user suspends the run."""
    resource["spec"]["queue"] = "gpu-queue"
    filt = job("demo-1-filter", 1, "filter", "Succeeded", finished=NOW)
    held = ObservedJob("demo-1-train", 1, "train", 0, "Pending", suspended=True, queued=True)
    p = plan(resource, Observed(now=NOW, committed=base_done, jobs=(filt, held)))
    assert p.status["phase"] == "Queued" and "admission" in p.status["message"]
    assert p.patch == [] and not [o for o in p.create if o["kind"] == "PyTorchJob" and
                                  o["metadata"]["name"] != "demo-1-train"]
    queued = next(c for c in p.status["conditions"] if c["type"] == "Queued")
    assert queued["status"] == "True" and queued["reason"] == "AwaitingAdmission"
    task = next(t for t in p.status["tasks"] if t["index"] == 1)
    assert task["phase"] == "Queued"
    for obj in p.create:  # every child of a queued run carries the queue label (Kueue admits the Deployment too)
        if obj["kind"] in ("PyTorchJob", "Deployment"):
            assert obj["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"

    admitted = ObservedJob("demo-1-train", 1, "train", 0, "Running")
    p = plan(resource, Observed(now=NOW, committed=base_done, jobs=(filt, admitted)))
    assert p.status["phase"] == "Running" and p.patch == []
    assert next(c for c in p.status["conditions"] if c["type"] == "Queued")["status"] == "False"

    resource["spec"]["suspend"] = True  # the user's suspension still reaches a queued job ...
    p = plan(resource, Observed(now=NOW, committed=base_done, jobs=(filt, admitted)))
    assert [(ref.kind, ref.name, body["spec"]) for ref, body in p.patch] == [
        ("PyTorchJob", "demo-1-train", {"runPolicy": {"suspend": True}})]


def test_no_queue_no_queued_condition(resource, base_done):
    p = plan(resource, Observed(now=NOW, committed=base_done))
    assert "Queued" not in {c["type"] for c in p.status["conditions"]}
    assert all("kueue.x-k8s.io/queue-name" not in o["metadata"]["labels"] for o in p.create)


def test_spec_change_to_trained_task_is_refused_appending_is_allowed(resource, base_done):
    done = dict(base_done)
    done[1] = committed(resource, 1, {"add": 0.8, "reverse": 0.2, "sort": 0.4})
    changed = copy.deepcopy(resource)
    changed["spec"]["tasks"][0]["train"] = "s3://data/add/train-v2.jsonl"
    p = plan(changed, Observed(now=NOW, committed=done))
    got = check_golden("09-spec-change-refused", p)
    assert p.status["phase"] == "Failed"
    cond = {c["type"]: c for c in p.status["conditions"]}
    assert cond["SpecValid"]["status"] == "False" and cond["SpecValid"]["reason"] == "TrainedTaskChanged"
    assert "spec.tasks[0] ('add') changed after it was trained" in cond["SpecValid"]["message"]
    assert not got["create"]

    appended = copy.deepcopy(resource)
    appended["spec"]["tasks"].append({"name": "count", "train": "s3://data/c/t.jsonl", "eval": "s3://data/c/e.jsonl"})
    p = plan(appended, Observed(now=NOW, committed=done))
    assert p.status["phase"] == "Running" and p.status["progress"] == "1/4"
    # hyper-parameters apply to tasks still to come: no refusal
    tuned = copy.deepcopy(resource)
    tuned["spec"]["grpo"] = {"learningRate": 1e-7}
    assert plan(tuned, Observed(now=NOW, committed=done)).status["phase"] == "Running"


def test_last_task_done_succeeds_with_metrics_and_removes_rollout(resource, base_done):
    done = dict(base_done)
    done[1] = committed(resource, 1, {"add": 0.8, "reverse": 0.2, "sort": 0.4}, {"copy": 0.88},
                        rif={"kept": 60, "dropped": 40, "filtered_fraction": 0.4})
    done[2] = committed(resource, 2, {"add": 0.7, "reverse": 0.6, "sort": 0.4}, {"copy": 0.86},
                        rif={"kept": 70, "dropped": 30, "filtered_fraction": 0.3})
    done[3] = committed(resource, 3, {"add": 0.75, "reverse": 0.5, "sort": 0.9}, {"copy": 0.85},
                        rif={"kept": 50, "dropped": 50, "filtered_fraction": 0.5})
    children = frozenset({("Deployment", "demo-3-rollout"), ("Service", "demo-3-rollout")})
    p = plan(resource, Observed(now=NOW, committed=done), children=children)
    got = check_golden("10-succeeded", p)
    st = p.status
    assert st["phase"] == "Succeeded" and st["progress"] == "3/3" and "currentTask" not in st
    assert st["accuracy"]["matrix"][3] == [0.75, 0.5, 0.9]
    assert st["averageAccuracy"] == pytest.approx((0.75 + 0.5 + 0.9) / 3)
    assert st["backwardTransfer"] == pytest.approx(((0.75 - 0.8) + (0.5 - 0.6)) / 2)
    assert st["forgetting"] == pytest.approx(((0.8 - 0.75) + (0.6 - 0.5)) / 2)
    assert st["plasticity"] == pytest.approx(((0.8 - 0.3) + (0.6 - 0.2) + (0.9 - 0.4)) / 3)
    assert sorted(got["delete"]) == ["Deployment/demo-3-rollout", "Service/demo-3-rollout"]
    assert st["tasks"][2]["filteredFraction"] == 0.3


def test_forgetting_guard_pauses_before_next_task(resource, base_done):
    resource["spec"]["forgetting"] = {"maxDrop": 0.05, "onRegression": "pause"}
    done = dict(base_done)
    done[1] = committed(resource, 1, {"add": 0.8})
    done[2] = committed(resource, 2, {"add": 0.6, "reverse": 0.7})
    p = plan(resource, Observed(now=NOW, committed=done))
    got = check_golden("11-regression-paused", p)
    assert p.status["phase"] == "Suspended"
    assert not [c for c in got["create"] if c.startswith("PyTorchJob")]
    reg = next(c for c in p.status["conditions"] if c["type"] == "ForgettingRegression")
    assert reg["status"] == "True" and "'add' dropped 0.200" in reg["message"]
    assert any(e.reason == "ForgettingRegression" and e.type == "Warning" for e in p.events)

    resource["metadata"]["annotations"] = {ACK_REGRESSION_ANNOTATION: "2"}
    assert plan(resource, Observed(now=NOW, committed=done)).status["phase"] == "Running"
    resource["metadata"]["annotations"] = {}
    resource["spec"]["forgetting"]["onRegression"] = "alert"
    p = plan(resource, Observed(now=NOW, committed=done))
    assert p.status["phase"] == "Running"
    assert next(c for c in p.status["conditions"] if c["type"] == "ForgettingRegression")["status"] == "True"


def test_invalid_spec_gives_condition_not_children(resource):
    resource["spec"]["tasks"] = []
    p = plan(resource, Observed(now=NOW))
    got = check_golden("12-invalid", p)
    assert not p.valid and not got["create"]
    cond = {c["type"]: c for c in p.status["conditions"]}
    assert cond["SpecValid"]["reason"] == "InvalidSpec" and "spec.tasks" in cond["SpecValid"]["message"]
    # the same invalid spec again: no duplicate event
    resource["status"] = p.status
    assert plan(resource, Observed(now=NOW)).events == []


def test_evaluate_succeeded_without_commit_waits_then_retries(resource, base_done):
    jobs = (job("demo-1-filter", 1, "filter", "Succeeded", finished=NOW),
            job("demo-1-train", 1, "train", "Succeeded", finished=NOW),
            job("demo-1-evaluate", 1, "evaluate", "Succeeded", finished=NOW))
    p = plan(resource, Observed(now=NOW + timedelta(seconds=5), committed=base_done, jobs=jobs))
    assert p.requeue_after == pytest.approx(115) and not [o for o in p.create if o["kind"] == "PyTorchJob"]
    p = plan(resource, Observed(now=NOW + timedelta(seconds=200), committed=base_done, jobs=jobs))
    assert [o["metadata"]["name"] for o in p.create if o["kind"] == "PyTorchJob"] == ["demo-1-evaluate-r1"]


def test_conditions_keep_transition_time_when_unchanged(resource):
    p1 = plan(resource, Observed(now=NOW))
    resource["status"] = p1.status
    p2 = plan(resource, Observed(now=NOW + timedelta(hours=1)))
    t1 = {c["type"]: c["lastTransitionTime"] for c in p1.status["conditions"]}
    t2 = {c["type"]: c["lastTransitionTime"] for c in p2.status["conditions"]}
    assert t1 == t2


def test_pytorchjob_shape(resource, base_done):
    p = plan(resource, Observed(now=NOW, committed=base_done))
    pj = next(o for o in p.create if o["kind"] == "PyTorchJob")
    specs = pj["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["replicas"] == 1 and specs["Worker"]["replicas"] == 1
    container = specs["Master"]["template"]["spec"]["containers"][0]
    assert container["name"] == "pytorch"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 4
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert not {"CPT_STAGE", "CPT_STORAGE_URI", "CPT_ROLLOUT_URL"} & set(env)  # in the stage config, read there
    assert pj["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert pj["metadata"]["labels"]["cpt.dev/run"] == "demo"
    cm = next(o for o in p.create if o["kind"] == "ConfigMap")
    from cpt_core.stage import StageConfig

    cfg = StageConfig.model_validate(yaml.safe_load(cm["data"]["stage.yaml"]))
    assert cfg.stage == "filter" and cfg.task_index == 1 and cfg.rollout_url.endswith(":8000")


def test_long_names_fit_dns_labels(resource):
    resource["metadata"]["name"] = "a" * 63
    p = plan(resource, Observed(now=NOW))
    for obj in p.create:  # objects with pods leave room for pod suffixes; private names fit a DNS label
        assert len(obj["metadata"]["name"]) <= (63 if obj["kind"] in ("ConfigMap", "Secret") else 50)


def test_plan_is_deterministic(resource, base_done):
    obs = Observed(now=NOW, committed=base_done, jobs=(job("demo-1-filter", 1, "filter", "Failed", finished=NOW),))
    a = plan(copy.deepcopy(resource), obs)
    b = plan(copy.deepcopy(resource), obs)
    assert json.dumps(summary(a), sort_keys=True) == json.dumps(summary(b), sort_keys=True)
    assert json.dumps(a.create, sort_keys=True) == json.dumps(b.create, sort_keys=True)


def test_planner_imports_neither_torch_nor_kopf():
    code = ("import sys, cpt_operator.planner, cpt_operator.cli; "
            "bad = [m for m in ('torch', 'kopf', 'transformers') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
