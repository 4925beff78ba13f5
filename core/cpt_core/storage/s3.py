"""S3 (or any S3-compatible server: MinIO, Ceph, moto) as a Store, with boto3 only.

Transfers go through boto3's transfer manager (multipart above `multipart_threshold`, `max_concurrency` threads
shared by all files of a call). Transient failures are retried by botocore per request (standard mode) and by
`retry.retry_call` around what botocore does not cover (body reads, files whose transfer ran out of attempts).
Each uploaded object carries its sha256 as metadata (x-amz-meta-sha256) so a manifest can be written later by
another process without reading the bytes back. Errors leave as StorageError with scrubbed messages, classified
(errors.py: Unreachable, AccessDenied, BucketMissing, LimitExceeded). Clients share one parsed botocore model
(s3client.py). A reader of storage it does not trust (the operator) passes `limits`: listings stop past a number
of pages or keys and bodies past a number of bytes (the declared ContentLength is checked before reading, then at
most the cap is read), so an endpoint cannot grow the reader's memory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.exceptions import ClientError

from cpt_core.storage.base import FileInfo, Store, check_key, dir_prefix, sha256_bytes, sha256_file
from cpt_core.storage.credentials import Credentials, load_credentials
from cpt_core.storage.errors import LimitExceeded, StorageError
from cpt_core.storage.retry import DEFAULT_RETRY, RetryPolicy, is_transient, retry_call
from cpt_core.storage.s3client import Timeouts, make_client
from cpt_core.storage.s3errors import code as _code, guard as _guard, status as _status

log = logging.getLogger(__name__)
SHA_META = "sha256"
MiB = 1 << 20


@dataclass(frozen=True)
class ReadLimits:
    """What one listing or one body read may bring back (None: unbounded, the trainer's own storage)."""

    max_pages: Optional[int] = None
    max_keys: Optional[int] = None
    max_body: Optional[int] = None


def default_transfer_config() -> TransferConfig:
    """boto3's own defaults, spelled out: multipart above 8 MiB in 8 MiB parts (s3transfer grows the part size
    for files above 80 GB, to stay under 10,000 parts), 10 requests in flight shared by all files of one call.
    16 MiB parts measured no faster on moto; tune per site with open_store(..., transfer=TransferConfig(...))."""
    return TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB, max_concurrency=10,
                          use_threads=True)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """'s3://bucket/some/prefix/' -> ('bucket', 'some/prefix')."""
    if not uri.startswith("s3://"):
        raise StorageError(f"not an s3:// URI: {uri}")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    if not bucket:
        raise StorageError(f"no bucket in {uri}")
    return bucket, prefix.strip("/")


