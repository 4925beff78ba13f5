"""The strict emulator behaves like an API server where the operator's tests depend on it."""

from __future__ import annotations

import kubernetes
import pytest
from kubeemu import EmulatorThread, Fault
from kubeemu.semantics import label_selector_matches, merge_patch, parse_path

JOBS = ("kubeflow.org", "v1", "default", "pytorchjobs")


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    with EmulatorThread() as emu:
        client = kubernetes.config.new_client_from_config(config_file=emu.kubeconfig(str(tmp_path_factory.mktemp("k"))))
        emu.core = kubernetes.client.CoreV1Api(client)
        emu.co = kubernetes.client.CustomObjectsApi(client)
        yield emu
        client.close()


def _status(exc_info) -> int:
    return exc_info.value.status


def test_pure_semantics():
    assert parse_path("/api/v1/namespaces").plural == "namespaces"
    assert parse_path("/api/v1/namespaces/x").name == "x"
    p = parse_path("/apis/cpt.dev/v1alpha1/namespaces/ns/continualposttrainings/r/status")
    assert (p.namespace, p.plural, p.name, p.subresource) == ("ns", "continualposttrainings", "r", "status")
    assert parse_path("/apis/cpt.dev") is None
    assert merge_patch({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"b": None}, "l": [2]}) == {"a": {"c": 2}, "l": [2]}
    labels = {"cpt.dev/run": "r", "tier": "x"}
    assert label_selector_matches("cpt.dev/run=r,tier in (x, y)", labels)
    assert not label_selector_matches("cpt.dev/run=r,!tier", labels)
    assert label_selector_matches("other notin (a),cpt.dev/run!=s", labels)


def test_create_conflicts_metadata_and_validation(emu):
    cm = emu.core.create_namespaced_config_map("default", {"metadata": {"name": "a", "labels": {"x": "1"}}})
    assert cm.metadata.uid and cm.metadata.resource_version and cm.metadata.creation_timestamp
    with pytest.raises(kubernetes.client.ApiException) as exc:
        emu.core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    assert _status(exc) == 409
    with pytest.raises(kubernetes.client.ApiException) as exc:
        emu.core.create_namespaced_service("default", {"metadata": {"name": "x" * 64}})
    assert _status(exc) == 422
    with pytest.raises(kubernetes.client.ApiException) as exc:
        emu.core.create_namespaced_config_map("nowhere", {"metadata": {"name": "a"}})
    assert _status(exc) == 404
    assert [c.metadata.name for c in emu.core.list_namespaced_config_map("default", label_selector="x=1").items] == ["a"]
    assert emu.core.list_namespaced_config_map("default", label_selector="x=2").items == []


def test_status_is_a_separate_subresource_and_stale_writes_conflict(emu):
    job = emu.co.create_namespaced_custom_object(*JOBS, {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
                                                         "metadata": {"name": "j"}, "spec": {"x": 1},
                                                         "status": {"bogus": True}})
    assert "status" not in job and job["metadata"]["generation"] == 1
    job = emu.co.patch_namespaced_custom_object_status(*JOBS, "j", {"status": {"done": True}, "spec": {"x": 2}})
    assert job["spec"] == {"x": 1} and job["status"] == {"done": True} and job["metadata"]["generation"] == 1
    job = emu.co.patch_namespaced_custom_object(*JOBS, "j", {"spec": {"x": 3}, "status": {"done": False}})
    assert job["spec"] == {"x": 3} and job["status"] == {"done": True} and job["metadata"]["generation"] == 2
    same = emu.co.patch_namespaced_custom_object(*JOBS, "j", {"spec": {"x": 3}})
    assert same["metadata"]["resourceVersion"] == job["metadata"]["resourceVersion"]  # no-op: no new version
    with pytest.raises(kubernetes.client.ApiException) as exc:
        emu.co.patch_namespaced_custom_object(*JOBS, "j", {"metadata": {"resourceVersion": "1"}, "spec": {"x": 4}})
    assert _status(exc) == 409


