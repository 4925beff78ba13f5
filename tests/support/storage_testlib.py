"""Helpers shared by the storage tests; conftest registers this file as module `storage_testlib`."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from cpt_core.storage import Credentials, RetryPolicy, Store, layout, open_store

ACCESS_KEY = "AKIAFAKEACCESS000001"
SECRET_KEY = "fakeSecretKey/DoNotLeak+0123456789abcdefXYZ"
MiB = 1 << 20
SMALL_PARTS = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=4)
FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.05, max_delay=0.2)


def raw_client(endpoint: str):  # type: ignore[no-untyped-def]
    """A plain boto3 client on the same server: to set up buckets and to tamper with objects behind our back."""
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY,
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


def new_bucket(endpoint: str) -> str:
    name = f"b-{uuid.uuid4().hex[:12]}"
    raw_client(endpoint).create_bucket(Bucket=name)
    return name


def s3_store(endpoint: str, bucket: str, prefix: str = "runs/r1", **kwargs: object) -> Store:
    kwargs.setdefault("transfer", SMALL_PARTS)
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("credentials", Credentials(ACCESS_KEY, SECRET_KEY))
    return open_store(f"s3://{bucket}/{prefix}", endpoint=endpoint, region="us-east-1", path_style=True,
                      **kwargs)


def make_checkpoint(path: Path, big_bytes: int = 12 * MiB, seed: int = 0) -> dict[str, bytes]:
    """A fake HF checkpoint dir: one multipart-sized shard, config, tokenizer, and a nested file."""
    rnd = random.Random(seed)
    files = {
        "model.safetensors": rnd.randbytes(big_bytes),
        "config.json": b'{"model_type": "llama", "hidden_size": 64}',
        "tokenizer.json": rnd.randbytes(3000),
        "extra/notes.txt": b"x" * 10,
    }
    for rel, data in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(data)
    return files


def write_task(store: Store, index: int, name: str, ckpt_src: Path | None = None, acc: float = 0.5) -> None:
    """Everything a task's stages write before commit (index 0, the base row, has only eval.json)."""
    if ckpt_src is not None:
        store.upload_dir(ckpt_src, layout.task_key(index, name, layout.CHECKPOINT))
        store.put_json(layout.task_key(index, name, layout.RIF), {"kept": 6, "total": 10, "filtered_fraction": 0.4})
        store.put_json(layout.task_key(index, name, layout.TRAIN_STATS), {"steps": 3})
    store.put_json(layout.task_key(index, name, layout.EVAL), {"tasks": {name: acc}, "general": {}})


def resume_point(store: Store, verify: str = "size"):  # type: ignore[no-untyped-def]
    """The newest task such that it and every earlier one (from the base row 0) are committed, or None:
    where a resumed run continues."""
    from cpt_core.storage import load_committed

    committed = load_committed(store, verify=verify)  # type: ignore[arg-type]
    last, i = None, 0
    while i in committed:
        last, i = committed[i], i + 1
    return last