class S3Store(Store):
    def __init__(self, uri: str, *, endpoint: Optional[str] = None, region: Optional[str] = None,
                 path_style: bool = False, credentials: Optional[Credentials] = None,
                 transfer: Optional[TransferConfig] = None, max_attempts: int = 6,
                 retry: RetryPolicy = DEFAULT_RETRY, client: Any = None, timeouts: Optional[Timeouts] = None,
                 limits: ReadLimits = ReadLimits(), max_pool_connections: Optional[int] = None) -> None:
        self.bucket, self.prefix = parse_s3_uri(uri)
        self.uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.transfer = transfer or default_transfer_config()
        self.retry = retry
        self.limits = limits
        pool = max_pool_connections or int(self.transfer.max_request_concurrency) + 6
        self.client = client or self._make_client(endpoint, region, path_style, credentials,
                                                  timeouts or Timeouts(attempts=max_attempts), pool)

    def _make_client(self, endpoint: Optional[str], region: Optional[str], path_style: bool,
                     credentials: Optional[Credentials], timeouts: Timeouts, pool: int) -> Any:
        """Credentials passed in are the caller's to register with the scrubber (the operator holds them per
        run); load_credentials registers what it finds for the process."""
        creds = credentials or load_credentials()
        region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        try:
            return make_client(region=region, endpoint=endpoint, path_style=path_style, timeouts=timeouts,
                               max_pool_connections=pool,
                               access_key_id=creds.access_key_id if creds else None,
                               secret_access_key=creds.secret_access_key if creds else None,
                               session_token=creds.session_token if creds else None)
        except ValueError as exc:  # botocore refuses the endpoint URL (ValueError subclasses): say which
            raise StorageError(f"S3 endpoint {endpoint!r} cannot be used: {type(exc).__name__}: {exc}") from None

    def _k(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _rel(self, full: str) -> str:
        return full[len(self.prefix) + 1:] if self.prefix else full

    def _retry(self, fn: Callable[[], Any], what: str) -> Any:
        return retry_call(fn, policy=self.retry, what=what)

    # -- primitives
    @_guard("put")
    def put_bytes(self, key: str, data: bytes) -> None:
        meta = {SHA_META: sha256_bytes(data)}
        self._retry(lambda: self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=data,
                                                   Metadata=meta), f"put {key}")

    @_guard("get")
    def get_bytes(self, key: str) -> bytes:
        cap = self.limits.max_body

        def once() -> bytes:
            resp = self.client.get_object(Bucket=self.bucket, Key=self._k(key))
            body = resp["Body"]
            try:
                if cap is None:
                    return body.read()
                if int(resp.get("ContentLength") or 0) > cap:  # said before a byte of it is read
                    raise self._too_big(key, f"{resp.get('ContentLength')} bytes")
                data = body.read(cap + 1)  # a server that sends more than it declared is cut off here
                if len(data) > cap:
                    raise self._too_big(key, "more than declared")
                return data
            finally:
                body.close()  # unread bytes are dropped with the connection, never buffered

        return self._retry(once, f"get {key}")

    def _too_big(self, key: str, size: str) -> LimitExceeded:
        return LimitExceeded(f"{self.uri}/{key} is larger than this reader accepts ({size}; at most "
                             f"{self.limits.max_body} bytes)")

    def _pages(self, listing: str) -> Callable[[int, int], None]:
        """A check for each page a listing receives: past `max_pages` pages or `max_keys` keys it stops."""
        limits = self.limits

        def check(pages: int, keys: int) -> None:
            if (limits.max_pages is not None and pages > limits.max_pages) or (
                    limits.max_keys is not None and keys > limits.max_keys):
                raise LimitExceeded(f"listing {listing} was cut off after {pages} pages and {keys} keys (this "
                                    f"reader reads at most {limits.max_pages} pages, {limits.max_keys} keys)")

        return check

    @_guard("conditional put")
    def put_if_absent(self, key: str, data: bytes, *, seen_absent: bool = False) -> bool:
        # The HEAD (or the caller's listing, seen_absent) also protects servers that ignore If-None-Match.
        if not seen_absent and self.head(key) is not None:
            return False
        meta = {SHA_META: sha256_bytes(data)}

        def once() -> bool:
            try:
                self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=data, Metadata=meta,
                                       IfNoneMatch="*")
                return True
            except ClientError as exc:
                if _status(exc) == 412 or _code(exc) == "PreconditionFailed":
                    return False
                if _status(exc) == 501 or _code(exc) == "NotImplemented":  # no conditional writes here:
                    log.warning("%s does not support If-None-Match; falling back to check-then-PUT", self.uri)
                    self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=data, Metadata=meta)
                    return True
                raise  # 409 ConditionalRequestConflict is transient: retried

        return self._retry(once, f"conditional put {key}")

    @_guard("head")
    def head(self, key: str) -> Optional[FileInfo]:
        def once() -> Optional[FileInfo]:
            try:
                resp = self.client.head_object(Bucket=self.bucket, Key=self._k(key))
            except ClientError as exc:
                if _status(exc) == 404 or _code(exc) in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise
            return FileInfo(key, int(resp["ContentLength"]), resp.get("Metadata", {}).get(SHA_META))

        return self._retry(once, f"head {key}")

    @_guard("list")
    def list_info(self, prefix: str = "") -> list[FileInfo]:
        rel = dir_prefix(prefix)
        full = f"{self.prefix}/{rel}" if self.prefix else rel

        check = self._pages(f"{self.uri}/{rel}")

        def once() -> list[FileInfo]:
            out: list[FileInfo] = []
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full}
            pages = 0
            while True:
                page = self.client.list_objects_v2(**kwargs)
                pages += 1
                out.extend(FileInfo(self._rel(obj["Key"]), int(obj["Size"])) for obj in page.get("Contents", []))
                check(pages, len(out))
                token = page.get("NextContinuationToken")
                if not page.get("IsTruncated") or not token:
                    return out
                kwargs["ContinuationToken"] = token

        return sorted(self._retry(once, f"list {prefix}"), key=lambda info: info.key)

    @_guard("list")
    def list_key_and_dir(self, key: str, prefix: str) -> list[FileInfo]:
        """One ListObjectsV2 from just before `key` on, stopped past the directory `prefix` (a run's first pass:
        owner.json and tasks/). Other objects between the two cost at most one page: when a whole page ends
        before the directory, the rest is listed from the directory itself."""
        rel = dir_prefix(prefix)
        if not check_key(key) < rel:  # the directory comes first, or holds the key: no single span
            return super().list_key_and_dir(key, prefix)
        root = f"{self.prefix}/" if self.prefix else ""
        first, under = root + key, root + rel
        check = self._pages(f"{self.uri}/{key} and {rel}")

        def once() -> list[FileInfo]:
            out: list[FileInfo] = []
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": root, "StartAfter": first[:-1]}
            pages = seen = 0
            while True:
                page = self.client.list_objects_v2(**kwargs)
                objs = page.get("Contents", [])
                pages, seen = pages + 1, seen + len(objs)
                check(pages, seen)
                for obj in objs:
                    if obj["Key"] == first or obj["Key"].startswith(under):
                        out.append(FileInfo(self._rel(obj["Key"]), int(obj["Size"])))
                    elif obj["Key"] > under:
                        return out  # past the directory
                if not page.get("IsTruncated"):
                    return out
                if objs and objs[-1]["Key"] < under:  # a page of other objects: jump to the directory
                    kwargs = {"Bucket": self.bucket, "Prefix": under}
                else:
                    kwargs = {"Bucket": self.bucket, "Prefix": kwargs["Prefix"],
                              "ContinuationToken": page["NextContinuationToken"]}

        return sorted(self._retry(once, f"list {key} and {prefix}"), key=lambda info: info.key)

    @_guard("delete")
    def delete_keys(self, keys: Iterable[str]) -> None:
        full = [self._k(key) for key in keys]
        for start in range(0, len(full), 1000):
            batch = {"Objects": [{"Key": k} for k in full[start:start + 1000]], "Quiet": True}
            resp = self._retry(lambda b=batch: self.client.delete_objects(Bucket=self.bucket, Delete=b), "delete")
            errors = resp.get("Errors") or []
            if errors:
                first = errors[0]
                raise StorageError(f"delete failed for {len(errors)} keys, e.g. {first.get('Key')}: "
                                   f"{first.get('Code')}", transient=first.get("Code") in ("InternalError",
                                                                                            "SlowDown"))

    @_guard("abort uploads")
    def abort_uploads(self, prefix: str) -> int:
        rel = dir_prefix(prefix)
        full = f"{self.prefix}/{rel}" if self.prefix else rel
        aborted = 0
        for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=full):
            for upload in page.get("Uploads") or []:
                try:
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                       UploadId=upload["UploadId"])
                    aborted += 1
                except ClientError as exc:
                    if _code(exc) != "NoSuchUpload":  # finished or aborted meanwhile
                        raise
        if aborted:
            log.info("aborted %d unfinished multipart upload(s) under %s/%s", aborted, self.uri, rel)
        return aborted

    @_guard("hash")
    def sha256(self, key: str) -> str:
        def once() -> str:
            body = self.client.get_object(Bucket=self.bucket, Key=self._k(key))["Body"]
            digest = hashlib.sha256()
            for chunk in body.iter_chunks(chunk_size=1 << 20):
                digest.update(chunk)
            return digest.hexdigest()

        return self._retry(once, f"hash {key}")

    # -- transfers
    @_guard("upload")
    def upload_files(self, pairs: list[tuple[str, str]]) -> list[FileInfo]:
        """Hash files (largest first, two threads) and submit each upload as soon as its hash is known, so
        hashing overlaps the transfers; then retry whole files that failed transiently."""
        for _, key in pairs:
            check_key(key)
        sizes = {path: os.path.getsize(path) for path, _ in pairs}
        infos: dict[int, FileInfo] = {}
        todo = list(range(len(pairs)))
        hashes: dict[int, str] = {}
        attempt = 1
        while True:
            failed = self._upload_round(pairs, todo, sizes, hashes, infos)
            if not failed:
                return [infos[i] for i in range(len(pairs))]
            exc = failed[0][1]
            if attempt >= self.retry.attempts or not all(is_transient(e) for _, e in failed):
                raise exc
            log.warning("upload of %d file(s) failed (%s), retry %d/%d", len(failed), type(exc).__name__,
                        attempt, self.retry.attempts - 1)
            time.sleep(self.retry.delay(attempt))
            todo, attempt = [i for i, _ in failed], attempt + 1

    def _upload_round(self, pairs: list[tuple[str, str]], todo: list[int], sizes: dict[str, int],
                      hashes: dict[int, str], infos: dict[int, FileInfo]) -> list[tuple[int, BaseException]]:
        failed: list[tuple[int, BaseException]] = []
        uploads: dict[Future[Any], int] = {}
        with create_transfer_manager(self.client, self.transfer) as manager, ThreadPoolExecutor(2) as hasher:
            def submit(i: int) -> None:
                path, key = pairs[i]
                extra = {"Metadata": {SHA_META: hashes[i]}}
                uploads[manager.upload(path, self.bucket, self._k(key), extra_args=extra)] = i  # type: ignore

            pending = {}
            for i in sorted(todo, key=lambda j: -sizes[pairs[j][0]]):
                if i in hashes:
                    submit(i)
                else:
                    pending[hasher.submit(sha256_file, pairs[i][0])] = i
            for fut in as_completed(pending):
                i = pending[fut]
                try:
                    hashes[i] = fut.result()
                except OSError as exc:
                    failed.append((i, StorageError(f"cannot read {pairs[i][0]}: {exc.strerror}")))
                    continue
                submit(i)
            for fut, i in list(uploads.items()):
                try:
                    fut.result()
                    infos[i] = FileInfo(pairs[i][1], sizes[pairs[i][0]], hashes[i])
                except Exception as exc:  # noqa: BLE001 - collected, classified by the caller
                    failed.append((i, exc))
        return failed

    @_guard("download")
    def download_files(self, pairs: list[tuple[str, str]]) -> None:
        """Parallel downloads (the transfer manager writes a temp file and renames it); failed files retried."""
        for key, path in pairs:
            check_key(key)
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        todo, attempt = list(range(len(pairs))), 1
        while True:
            failed: list[tuple[int, BaseException]] = []
            with create_transfer_manager(self.client, self.transfer) as manager:
                futures = {i: manager.download(self.bucket, self._k(pairs[i][0]), pairs[i][1]) for i in todo}
                for i, fut in futures.items():
                    try:
                        fut.result()
                    except Exception as exc:  # noqa: BLE001
                        failed.append((i, exc))
            if not failed:
                return
            exc = failed[0][1]
            if attempt >= self.retry.attempts or not all(is_transient(e) for _, e in failed):
                raise exc
            log.warning("download of %d file(s) failed (%s), retry %d/%d", len(failed), type(exc).__name__,
                        attempt, self.retry.attempts - 1)
            time.sleep(self.retry.delay(attempt))
            todo, attempt = [i for i, _ in failed], attempt + 1
