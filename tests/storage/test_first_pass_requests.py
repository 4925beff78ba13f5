"""Issue 16: a run's first pass costs 2 S3 requests (one listing of owner.json and tasks/, then the marker's
conditional write, or a read of it when it exists), a later pass 1 (the listing of tasks/), on the real moto
server; the owner marker keeps every property it had (a second run on the same URI is refused and writes
nothing, a prefix with tasks but no marker is adopted with a log line)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from storage_testlib import ACCESS_KEY, SECRET_KEY, new_bucket, raw_client, s3_store, write_task

from cpt_core.storage import Store, layout
from cpt_core.storage.manifest import commit_task
from cpt_core.storage.owner import OWNER
from cpt_core.results import ResumeMarker
from cpt_core.storage.resume_marker import write_marker
from cpt_core.validation import validate_resource
from cpt_operator.kube.settings import Settings
from cpt_operator.kube.controller.storage_access import CommittedReader

SPAN = [OWNER, "tasks/0-base/eval.json", "tasks/1-add/checkpoint/model.bin", "tasks/1-add/eval.json"]
OTHERS = ["a/x", "owner.jso", "owner.json.bak", "report.json", "runs/other/tasks/1-a/eval.json", "tasks.txt",
          "tasks0/x", "tasksx", "work/y"]


def _fill(store: Store, keys: list[str]) -> None:
    for key in keys:
        store.put_bytes(key, key.encode())


def test_one_listing_holds_the_marker_and_the_directory(store: Store) -> None:
    assert store.list_key_and_dir(OWNER, layout.TASKS) == []
    _fill(store, OTHERS + SPAN[1:])
    assert [i.key for i in store.list_key_and_dir(OWNER, layout.TASKS)] == SPAN[1:]
    _fill(store, [OWNER])
    listed = store.list_key_and_dir(OWNER, layout.TASKS)
    assert [(i.key, i.size) for i in listed] == [(k, len(k)) for k in SPAN]
    assert listed[1:] == store.list_info(layout.TASKS)


def test_other_objects_between_them_cost_at_most_one_page(moto_endpoint: str) -> None:
    st = s3_store(moto_endpoint, new_bucket(moto_endpoint))
    _fill(st, SPAN + [f"report-{i:02d}.json" for i in range(12)] + [f"work/{i:02d}" for i in range(12)])
    pages: list[dict[str, Any]] = []
    real = st.client.list_objects_v2

    def small_pages(**kwargs: Any) -> Any:
        pages.append(kwargs)
        return real(MaxKeys=5, **kwargs)

    st.client.list_objects_v2 = small_pages
    assert [i.key for i in st.list_key_and_dir(OWNER, layout.TASKS)] == SPAN
    # owner.json + 4 others, then tasks/ from its own prefix (3 keys): the 8 other reports and the 12 objects
    # after tasks/ are never listed
    assert len(pages) == 2 and pages[1]["Prefix"].endswith("/tasks/"), pages
    pages.clear()
    _fill(st, [f"tasks/2-b/f{i}" for i in range(9)])  # tasks/ over several pages: continued, not restarted
    assert len(st.list_key_and_dir(OWNER, layout.TASKS)) == len(SPAN) + 9
    assert [("ContinuationToken" in p, p["Prefix"].endswith("/tasks/")) for p in pages] == [
        (False, False), (False, True), (True, True), (True, True)]
    pages.clear()
    st.delete_keys([f"report-{i:02d}.json" for i in range(12)])  # tasks/ right after owner.json: no jump
    assert len(st.list_key_and_dir(OWNER, layout.TASKS)) == len(SPAN) + 9
    assert [("ContinuationToken" in p, p["Prefix"].endswith("/tasks/")) for p in pages] == [
        (False, False), (True, False), (True, False)]  # 13 keys, 5 a page; the third page stops at work/


def test_a_listed_absence_still_writes_conditionally(store: Store) -> None:
    assert store.put_if_absent("m/owner.json", b"first", seen_absent=True)
    assert not store.put_if_absent("m/owner.json", b"second", seen_absent=True)  # If-None-Match: * on S3
    assert store.get_bytes("m/owner.json") == b"first"


def _resource(endpoint: str, bucket: str, name: str = "run", uid: str = "uid-1", ns: str = "default") -> dict:
    return {"apiVersion": "cpt.dev/v1alpha1", "kind": "ContinualPostTraining",
            "metadata": {"name": name, "namespace": ns, "uid": uid, "generation": 1},
            "spec": {"model": "s3://models/base/", "method": "sft",
                     "tasks": [{"name": "add", "train": "s3://data/add/train.jsonl", "eval": "s3://data/add/eval.jsonl"}],
                     "storage": {"uri": f"s3://{bucket}/runs/r1", "endpoint": endpoint, "pathStyle": True}}}


class Counting:
    """A CommittedReader whose S3 requests are recorded as (method, query) as they go on the wire."""

    def __init__(self, endpoint: str) -> None:
        self.reader = CommittedReader(Settings(storage_endpoint=endpoint), lambda ns, name: {})
        self.sent: list[tuple[str, str]] = []
        hooked: set[int] = set()
        get = self.reader.clients.get

        def counted(key: tuple, make: Any) -> Any:
            client = get(key, make)
            if id(client) not in hooked:
                hooked.add(id(client))
                client.meta.events.register("before-send.s3", self._record)
            return client

        self.reader.clients.get = counted  # type: ignore[method-assign]

    def _record(self, request: Any, **_: Any) -> None:
        self.sent.append((request.method, request.url.partition("?")[2]))

    def __call__(self, resource: dict) -> tuple[Any, list[tuple[str, str]]]:
        start = len(self.sent)
        view = self.reader(resource)
        return view, self.sent[start:]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("CPT_ALLOWED_INTERNAL_ENDPOINTS", "127.0.0.1")  # moto on loopback, as an admin allows it


def test_a_fresh_run_costs_two_requests_then_one(moto_endpoint: str, env: None) -> None:
    bucket = new_bucket(moto_endpoint)
    resource = _resource(moto_endpoint, bucket)
    count = Counting(moto_endpoint)
    validate_resource(resource, "cluster")  # else the reader reads nothing (the planner reports the spec)
    view, sent = count(resource)
    assert view.error is None and view.conflict is None and not view.committed
    assert [m for m, _ in sent] == ["GET", "PUT"], sent  # the listing, the conditional write (no HEAD)
    assert "list-type=2" in sent[0][1]
    again, sent = count(resource)
    assert again is view and [m for m, _ in sent] == ["GET"] and "list-type=2" in sent[0][1], sent
    marker = json.loads(raw_client(moto_endpoint).get_object(Bucket=bucket, Key=f"runs/r1/{OWNER}")["Body"].read())
    assert marker["uid"] == "uid-1"

    st = s3_store(moto_endpoint, bucket)
    write_task(st, 0, "base")
    commit_task(st, 0, "base", "h0", {})
    view, sent = count(resource)  # the listing changed: read again (one listing, the new manifest)
    assert list(view.committed) == [0] and [m for m, _ in sent] == ["GET", "GET"], sent

    restarted = Counting(moto_endpoint)  # the operator restarted: the marker is listed, read, found ours
    again, sent = restarted(resource)
    assert list(again.committed) == [0] and again.conflict is None
    assert [m for m, _ in sent] == ["GET", "GET", "GET"], sent  # listing, owner.json, the manifest
    again, sent = restarted(resource)
    assert [m for m, _ in sent] == ["GET"], sent


def test_a_second_run_on_the_same_uri_is_refused_and_writes_nothing(moto_endpoint: str, env: None) -> None:
    bucket = new_bucket(moto_endpoint)
    count = Counting(moto_endpoint)
    assert count(_resource(moto_endpoint, bucket))[0].conflict is None
    st = s3_store(moto_endpoint, bucket)
    write_task(st, 0, "base")
    commit_task(st, 0, "base", "h0", {})
    before = {i.key: st.sha256(i.key) for i in st.list_info("")}
    for other in (_resource(moto_endpoint, bucket, name="copy", uid="uid-2"),
                  _resource(moto_endpoint, bucket, ns="elsewhere", uid="uid-3")):
        for _ in range(2):
            view, sent = count(other)
            assert view.conflict and "another run" in view.conflict and not view.committed, view
            assert "uid-1" not in view.conflict and "default/run" not in view.conflict  # names nobody
            assert [m for m, _ in sent] == ["GET", "GET"], sent  # the listing and owner.json: no write
    assert {i.key: st.sha256(i.key) for i in st.list_info("")} == before


def test_tasks_without_a_marker_are_adopted_with_a_log_line(moto_endpoint: str, env: None,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    bucket = new_bucket(moto_endpoint)
    st = s3_store(moto_endpoint, bucket)
    write_task(st, 0, "base")
    commit_task(st, 0, "base", "h0", {})  # written before owner markers existed
    with caplog.at_level(logging.WARNING):
        view, sent = Counting(moto_endpoint)(_resource(moto_endpoint, bucket))
    assert list(view.committed) == [0] and [m for m, _ in sent] == ["GET", "PUT", "GET"], sent
    assert [r.getMessage() for r in caplog.records if "adopted by default/run" in r.getMessage()]
    assert json.loads(st.get_bytes(OWNER))["uid"] == "uid-1"


def test_the_claim_on_a_listing_on_both_backends(store: Store) -> None:
    """What the reader does with the listing, on S3 and on a local directory (the store `cpt run` uses)."""
    from cpt_core.storage.owner import claim

    def listed() -> bool:
        return any(i.key == OWNER for i in store.list_key_and_dir(OWNER, layout.TASKS))

    assert claim(store, "uid-1", "default", "run", listed=listed()) == (None, True)
    assert claim(store, "uid-1", "default", "run", listed=listed()) == (None, False)
    conflict, new = claim(store, "uid-2", "default", "copy", listed=listed())
    assert conflict and "another run" in conflict and "uid-1" not in conflict and not new
    conflict, new = claim(store, "uid-2", "default", "copy", listed=False)  # a stale listing: the write is refused
    assert conflict and "another run" in conflict and not new
    store.delete_keys([OWNER])  # deleted after a listing that showed it: claimed, not refused
    assert claim(store, "uid-2", "default", "copy", listed=True) == (None, True)
    assert json.loads(store.get_bytes(OWNER))["uid"] == "uid-2"


def test_a_resume_marker_costs_one_get_when_it_appears_and_is_tenant_data(moto_endpoint: str, env: None) -> None:
    """A retried train stage's resume marker (cpt_core.storage.resume_marker) reaches the view with one GET, on the
    pass whose listing shows it; later passes cost the listing alone. Only the spec's uncommitted tasks are read
    (a marker of a task the spec does not have costs nothing), and a marker that does not parse is ignored."""
    bucket = new_bucket(moto_endpoint)
    resource = _resource(moto_endpoint, bucket)
    count = Counting(moto_endpoint)
    count(resource)
    st = s3_store(moto_endpoint, bucket)
    write_task(st, 0, "base")
    commit_task(st, 0, "base", "h0", {})
    marker = ResumeMarker(attempt=1, resumed_at_step=30, total_steps=40, resumes=1)
    write_marker(st, 1, "add", marker)
    st.put_json("tasks/7-other/resume.json", marker.record())  # not a task of this spec
    view, sent = count(resource)
    assert view.resumed == {1: marker} and view.error is None
    assert [m for m, _ in sent] == ["GET", "GET", "GET"], sent  # the listing, the base manifest, the marker
    again, sent = count(resource)
    assert again is view and [m for m, _ in sent] == ["GET"], sent

    st.put_bytes(layout.task_key(1, "add", layout.RESUME), b'{"attempt": -1, "not": "a marker"}')
    view, _ = count(resource)
    assert view.resumed == {} and view.error is None and list(view.committed) == [0]

    write_marker(st, 1, "add", marker)
    write_task(st, 1, "add")
    commit_task(st, 1, "add", "h1", {})
    view, _ = count(resource)
    assert list(view.committed) == [0, 1] and view.resumed == {}  # committed: train.json says it from now on
