"""The children's watch-fed cache (kube/informer.py): indexed by run, owner-checked, and honest after a
re-listing: a child deleted while the watch was down (its DELETED event compacted away, 410 on resume) is
dropped from the cache and its run re-creates it, with no resync to help."""

from __future__ import annotations

from kubeemu.semantics import parse_path
from operator_harness import cpt_body, new_bucket, running_operator, wait_for

from cpt_operator.kube.informer import ChildCache


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