def test_faults_are_not_applied(emu):
    emu.inject(Fault(action="create", plural="configmaps", status=500))
    with pytest.raises(kubernetes.client.ApiException) as exc:
        emu.core.create_namespaced_config_map("default", {"metadata": {"name": "faulted"}})
    assert _status(exc) == 500
    assert "faulted" not in [c["metadata"]["name"] for c in emu.live("configmaps")]
    emu.core.create_namespaced_config_map("default", {"metadata": {"name": "faulted"}})  # the fault was used up


def test_finalizers_and_owner_reference_garbage_collection(emu):
    owner = emu.core.create_namespaced_config_map("default", {"metadata": {"name": "owner",
                                                                          "finalizers": ["test/hold"]}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    emu.core.create_namespaced_config_map("default", {"metadata": {"name": "child", "ownerReferences": [ref]}})
    emu.co.create_namespaced_custom_object(*JOBS, {"metadata": {"name": "grandchild", "ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "child",
         "uid": emu.core.read_namespaced_config_map("child", "default").metadata.uid}]}})
    emu.core.delete_namespaced_config_map("owner", "default")
    held = emu.core.read_namespaced_config_map("owner", "default")
    assert held.metadata.deletion_timestamp  # a finalizer holds it; children stay
    assert "child" in [c["metadata"]["name"] for c in emu.live("configmaps")]
    emu.core.patch_namespaced_config_map("owner", "default", {"metadata": {"finalizers": None}})
    names = [c["metadata"]["name"] for c in emu.live("configmaps")]
    assert "owner" not in names and "child" not in names
    assert "grandchild" not in [j["metadata"]["name"] for j in emu.live("pytorchjobs")]


def test_watch_resumes_from_a_resource_version_and_expires_old_ones(emu):
    listing = emu.core.list_namespaced_config_map("default")
    rv = listing.metadata.resource_version
    emu.core.create_namespaced_config_map("default", {"metadata": {"name": "w1"}})
    emu.core.patch_namespaced_config_map("w1", "default", {"data": {"k": "v"}})
    events = list(kubernetes.watch.Watch().stream(emu.core.list_namespaced_config_map, "default",
                                                  resource_version=rv, timeout_seconds=1))
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("ADDED", "w1"), ("MODIFIED", "w1")]
    emu.call(lambda e: setattr(e, "_log_first_rv", int(rv) + 1))  # as if compacted
    with pytest.raises(kubernetes.client.ApiException) as exc:
        list(kubernetes.watch.Watch().stream(emu.core.list_namespaced_config_map, "default",
                                             resource_version=rv, timeout_seconds=1))
    assert _status(exc) == 410  # the client must re-list, as kopf does


def test_watch_clients_vanishing_mid_wait_never_wedge_the_server(emu):
    """Regression (a CI run hung 900 s on a GET): the test server cancels a watch handler when its client goes
    away; a cancel landing while the handler waits for changes must leave nothing behind that blocks later
    requests. Many watchers are cut at random moments while writes keep the wait/notify path busy."""
    import random
    import socket
    import threading
    import time
    from urllib.parse import urlparse

    url = urlparse(emu.url)
    rng = random.Random(7)
    stop = time.monotonic() + 4

    def writer() -> None:
        i = 0
        while time.monotonic() < stop:
            emu.core.create_namespaced_config_map("default", {"metadata": {"name": f"churn-{i}"}})
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    while time.monotonic() < stop:
        sock = socket.create_connection((url.hostname, url.port))
        sock.sendall(b"GET /api/v1/namespaces/default/configmaps?watch=true&resourceVersion=1 HTTP/1.1\r\n"
                     b"Host: x\r\n\r\n")
        time.sleep(rng.choice([0.0, 0.001, 0.01, 0.05, 0.49, 0.5, 0.51]))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # an abrupt reset, as a killed operator leaves
    thread.join()
    # Every kind of request still answers promptly.
    assert emu.core.read_namespaced_config_map("churn-0", "default", _request_timeout=5).metadata.name == "churn-0"
    emu.core.patch_namespaced_config_map("churn-0", "default", {"data": {"k": "v"}}, _request_timeout=5)
    events = list(kubernetes.watch.Watch().stream(emu.core.list_namespaced_config_map, "default",
                                                  resource_version=emu.core.list_namespaced_config_map(
                                                      "default", _request_timeout=5).metadata.resource_version,
                                                  timeout_seconds=1, _request_timeout=5))
    assert events == []
