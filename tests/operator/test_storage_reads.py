"""The operator's storage reads (kube/controller/storage_reads.py, storage_access.py, storage_problems.py) against real servers
on 127.0.0.1: a pass never waits long for a silent endpoint, one endpoint holds at most PER_ENDPOINT readers, an
overdue read says the endpoint did not answer in N s, each failure names what to do, only the credential values
used are held by the scrubber (and let go with the run), and the endpoint allow-list refuses before any request."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

from cpt_core.storage import redact
from cpt_core.storage.s3 import ReadLimits
from cpt_operator.kube.controller import storage_problems as problems
from cpt_operator.kube.settings import Settings
from cpt_operator.kube.controller.storage_access import READ_LIMITS, CommittedReader, StorageView
from cpt_operator.kube.controller.storage_reads import Pending, StorageReads
from operator_harness import new_bucket
import storage_hostile as hostile

REPO = Path(__file__).resolve().parents[2]


class NotThere(Exception):
    status = 404


def _resource(name: str, endpoint: str, bucket: str = "tenant-bucket", secret: str = "s3-keys") -> dict:
    storage = {"uri": f"s3://{bucket}/runs/{name}", "endpoint": endpoint, "pathStyle": True, "secretRef": secret}
    return {"apiVersion": "cpt.dev/v1alpha1", "kind": "ContinualPostTraining",
            "metadata": {"name": name, "namespace": "team-a", "uid": f"uid-{name}", "generation": 1},
            "spec": {"model": "s3://models/base/", "method": "sft",
                     "tasks": [{"name": "add", "train": "s3://data/add/train.jsonl",
                                "eval": "s3://data/add/eval.jsonl"}],
                     "storage": storage}}


KEYS = {"AWS_ACCESS_KEY_ID": "AKIATENANTA000000026", "AWS_SECRET_ACCESS_KEY": "tenant-a-secret-value-26"}


@pytest.fixture(autouse=True)
def env(monkeypatch):
    monkeypatch.setenv("CPT_ALLOWED_INTERNAL_ENDPOINTS", "127.0.0.1")


def _reads(secrets: dict, limits: ReadLimits = READ_LIMITS, **kwargs) -> StorageReads:
    def read_secret(namespace: str, name: str) -> dict:
        if name not in secrets:
            raise NotThere(f"secrets {name!r} not found")
        return secrets[name]

    return StorageReads(CommittedReader(Settings(), read_secret, limits=limits), **kwargs)


def test_a_silent_endpoint_never_holds_a_pass_and_is_reported_at_the_deadline(s3_endpoint):
    silent = hostile.Silent()
    woken: list[tuple[str, str]] = []
    reads = _reads({"s3-keys": {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret"}},
                   wake=lambda ns, name: woken.append((ns, name)), deadline=1.5, pass_wait=0.2)
    try:
        start = time.monotonic()
        runs = [_resource(f"quiet-{i}", silent.url) for i in range(5)]
        first, asked = [], []
        for r in runs:  # each read's deadline counts from the pass that asked for it
            asked.append(time.monotonic())
            first.append(reads.view("team-a", r["metadata"]["name"], r))
        assert all(isinstance(v, Pending) for v in first), first
        assert time.monotonic() - start < 5 * 0.2 + 0.5  # each pass let its worker go after pass_wait
        assert reads.in_flight() == {silent.url: 2}  # the other three wait outside the pool
        healthy = _resource("healthy", s3_endpoint, new_bucket(s3_endpoint))
        view = reads.view("team-a", "healthy", healthy)  # another endpoint is not held back
        if isinstance(view, Pending):  # a slow machine: the read's end wakes the run
            wait_for_wake = time.monotonic() + 5
            while ("team-a", "healthy") not in woken and time.monotonic() < wait_for_wake:
                time.sleep(0.05)
            assert ("team-a", "healthy") in woken
            view = reads.view("team-a", "healthy", healthy)
        else:  # the pass took the result itself: no wake-up (it would start another pass, and read, forever)
            time.sleep(0.3)
            assert ("team-a", "healthy") not in woken
        assert isinstance(view, StorageView) and view.error is None, view
        time.sleep(max(0.0, start + 1.6 - time.monotonic()))
        overdue = reads.view("team-a", "quiet-0", runs[0])
        assert isinstance(overdue, StorageView) and overdue.reason == problems.UNREACHABLE
        assert f"{silent.url} did not answer within 1.5 s" in overdue.error and "until it answers" in overdue.error
        time.sleep(max(0.0, asked[-1] + 1.6 - time.monotonic()))  # the reads still waiting for a reader too
        assert not any(isinstance(reads.view("team-a", r["metadata"]["name"], r), Pending) for r in runs)
    finally:
        reads.close()
        silent.close()


def test_each_failure_says_what_to_do(s3_endpoint):
    deny = hostile.HostileS3("deny:InvalidAccessKeyId")
    endless = hostile.HostileS3("paginate")
    reads = _reads({"s3-keys": KEYS, "half": {"AWS_ACCESS_KEY_ID": "AKIAHALFKEY000000026"}}, deadline=8,
                   limits=ReadLimits(max_pages=5, max_keys=50_000, max_body=1 << 20))
    try:
        cases = {
            "no-secret": (_resource("no-secret", s3_endpoint, secret="gone"), problems.SECRET_MISSING,
                          "Secret team-a/gone (spec.storage.secretRef) does not exist: create it"),
            "half": (_resource("half", s3_endpoint, secret="half"), problems.SECRET_INCOMPLETE,
                     "lacks AWS_SECRET_ACCESS_KEY: add it"),
            "no-bucket": (_resource("no-bucket", s3_endpoint, bucket="no-such-bucket-26"), problems.BUCKET_MISSING,
                          "bucket 'no-such-bucket-26' does not exist"),
            "denied": (_resource("denied", deny.url), problems.ACCESS_DENIED, "refused the keys in Secret s3-keys"),
            "endless": (_resource("endless", endless.url), problems.LIMIT_EXCEEDED, "was cut off after 6 pages"),
        }
        for name, (resource, reason, words) in cases.items():
            view = reads.view("team-a", name, resource)
            assert isinstance(view, StorageView) and view.reason == reason, (name, view)
            assert words in view.error, (name, view.error)
            assert "until it answers" not in view.error  # waiting would not help any of these
            assert KEYS["AWS_SECRET_ACCESS_KEY"] not in view.error
    finally:
        reads.close()
        deny.close()
        endless.close()


def test_only_the_values_used_are_held_and_let_go_with_the_run(s3_endpoint):
    bucket = new_bucket(s3_endpoint)
    keys = {"AWS_ACCESS_KEY_ID": "AKIATENANTB000000026", "AWS_SECRET_ACCESS_KEY": "tenant-b-secret-value-26"}
    huge = {f"KEY_{i}": f"unrelated-value-{i:06d}" for i in range(20_000)}
    huge.update(keys)
    reads = _reads({"big-secret": huge})
    before = redact.registered()
    try:
        for name in ("one", "two"):  # two runs of the namespace with the same Secret
            view = reads.view("team-a", name, _resource(name, s3_endpoint, bucket, secret="big-secret"))
            assert isinstance(view, StorageView) and view.error is None, view
        assert redact.registered() == before + 2  # the key id and the secret, not 20,000 values
        assert redact.scrub(keys["AWS_SECRET_ACCESS_KEY"]) == "***"
        assert redact.scrub("unrelated-value-000042") == "unrelated-value-000042"
        reads.runs.forget(("team-a", "one"))
        assert redact.scrub(keys["AWS_SECRET_ACCESS_KEY"]) == "***"  # "two" still reads with it
        reads.runs.forget(("team-a", "two"))
        assert redact.registered() == before
        assert redact.scrub(keys["AWS_SECRET_ACCESS_KEY"]) == keys["AWS_SECRET_ACCESS_KEY"]
    finally:
        reads.close()


def test_an_endpoint_off_the_allow_list_gets_no_request():
    endless = hostile.HostileS3("paginate")
    reads = _reads({"s3-keys": KEYS}, allowed=("https://minio.storage.svc:9000", "https://s3.*.amazonaws.com"))
    try:
        view = reads.view("team-a", "elsewhere", _resource("elsewhere", endless.url))
        assert isinstance(view, StorageView) and view.reason == problems.NOT_ALLOWED
        assert endless.url in view.error and "CPT_STORAGE_ENDPOINTS" in view.error
        assert endless.pages == 0
        assert problems.endpoint_name(None, "eu-west-1") == "https://s3.eu-west-1.amazonaws.com"
    finally:
        reads.close()
        endless.close()
