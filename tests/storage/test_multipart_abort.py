"""A writer SIGKILLed mid-upload leaves a multipart upload open (billed, invisible to listings); the next
attempt's prepare_task aborts it. (s3transfer itself aborts on an exception; a SIGKILL gives it no chance.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cpt_core.storage import layout, prepare_task
from storage_testlib import ACCESS_KEY, SECRET_KEY, new_bucket, raw_client, s3_store

CHILD = """
import sys
from boto3.s3.transfer import TransferConfig
from cpt_core.storage import Credentials, open_store
endpoint, bucket, path, key = sys.argv[1:5]
store = open_store(f"s3://{bucket}/runs/r1", endpoint=endpoint, region="us-east-1", path_style=True,
                   credentials=Credentials(sys.argv[5], sys.argv[6]),
                   transfer=TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20, max_concurrency=1))
store.upload_file(path, key)
"""


def _open_uploads(endpoint: str, bucket: str) -> list[dict]:
    return raw_client(endpoint).list_multipart_uploads(Bucket=bucket).get("Uploads") or []


def test_sigkill_mid_upload_leaves_an_upload_that_the_next_attempt_aborts(moto_endpoint: str, tmp_path: Path) -> None:
    bucket = new_bucket(moto_endpoint)
    big = tmp_path / "model.safetensors"
    big.write_bytes(os.urandom(60 << 20))
    key = layout.task_key(1, "a", layout.CHECKPOINT) + "/model.safetensors"
    child = subprocess.Popen([sys.executable, "-c", CHILD, moto_endpoint, bucket, str(big), key, ACCESS_KEY,
                              SECRET_KEY])
    deadline = time.monotonic() + 60
    try:
        while not _open_uploads(moto_endpoint, bucket):
            assert child.poll() is None and time.monotonic() < deadline, "the upload finished or never started"
            time.sleep(0.02)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert len(_open_uploads(moto_endpoint, bucket)) == 1  # the kill left it open

    store = s3_store(moto_endpoint, bucket)
    assert prepare_task(store, 1, "a", "h1") is None
    assert _open_uploads(moto_endpoint, bucket) == []
    assert store.abort_uploads("tasks") == 0
