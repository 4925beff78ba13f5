"""The children's watch-fed cache (kube/controller/informer.py): indexed by run, owner-checked, and honest after a
re-listing: a child deleted while the watch was down (its DELETED event compacted away, 410 on resume) is
dropped from the cache and its run re-creates it, with no resync to help."""

from __future__ import annotations

from kubeemu.semantics import parse_path
from operator_harness import cpt_body, new_bucket, running_operator, wait_for

from cpt_operator.kube.controller.informer import ChildCache


def _cm(name: str, run: str | None, owner: str = "u1", rv: str = "1") -> dict:
    labels = {"cpt.dev/run": run} if run else {}
    return {"apiVersion": "v1", "kind": "ConfigMap", "data": {"stage.yaml": "x" * 1000},
            "metadata": {"name": name, "namespace": "ns", "labels": labels, "resourceVersion": rv,
                         "ownerReferences": [{"uid": owner, "kind": "ContinualPostTraining"}]}}


def test_the_cache_indexes_children_by_run_and_owner_and_reports_every_change():
    seen = []
    cache = ChildCache(lambda kind, old, new: seen.append((kind, old and old["metadata"]["resourceVersion"],
                                                           new and new["metadata"]["resourceVersion"])))
    cache.put("ConfigMap", _cm("a", "r1"))
    cache.put("ConfigMap", _cm("b", "r1", owner="older-run-same-name"))
    assert set(cache.children("ns", "r1", "u1")) == {("ConfigMap", "a")}  # b belongs to another uid
    assert "data" not in cache.children("ns", "r1", "u1")[("ConfigMap", "a")]  # slim: no payload cached
    cache.put("ConfigMap", _cm("a", "r2", rv="2"))  # relabelled to another run
    assert cache.children("ns", "r1", "u1") == {} and set(cache.children("ns", "r2", "u1")) == {("ConfigMap", "a")}
    cache.put("ConfigMap", _cm("a", None, rv="3"))  # label removed: not a child any more
    assert cache.children("ns", "r2", "u1") == {}
    cache.drop(("ConfigMap", "ns", "b"))
    cache.drop(("ConfigMap", "ns", "b"))  # twice: reported once
    assert cache.objects == {} and cache.runs == {}
    assert seen == [("ConfigMap", None, "1"), ("ConfigMap", None, "1"), ("ConfigMap", "1", "2"),
                    ("ConfigMap", "2", None), ("ConfigMap", "1", None)]


def test_a_child_deleted_while_the_watch_was_compacted_is_dropped_at_the_relisting(emulator, emu_world,
                                                                                   monkeypatch):
    monkeypatch.setenv("CPT_RECONCILE_INTERVAL", "120")  # no resync in time: only the re-listing can tell
    world = emu_world
    with running_operator():
        world.create(cpt_body("relisted", world.endpoint, new_bucket(world.endpoint), tasks=1))

        def configmaps() -> list:
            return world.core.list_namespaced_config_map("default", label_selector="cpt.dev/run=relisted").items

        old = wait_for(configmaps, what="the first stage's ConfigMap")[0]
        path = parse_path(f"/api/v1/namespaces/default/configmaps/{old.metadata.name}")

        def delete_unseen(emu) -> None:  # in the emulator's loop: no stream can deliver the DELETED in between
            emu._delete(path, {})
            emu.expire_watches()

        emulator.call(delete_unseen)
        wait_for(lambda: [c for c in configmaps() if c.metadata.uid != old.metadata.uid], timeout=20,
                 what="the ConfigMap re-created after the re-listing")
        assert emulator.call(lambda e: e.stats.watches_expired) >= 1


