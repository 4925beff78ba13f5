"""Failure and retries, suspend/resume, deletion, invalid and changed specs: each through the running operator."""

from __future__ import annotations

from operator_harness import cpt_body, new_bucket, run_to_end, suspended, wait_for


def _job_names(world, run):
    return [j["metadata"]["name"] for j in world.jobs(run)]


def test_job_failure_retries_then_fails_with_reason(world, operator):
    world.create(cpt_body("flaky", world.endpoint, new_bucket(world.endpoint), tasks=2,
                          retry={"limit": 2, "backoffSeconds": 1}))
    status = run_to_end(world, "flaky", timeout=40,
                        fail=lambda job: "CUDA out of memory" if job["metadata"]["labels"]["cpt.dev/task-index"] == "1"
                        else None)
    assert status["phase"] == "Failed"
    assert "retry limit 2" in status["message"] and "CUDA out of memory" in status["message"]
    assert _job_names(world, "flaky") == ["flaky-0-evaluate", "flaky-1-train", "flaky-1-train-r1", "flaky-1-train-r2"]
    task = status["tasks"][1]
    assert task["phase"] == "Failed" and "CUDA out of memory" in task["message"]
    ready = {c["type"]: c for c in status["conditions"]}
    assert any(c["status"] == "True" and c["reason"] == "RetriesExhausted" for c in ready.values()), ready
    events = world.events_with("flaky", "StageFailed", "Failed")
    assert [e for e in events if e["type"] == "Warning" and e["reason"] == "StageFailed"]
    assert [e for e in events if e["type"] == "Warning" and e["reason"] == "Failed"]
    assert status["completedTasks"] == 0 and status["accuracy"]["matrix"][0]  # the base row is still there


def test_suspend_and_resume(world, operator):
    world.create(cpt_body("pause", world.endpoint, new_bucket(world.endpoint), tasks=1))
    wait_for(lambda: world.jobs("pause"), what="first job")
    world.patch_spec("pause", {"suspend": True})
    wait_for(lambda: world.status("pause").get("phase") == "Suspended", what="Suspended")
    job = wait_for(lambda: [j for j in world.jobs("pause") if suspended(j)],
                   what="suspend on the running job")[0]
    assert job["metadata"]["name"] == "pause-0-evaluate"
    assert world.play_trainer("pause") == 0  # a suspended job does not run
    assert _job_names(world, "pause") == ["pause-0-evaluate"]

    world.patch_spec("pause", {"suspend": False})
    wait_for(lambda: not any(suspended(j) for j in world.jobs("pause")), what="resumed")
    status = run_to_end(world, "pause", timeout=30)
    assert status["phase"] == "Succeeded"
    reasons = [e["reason"] for e in world.events_with("pause", "Suspended", "Resumed")]
    assert "Suspended" in reasons and "Resumed" in reasons


def test_deletion_collects_children_and_keeps_storage(world, operator):
    body = cpt_body("gone", world.endpoint, new_bucket(world.endpoint), tasks=2, method="grpo")
    world.create(body)
    world.play_trainer("gone") if wait_for(lambda: world.jobs("gone"), what="base job") else None
    wait_for(lambda: ("Deployment", "gone-1-rollout") in world.children("gone"), what="task 1 children")
    assert ("Service", "gone-1-rollout") in world.children("gone")
    store = world.store(body)
    before = sorted(store.list("tasks"))
    assert any(k.endswith("manifest.json") for k in before)

    world.delete("gone")
    wait_for(lambda: world.get("gone") is None, what="resource deleted (kopf releases its finalizer)")
    wait_for(lambda: not world.children("gone"), what="children garbage-collected")
    assert sorted(store.list("tasks")) == before  # checkpoints and results stay


def test_invalid_spec_gets_a_condition_and_no_children(world, operator):
    body = cpt_body("bad", world.endpoint, new_bucket(world.endpoint), tasks=2)
    body["spec"]["tasks"][1]["name"] = "t1"  # duplicate task names: the schema cannot catch it
    body["spec"]["rif"] = {"rollouts": 4}  # rif without rif-grpo
    world.create(body)
    status = wait_for(lambda: world.status("bad").get("phase") == "Failed" and world.status("bad"),
                      what="Failed on an invalid spec")
    valid = next(c for c in status["conditions"] if c["type"] == "SpecValid")
    assert valid["status"] == "False" and valid["reason"] == "InvalidSpec"
    assert "unique" in valid["message"] and "spec.rif" in valid["message"]
    assert [e for e in world.events_with("bad", "InvalidSpec") if e["reason"] == "InvalidSpec" and e["type"] == "Warning"]
    assert world.children("bad") == set()

    # The operator is unharmed: a valid run next to it proceeds, and fixing the spec starts the bad one.
    world.create(cpt_body("good", world.endpoint, new_bucket(world.endpoint), tasks=1))
    assert run_to_end(world, "good", timeout=30)["phase"] == "Succeeded"
    good_children = world.children("good")
    assert good_children, "the good run created children"
    world.patch_spec("bad", {"tasks": [dict(body["spec"]["tasks"][0])], "rif": None})
    wait_for(lambda: world.jobs("bad"), what="the fixed run starts")
    assert world.children("good") == good_children  # starting the fixed run touched nothing of its neighbour


def test_changing_a_trained_task_is_refused_appending_is_allowed(world, operator):
    body = cpt_body("grow", world.endpoint, new_bucket(world.endpoint), tasks=1)
    world.create(body)
    assert run_to_end(world, "grow", timeout=30)["phase"] == "Succeeded"

    tasks = body["spec"]["tasks"] + [{"name": "t2", "train": "s3://data/t2/train.jsonl",
                                      "eval": "s3://data/t2/eval.jsonl"}]
    world.patch_spec("grow", {"tasks": tasks})
    status = run_to_end(world, "grow", timeout=30)
    assert status["phase"] == "Succeeded" and status["completedTasks"] == 2

    changed = [dict(tasks[0], train="s3://data/other/train.jsonl"), tasks[1]]
    world.patch_spec("grow", {"tasks": changed})
    status = wait_for(lambda: world.status("grow").get("phase") == "Failed" and world.status("grow"),
                      what="refused change")
    valid = next(c for c in status["conditions"] if c["type"] == "SpecValid")
    assert valid["status"] == "False" and valid["reason"] == "TrainedTaskChanged"
    assert "spec.tasks[0]" in valid["message"]
