"""Transient faults between us and S3 are retried and the work completes; permanent ones fail fast.

Faults come from a real TCP proxy in front of moto (faultproxy.py): 500/503 answers, connection resets after
a request head, and resets in the middle of request and response bodies."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from cpt_core.storage import (RetryPolicy, StorageError, commit_task, fetch_checkpoint, is_transient,
                                 retry_call)
from storage_testlib import MiB, new_bucket, raw_client, s3_store, write_task, resume_point


def _via_proxy(proxy: Any, bucket: str, **kwargs: Any) -> Any:
    return s3_store(proxy.url, bucket, **kwargs)


def test_500_503_and_resets_are_retried(proxy: Any, moto_endpoint: str) -> None:
    bucket = new_bucket(moto_endpoint)
    st = _via_proxy(proxy, bucket)
    proxy.inject("503", "500", "reset")
    st.put_bytes("a/x.json", b'{"ok": 1}')
    assert proxy.injected == 3
    proxy.inject("reset", "503")
    assert st.get_json("a/x.json") == {"ok": 1}
    assert proxy.injected == 5
    proxy.inject("500")
    assert st.list("a") == ["a/x.json"]
    proxy.inject("503")
    assert st.put_if_absent("a/m.json", b"1") and not st.put_if_absent("a/m.json", b"2")
    assert proxy.injected == 7 and not proxy.plan
    assert raw_client(moto_endpoint).get_object(Bucket=bucket, Key="runs/r1/a/m.json")["Body"].read() == b"1"


def test_upload_cut_mid_part_is_retried(proxy: Any, moto_endpoint: str, ckpt: tuple[Path, dict[str, bytes]],
                                        tmp_path: Path) -> None:
    """Connections reset in the middle of multipart part uploads; the checkpoint still lands intact and commits."""
    src, files = ckpt
    bucket = new_bucket(moto_endpoint)
    st = _via_proxy(proxy, bucket)
    write_task(st, 0, "base", None)
    commit_task(st, 0, "base", "h0", {})
    proxy.cut_requests(after_bytes=2 * MiB, times=2)
    write_task(st, 1, "a", src)
    assert proxy.cuts_fired == 2
    commit_task(st, 1, "a", "h1", {})
    task = resume_point(st, verify="sha256")
    assert task is not None and task.index == 1
    proxy.cut_responses(after_bytes=1 * MiB, times=2)  # and the download is cut twice too
    out = tmp_path / "out"
    fetch_checkpoint(st, task, out)
    assert proxy.cuts_fired == 4
    assert (out / "model.safetensors").read_bytes() == files["model.safetensors"]


def test_body_read_cut_is_retried_by_our_wrapper(proxy: Any, moto_endpoint: str) -> None:
    """botocore does not retry a response body that breaks off after the headers: retry_call does."""
    bucket = new_bucket(moto_endpoint)
    st = _via_proxy(proxy, bucket)
    blob = os.urandom(3 * MiB)
    st.put_bytes("blob", blob)
    proxy.cut_responses(after_bytes=MiB, times=2)
    assert hashlib.sha256(st.get_bytes("blob")).digest() == hashlib.sha256(blob).digest()
    proxy.cut_responses(after_bytes=MiB, times=1)
    assert st.sha256("blob") == hashlib.sha256(blob).hexdigest()
    assert proxy.cuts_fired == 3


def test_persistent_failure_gives_up_with_a_transient_error(proxy: Any, moto_endpoint: str) -> None:
    st = _via_proxy(proxy, new_bucket(moto_endpoint), max_attempts=2,
                    retry=RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.01))
    proxy.inject(*["503"] * 10)
    with pytest.raises(StorageError) as info:
        st.put_bytes("k", b"v")
    assert info.value.transient and "SlowDown" in str(info.value)
    assert proxy.injected == 4, proxy.injected  # 2 botocore attempts x 2 wrapper attempts


def test_retry_call_backoff_and_classification() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("reset by peer")
        return "ok"

    fast = RetryPolicy(attempts=5, base_delay=0.001, max_delay=0.002)
    assert retry_call(flaky, policy=fast) == "ok" and len(calls) == 3

    def denied() -> None:
        calls.append(1)
        raise ClientError({"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "Put")

    calls.clear()
    with pytest.raises(ClientError):
        retry_call(denied, policy=fast)
    assert len(calls) == 1  # permanent: not retried
    slow = ClientError({"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "Put")
    assert is_transient(slow) and not is_transient(ValueError("x"))
    assert RetryPolicy(base_delay=1, max_delay=4).delay(10) <= 4
