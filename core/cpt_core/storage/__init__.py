"""Checkpoints and results of a run, on a local directory or S3 (docs/design.md, Storage). Imports no torch.

    store = open_store("s3://bucket/run", endpoint=..., path_style=True)   # or a local path / file:// URI
    store.upload_dir(ckpt_dir, layout.task_key(i, name, layout.CHECKPOINT))
    store.put_json(layout.task_key(i, name, layout.EVAL), row)
    commit_task(store, i, name, spec_hash, summary)        # manifest.json last: the task now counts
    tasks = load_committed(store)                          # {index: CommittedTask}: where a run stands
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Optional
from urllib.parse import unquote, urlparse

from cpt_core import layout
from cpt_core.storage.base import FileInfo, Store
from cpt_core.storage.credentials import Credentials, load_credentials, scrub
from cpt_core.storage.errors import CommitConflict, CorruptTask, NotFound, StorageError
from cpt_core.storage.local import LocalStore
from cpt_core.storage.manifest import (CommittedTask, ManifestFile, commit_task, fetch_checkpoint,
                       load_committed, load_task, manifest_key, prepare_task, reset_task)
from cpt_core.storage.retry import RetryPolicy, is_transient, retry_call

if TYPE_CHECKING:
    from cpt_core.api import StorageSpec

__all__ = [
    "open_store", "open_store_for_spec", "Store", "FileInfo", "LocalStore", "S3Store", "layout",
    "commit_task", "load_committed", "load_task", "prepare_task", "reset_task",
    "fetch_checkpoint", "manifest_key", "CommittedTask", "ManifestFile",
    "StorageError", "NotFound", "CorruptTask", "CommitConflict", "Credentials", "load_credentials", "scrub",
    "RetryPolicy", "retry_call", "is_transient",
]


def open_store(uri: str, endpoint: Optional[str] = None, region: Optional[str] = None, path_style: bool = False,
               **kwargs: Any) -> Store:
    """A Store for "s3://bucket/prefix", "file:///abs/dir" or a plain local path.

    For S3, extra kwargs go to S3Store (transfer=TransferConfig, max_attempts, retry=RetryPolicy, credentials).
    """
    if uri.startswith("s3://"):
        from cpt_core.storage.s3 import S3Store

        return S3Store(uri, endpoint=endpoint, region=region, path_style=path_style, **kwargs)
    local_kwargs = {k: v for k, v in kwargs.items() if k == "workers"}  # S3-only options do not apply
    if uri.startswith("file://"):
        parsed = urlparse(uri)
        if parsed.netloc not in ("", "localhost"):
            raise StorageError(f"file URI with a host is not supported: {uri}")
        return LocalStore(unquote(parsed.path), **local_kwargs)
    if "://" in uri:
        raise StorageError(f"unsupported storage URI scheme: {uri.split('://')[0]}://")
    return LocalStore(os.path.abspath(uri), **local_kwargs)


def open_store_for_spec(storage_spec: "StorageSpec", **kwargs: Any) -> Store:
    """A Store for a spec's storage (uri, endpoint, region, path_style). Credentials come from the environment,
    the mounted Secret (credentials.py) or the caller (`credentials=`), never from the spec."""
    return open_store(storage_spec.uri, endpoint=storage_spec.endpoint, region=storage_spec.region,
                      path_style=storage_spec.path_style, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "S3Store":  # lazy: boto3 import costs ~0.3 s, local mode does not need it
        from cpt_core.storage.s3 import S3Store

        return S3Store
    raise AttributeError(name)