def test_children_are_followed_in_the_namespaces_a_glob_matches(emulator, emu_world, monkeypatch):
    """CPT_NAMESPACES with a glob: the informer follows the Namespace objects and opens the child streams of
    each matching one; a deleted child is then seen (and re-created) through them, with no resync to help."""
    monkeypatch.setenv("CPT_NAMESPACES", "def*,!kube-*")
    monkeypatch.setenv("CPT_RECONCILE_INTERVAL", "120")
    world = emu_world
    with running_operator() as runner:
        world.create(cpt_body("globbed", world.endpoint, new_bucket(world.endpoint), tasks=1))

        def configmaps() -> list:
            return world.core.list_namespaced_config_map("default", label_selector="cpt.dev/run=globbed").items

        old = wait_for(configmaps, what="the first stage's ConfigMap")[0]
        world.core.delete_namespaced_config_map(old.metadata.name, "default")
        wait_for(lambda: [c for c in configmaps() if c.metadata.uid != old.metadata.uid], timeout=20,
                 what="the ConfigMap re-created (its deletion seen through the glob's stream)")
    watched = {str(request.url.path) for request in emulator.call(lambda e: list(e._requests))
               if request.params.get("watch") == "true"}
    assert "/api/v1/namespaces" in watched and "/api/v1/namespaces/default/configmaps" in watched, watched
    assert not any(path.startswith("/api/v1/namespaces/kube-system/") for path in watched), watched
    assert "children cache filled" in runner.output


def test_a_child_kind_the_server_does_not_serve_holds_no_other_work_back(emulator_without, s3_endpoint):
    """The stage-job CRD missing: its stream cannot list, the others do; passes run, create what they can, and
    the run says why its job cannot be created (instead of every run waiting for a listing that never comes)."""
    import os

    from operator_harness import JOB_BACKEND, World, api_client

    emulator_without(JOB_BACKEND.plural)
    client = api_client(os.environ["KUBECONFIG"])
    world = World(client, "default", s3_endpoint)
    try:
        with running_operator() as runner:
            world.create(cpt_body("nojobs", world.endpoint, new_bucket(world.endpoint), tasks=1))
            wait_for(lambda: world.core.list_namespaced_config_map(
                "default", label_selector="cpt.dev/run=nojobs").items, what="the stage's ConfigMap")
            reconciled = wait_for(lambda: [c for c in (world.status("nojobs") or {}).get("conditions") or []
                                           if c.get("type") == "Reconciled" and c.get("status") == "False"],
                                  what="the run saying its pass failed")[0]
            assert "404" in reconciled["message"] or "not found" in reconciled["message"].lower(), reconciled
        assert f"{JOB_BACKEND.kind} in all namespaces is not served by the API server" in runner.output
    finally:
        client.close()


def test_the_informer_runs_without_kopf_on_any_stream():
    """The controller's informer over a stream of our own (no kopf, no API server): it fills the cache, is synced
    once every stream listed, and a re-listing drops what it no longer returns, reported as a deletion."""
    import asyncio

    from cpt_operator.kube.controller.informer import Informer
    from cpt_operator.kube.rest.watch import LISTED

    feeds: dict[str, asyncio.Queue] = {}

    async def stream_of(api_version, plural, namespace, selector):
        assert selector == "cpt.dev/run" and namespace is None
        feed = feeds.setdefault(plural, asyncio.Queue())
        while True:
            yield await feed.get()

    async def scenario():
        changes, listings = [], []
        informer = Informer(stream_of, ["ConfigMap", "Service"], on_change=lambda k, o, n: changes.append(
            (k, o and o["metadata"]["name"], n and n["metadata"]["name"])),
            on_listed=lambda kind, ns, present: listings.append((kind, sorted(present))))
        informer.start()
        await asyncio.sleep(0)
        for item in ({"type": None, "object": _cm("a", "r1")}, {"type": None, "object": _cm("b", "r1")}, LISTED):
            feeds["configmaps"].put_nowait(item)
        await asyncio.sleep(0.01)
        assert not informer.synced.is_set()  # Services have not listed yet
        feeds["services"].put_nowait(LISTED)
        await asyncio.wait_for(informer.synced.wait(), 1)
        assert set(informer.cache.children("ns", "r1", "u1")) == {("ConfigMap", "a"), ("ConfigMap", "b")}
        for item in ({"type": None, "object": _cm("a", "r1", rv="5")}, LISTED):  # a re-listing without b
            feeds["configmaps"].put_nowait(item)
        await asyncio.sleep(0.01)
        await informer.stop()
        return informer, changes, listings

    informer, changes, listings = asyncio.run(scenario())
    assert set(informer.cache.children("ns", "r1", "u1")) == {("ConfigMap", "a")}
    assert changes == [("ConfigMap", None, "a"), ("ConfigMap", None, "b"), ("ConfigMap", "a", "a"),
                       ("ConfigMap", "b", None)]
    assert listings == [("ConfigMap", [("ns", "a"), ("ns", "b")]), ("Service", []), ("ConfigMap", [("ns", "a")])]
