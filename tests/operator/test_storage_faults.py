"""S3 outages during passes: the operator keeps what it cannot see (children, last known status) and says so.

Storage goes away for real: the run's storage.endpoint is a TCP proxy in front of moto that resets every
connection while it is down (tests/support/storage_faultproxy.py).
"""

from __future__ import annotations

import time

from operator_harness import cpt_body, new_bucket, run_to_end, wait_for


def _cond(status: dict, ctype: str) -> dict:
    return next((c for c in status.get("conditions") or [] if c["type"] == ctype), {})


def _known(status: dict) -> tuple:
    return (status.get("completedTasks"), status.get("accuracy", {}).get("matrix"), status.get("averageAccuracy"),
            status.get("progress"), [t.get("phase") for t in status.get("tasks") or []])


def test_s3_outage_keeps_children_and_last_status(emu_world, emu_operator, s3_proxy):
    world, proxy = emu_world, s3_proxy
    run = "outage"
    world.create(cpt_body(run, proxy.url, new_bucket(world.endpoint), tasks=3, method="rif-grpo",
                          retry={"limit": 0, "backoffSeconds": 0}))
    deadline = time.monotonic() + 60
    while (world.status(run).get("completedTasks") or 0) < 2:
        assert time.monotonic() < deadline, world.status(run)
        world.play_trainer(run)
        time.sleep(0.2)
    wait_for(lambda: {("Deployment", f"{run}-3-rollout"), ("PyTorchJob", f"{run}-3-filter")}
             <= world.children(run), what="task 3 rollout servers and filter job")
    before_children, before = world.children(run), _known(world.status(run))
    assert before[0] == 2 and len(before[1]) == 3 and before[2] is not None

    proxy.down()
    status = wait_for(lambda: (s := world.status(run)) and _cond(s, "StorageReachable").get("status") == "False"
                      and s, timeout=30, what="StorageReachable=False")
    world.wait_for_passes(6)  # several passes with storage down
    status = world.status(run)
    assert proxy.refused > 0
    assert world.children(run) >= before_children, "a child was deleted while storage was unreachable"
    assert _known(status) == before, (before, _known(status))
    assert status["phase"] == "Running" and _cond(status, "Failed").get("status") == "False"
    assert "storage unreachable" in status["message"]
    warnings = [e for e in world.events_with(run, "StorageUnreachable") if e["reason"] == "StorageUnreachable"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning", warnings

    proxy.up()
    wait_for(lambda: _cond(world.status(run), "StorageReachable").get("status") == "True", timeout=30,
             what="StorageReachable=True again")
    assert [e for e in world.events_with(run, "StorageReachable") if e["reason"] == "StorageReachable"]
    status = run_to_end(world, run, timeout=60)
    assert status["phase"] == "Succeeded" and status["completedTasks"] == 3


def test_a_second_run_on_the_same_prefix_is_refused_and_deletes_nothing(emu_world, emu_operator):
    from operator_harness import World

    world = emu_world
    bucket = new_bucket(world.endpoint)
    first = cpt_body("first", world.endpoint, bucket, tasks=2)
    world.create(first)
    assert run_to_end(world, "first", timeout=60)["phase"] == "Succeeded"
    store = world.store(first)
    before = {k: store.sha256(k) for k in store.list("tasks")}

    copy_paste = cpt_body("second", world.endpoint, bucket, tasks=2)
    copy_paste["spec"]["storage"] = first["spec"]["storage"]  # same storage.uri
    world.create(copy_paste)
    other_ns = World(world.client, "elsewhere", world.endpoint)
    other_ns.core.create_namespace({"metadata": {"name": "elsewhere"}})
    first_again = cpt_body("first", world.endpoint, bucket, tasks=2)
    other_ns.create(first_again)  # re-created with the same name and URI, in another namespace
    for w, run in ((world, "second"), (other_ns, "first")):
        status = wait_for(lambda w=w, run=run: (s := w.status(run)) and s.get("phase") == "Failed" and s,
                          timeout=30, what=f"{run} refused")
        failed = _cond(status, "Failed")
        assert failed["reason"] == "StorageConflict" and "belongs to another run" in failed["message"], failed
        # The refusal names no other tenant's run (namespace, name, uid): only the prefix it asked for.
        first_uid = world.get("first")["metadata"]["uid"]
        assert "default/first" not in failed["message"] and first_uid not in failed["message"], failed
        assert status.get("completedTasks", 0) == 0, "another run's results were adopted"
        assert not w.jobs(run)
    world.wait_for_passes(3)
    assert {k: store.sha256(k) for k in store.list("tasks")} == before
    assert world.status("first")["phase"] == "Succeeded"


def test_the_operator_holds_no_finalizer_and_removes_an_old_one(emu_world):
    """helm uninstall stops the operator first; `kubectl delete crd` then waits on every resource's finalizer. This
    operator adds none (no daemon, no deletion handler), and removes the one an older version left behind."""
    from operator_harness import running_operator

    world = emu_world
    body = cpt_body("held", world.endpoint, new_bucket(world.endpoint), tasks=1)
    body["metadata"]["finalizers"] = ["cpt.dev/kopf-finalizer"]  # left by an older operator
    world.create(body)
    world.create(cpt_body("fresh", world.endpoint, new_bucket(world.endpoint), tasks=1))
    with running_operator():
        wait_for(lambda: world.jobs("held") and world.jobs("fresh"), what="first jobs")
        wait_for(lambda: not (world.get("held") or {})["metadata"].get("finalizers"), what="old finalizer removed")
        assert not (world.get("fresh") or {})["metadata"].get("finalizers")
    world.delete("held")
    world.delete("fresh")
    wait_for(lambda: world.get("held") is None and world.get("fresh") is None, timeout=10,
             what="deleted without an operator")


def test_slow_s3_during_passes_changes_nothing_but_speed(emu_world, emu_operator, s3_proxy, emulator):
    world, proxy, run = emu_world, s3_proxy, "slow"
    world.create(cpt_body(run, proxy.url, new_bucket(world.endpoint), tasks=2))
    proxy.slow(0.3)  # every S3 answer waits 0.3 s: a pass takes seconds, passes of a run never overlap
    seen = []

    def watch() -> None:
        seen.append(_cond(world.status(run), "StorageReachable").get("status"))

    status = run_to_end(world, run, timeout=120, step=watch)
    proxy.slow(0)
    assert status["phase"] == "Succeeded" and status["completedTasks"] == 2
    assert "False" not in seen
    created = [name for plural, ns, name, uid in emulator.creates("pytorchjobs") if name.startswith(f"{run}-")]
    assert len(created) == len(set(created)) == 1 + 2 * 2


def test_a_deleted_intermediate_object_stops_a_succeeded_run_instead_of_retraining(emu_world, emu_operator):
    world, run = emu_world, "pruned"
    body = cpt_body(run, world.endpoint, new_bucket(world.endpoint), tasks=3)
    world.create(body)
    assert run_to_end(world, run, timeout=60)["phase"] == "Succeeded"
    jobs_before = len(world.jobs(run))
    store = world.store(body)
    store.delete_keys(["tasks/1-t1/eval.json"])  # a lifecycle rule or a manual clean-up
    status = wait_for(lambda: (s := world.status(run)) and s.get("phase") == "Failed" and s, timeout=30,
                      what="Failed after the object vanished")
    failed = _cond(status, "Failed")
    assert failed["reason"] == "CommittedTaskDamaged" and "tasks/1-t1/eval.json is missing" in failed["message"]
    assert _cond(status, "StorageIntact")["status"] == "False"
    world.wait_for_passes(3)
    assert len(world.jobs(run)) == jobs_before, "task 1 was retrained under the later lineage"
    assert [e for e in world.events_with(run, "CommittedTaskDamaged") if e["reason"] == "CommittedTaskDamaged"]
