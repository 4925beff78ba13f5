"""Passes read children from the watch-fed cache (kube/controller/informer.py) and the resource from kopf's watch (issue
16): a pass never LISTs or GETs, an idle pass sends no request at all, and a child deleted behind the run's back
wakes the run at once (not at the storage resync). The emulator counts every request by User-Agent."""

from __future__ import annotations

import time

from kubeemu.semantics import parse_path
from operator_harness import JOB_BACKEND, cpt_body, new_bucket, run_to_end, running_operator, wait_for

from cpt_operator import metrics
from cpt_operator.kube.controller.recent import Recent
from cpt_operator.kube.controller.apply import Applied


def operator_requests(emulator) -> list[tuple[str, str, str]]:
    """(method, plural, query) of every request kube's own client made (kopf's watches are not kube's)."""
    def collect(emu):
        out = []
        for request in emu._requests:
            path = parse_path(request.url.path)
            if path is None or not request.headers.get("User-Agent", "").startswith("cpt-operator/"):
                continue
            method = str(request.method.value).upper()
            kind = "LIST" if method == "GET" and not path.name else method
            out.append((kind, path.plural + (f"/{path.subresource}" if path.subresource else ""),
                        str(request.params.get("labelSelector", ""))))
        return out
    return emulator.call(collect)


def passes() -> float:
    return metrics.REGISTRY.get_sample_value("cpt_operator_reconcile_total") or 0.0


def test_a_run_is_reconciled_without_listing_and_idle_passes_send_nothing(emulator, emu_world, emu_operator):
    world = emu_world
    world.create(cpt_body("cached", world.endpoint, new_bucket(world.endpoint), tasks=1, method="grpo"))
    assert run_to_end(world, "cached", timeout=60)["phase"] == "Succeeded"
    sent = operator_requests(emulator)
    assert not [r for r in sent if r[0] in ("LIST", "GET") and r[1] != "secrets"], sent  # owner checks are GETs
    assert ("POST", JOB_BACKEND.plural, "") in sent

    world.create(cpt_body("idle", world.endpoint, new_bucket(world.endpoint), tasks=1))
    wait_for(lambda: world.jobs("idle"), what="first job")
    before = -1
    while before != len(operator_requests(emulator)):  # its status and events are written: a second with no request
        before = len(operator_requests(emulator))
        time.sleep(1.0)
    before, passes_before = len(operator_requests(emulator)), passes()
    world.wait_for_passes(4)  # storage resyncs (CPT_RECONCILE_INTERVAL 0.5 s) of each run
    assert passes() - passes_before >= 4, "the resync passes did not run"
    assert operator_requests(emulator)[before:] == [], "an idle pass sent API requests"


def test_a_deleted_child_wakes_its_run_at_once(emulator, emu_world, monkeypatch):
    monkeypatch.setenv("CPT_RECONCILE_INTERVAL", "120")  # only the deletion event can bring it back in time
    world = emu_world
    with running_operator():
        world.create(cpt_body("woken", world.endpoint, new_bucket(world.endpoint), tasks=1, method="grpo"))
        def servers() -> list:
            return world.apps.list_namespaced_deployment("default", label_selector="cpt.dev/run=woken").items

        deployment = wait_for(lambda: world.play_trainer("woken") * 0 or servers(),  # task 0 has none
                              what="rollout servers of task 1")[0]
        world.apps.delete_namespaced_deployment(deployment.metadata.name, "default")
        wait_for(lambda: [d for d in servers() if d.metadata.uid != deployment.metadata.uid], timeout=15,
                 what="rollout servers re-created")


def _child(name: str, rv: str, suspended: bool) -> dict:
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
            "metadata": {"name": name, "resourceVersion": rv, "ownerReferences": [{"uid": "u"}]},
            "spec": {"runPolicy": {"suspend": suspended}}}


def test_our_own_reply_stands_in_until_the_watch_catches_up():
    recent = Recent(ttl=60)
    recent.remember("ns", "run", Applied(replies=[_child("job", "7", True)]))
    stale = {("PyTorchJob", "job"): _child("job", "5", False)}
    assert recent.children("ns", "run", stale)[("PyTorchJob", "job")]["spec"]["runPolicy"]["suspend"] is True
    assert recent.children("ns", "run", {})[("PyTorchJob", "job")]["metadata"]["resourceVersion"] == "7"
    recent.seen("ns", "run", _child("job", "8", True))  # the watch caught up: the cache alone counts again
    assert recent.children("ns", "run", {}) == {}

    recent.remember("ns", "run", Applied(replies=[_child("job", "9", False)]))
    recent.seen("ns", "run", _child("job", "9", False), gone=True)  # deleted before a pass saw it
    assert recent.children("ns", "run", {}) == {}

    # The create's reply comes back only after the watch delivered the object's creation and its deletion (a busy
    # API server): it must not stand in for the deleted object, or the next pass would not create it again.
    recent.seen("ns", "run", _child("job", "11", False), gone=True)
    recent.remember("ns", "run", Applied(replies=[_child("job", "11", False)]))
    assert recent.children("ns", "run", {}) == {}
    recent.remember("ns", "run", Applied(replies=[_child("job", "12", False)]))  # created again: that one stands
    assert recent.children("ns", "run", {})[("PyTorchJob", "job")]["metadata"]["resourceVersion"] == "12"

    # Created and deleted while the stream was down (a 410): neither event ever comes; the re-listing does not
    # hold it, so our reply stops counting and the run is named to be looked at again; other kinds stay.
    recent.remember("ns", "run", Applied(replies=[_child("job", "13", False)]))
    assert recent.listed("ConfigMap", "ns", set()) == []
    assert recent.listed("PyTorchJob", "other-ns", set()) == []
    assert recent.listed("PyTorchJob", "ns", {("ns", "job")}) == []  # listed: the reply stands until the watch
    assert recent.listed("PyTorchJob", None, set()) == [("ns", "run")]
    assert recent.children("ns", "run", {}) == {}

    expired = Recent(ttl=0)
    expired.remember("ns", "run", Applied(replies=[_child("job", "3", True)]))
    time.sleep(0.01)
    assert expired.children("ns", "run", {}) == {}


def test_the_status_we_wrote_wins_over_an_older_cached_copy():
    recent = Recent(ttl=60)
    cached = {"metadata": {"uid": "u", "resourceVersion": "10"}, "status": {"phase": "Pending"}}
    reply = {"metadata": {"uid": "u", "resourceVersion": "11"}, "status": {"phase": "Running"}}
    recent.remember("ns", "run", Applied(status_reply=reply))
    assert recent.resource("ns", "run", cached)["status"]["phase"] == "Running"
    assert recent.resource("ns", "run", cached)["metadata"] == cached["metadata"]
    newer = {"metadata": {"uid": "u", "resourceVersion": "12"}, "status": {"phase": "Running"}, "spec": {"x": 1}}
    assert recent.resource("ns", "run", newer) is newer
    other = {"metadata": {"uid": "v", "resourceVersion": "1"}}
    recent.remember("ns", "run", Applied(status_reply=reply))
    assert recent.resource("ns", "run", other) is other  # a re-created resource of the same name
