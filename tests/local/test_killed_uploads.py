"""A stage SIGKILLed mid-multipart-upload leaves the upload open (billed, invisible to listings); the next stage
of the task, whichever it is, aborts it (issue 26: only the task's first stage did, so rif-grpo and self-sft,
whose train and evaluate are not first, left it open).

A child process uploads a large file into the task's directory on moto (S3 over HTTP) and is SIGKILLed once its
multipart upload is open; then the real stage entry (`stages.run_stage`) runs the next stage. Its inputs (the
datasets) do not exist here, so it fails after its start, as a stage with bad input does: the abort comes first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import boto3
import pytest
from botocore.config import Config

from cpt_core.stage import StageConfig, stages_for
from cpt_core.storage import layout
from cpt_core.validation import validate_resource
from cpt_operator import planner

CHILD = """
import os, sys
from boto3.s3.transfer import TransferConfig
from cpt_core.storage import open_store
endpoint, uri, path, key = sys.argv[1:5]
store = open_store(uri, endpoint=endpoint, region="us-east-1", path_style=True,
                   transfer=TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20, max_concurrency=1))
store.upload_file(path, key)
"""


def _client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}))


def _open_uploads(endpoint: str, bucket: str) -> list[dict]:
    return _client(endpoint).list_multipart_uploads(Bucket=bucket).get("Uploads") or []


def _killed_upload(endpoint: str, uri: str, bucket: str, key: str, big) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, endpoint, uri, str(big), key])
    deadline = time.monotonic() + 60
    try:
        while not _open_uploads(endpoint, bucket):
            assert child.poll() is None and time.monotonic() < deadline, "the upload finished or never started"
            time.sleep(0.02)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL and len(_open_uploads(endpoint, bucket)) == 1


@pytest.mark.parametrize("method, killed, next_stage", [
    ("rif-grpo", "filter", "train"), ("rif-grpo", "train", "train"), ("rif-grpo", "train", "evaluate"),
    ("self-sft", "train", "evaluate"), ("self-sft", "filter", "train"), ("sft", "train", "evaluate")])
def test_a_killed_upload_is_aborted_by_the_next_stage(s3_endpoint, tmp_path, method, killed, next_stage):
    from cpt_trainer.stages import run_stage

    bucket = f"cpt-{uuid.uuid4().hex[:12]}"
    _client(s3_endpoint).create_bucket(Bucket=bucket)
    uri = f"s3://{bucket}/runs/up"
    resource = {"apiVersion": "cpt.dev/v1alpha1", "kind": "ContinualPostTraining", "metadata": {"name": "up"},
                "spec": {"model": "s3://models/none/", "method": method,
                         "tasks": [{"name": "t1", "train": f"s3://{bucket}/missing/train.jsonl",
                                    "eval": f"s3://{bucket}/missing/eval.jsonl"}],
                         "storage": {"uri": uri, "endpoint": s3_endpoint, "pathStyle": True}}}
    if method == "rif-grpo":  # its filter stage is one of the cases
        resource["spec"]["rif"] = {"mode": "prefilter"}
    spec = validate_resource(resource, "local").spec
    assert next_stage in stages_for(spec, 1) and next_stage != stages_for(spec, 1)[0]
    big = tmp_path / "part.bin"
    big.write_bytes(os.urandom(40 << 20))
    leaf = layout.CHECKPOINT + "/model.safetensors" if killed == "train" else "kept.jsonl"
    _killed_upload(s3_endpoint, uri, bucket, layout.task_key(1, "t1", leaf), big)

    cfg = StageConfig(run="up", stage=next_stage, task_index=1, attempt=1, spec=spec,
                      spec_hash=planner.task_spec_hash(spec, 1))
    with pytest.raises(Exception) as failed:  # the missing datasets / checkpoint: after the abort
        run_stage(cfg, workdir=str(tmp_path / "work"))
    assert "missing" in str(failed.value) or "no checkpoint.json" in str(failed.value), failed.value
    assert _open_uploads(s3_endpoint, bucket) == []
