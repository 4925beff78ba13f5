"""The Store interface both backends implement, and the helpers they share (keys, hashing, JSON)."""

from __future__ import annotations

import abc
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from cpt_core.storage.errors import StorageError

HASH_CHUNK = 8 << 20


@dataclass(frozen=True)
class FileInfo:
    """One stored object: its key (relative to the store root), size, and sha256 when known without reading it."""

    key: str
    size: int
    sha256: Optional[str] = None


def check_key(key: str) -> str:
    """Keys are relative, '/'-separated, without '.' or '..' parts: the same on S3 and on disk."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise StorageError(f"invalid key {key!r}")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise StorageError(f"invalid key {key!r}")
    return key


def dir_prefix(prefix: str) -> str:
    """A listing prefix is a directory: 'tasks/1-a' must not match 'tasks/1-ab/...'."""
    prefix = prefix.strip("/")
    if prefix:
        check_key(prefix)
        return prefix + "/"
    return ""


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def walk_files(local_dir: str | os.PathLike[str]) -> list[tuple[Path, str]]:
    """(path, relative '/'-key) of every regular file under local_dir, sorted; directories are implied."""
    root = Path(local_dir)
    if not root.is_dir():
        raise StorageError(f"not a directory: {root}")
    out = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            out.append((path, path.relative_to(root).as_posix()))
    return out


def join(prefix: str, rel: str) -> str:
    return f"{prefix.strip('/')}/{rel}" if prefix.strip("/") else rel


class Store(abc.ABC):
    """A flat key -> bytes namespace rooted at a URI. Keys are relative to the root.

    Writes of one key are atomic: a reader sees the old object, the new one, or none, never a partial one.
    """

    uri: str

    # -- primitives each backend implements
    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    @abc.abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Raises NotFound when the key does not exist."""

    @abc.abstractmethod
    def put_if_absent(self, key: str, data: bytes, *, seen_absent: bool = False) -> bool:
        """Write only if the key does not exist (S3 If-None-Match: *, local hard link). False if it exists.

        `seen_absent`: the caller has just listed the key as absent, which stands in for the check a backend
        makes before its conditional write (S3: a HEAD); the write stays conditional."""

    @abc.abstractmethod
    def head(self, key: str) -> Optional[FileInfo]:
        """Size (and sha256 if recorded at upload) of one key, None if absent."""

    @abc.abstractmethod
    def list_info(self, prefix: str = "") -> list[FileInfo]:
        """Every object under the directory `prefix`, sorted by key; sha256 is not filled in."""

    @abc.abstractmethod
    def delete_keys(self, keys: Iterable[str]) -> None: ...

    @abc.abstractmethod
    def sha256(self, key: str) -> str:
        """Hash of the stored bytes, by reading them (the only check that catches same-size corruption)."""

    @abc.abstractmethod
    def upload_files(self, pairs: list[tuple[str, str]]) -> list[FileInfo]:
        """Upload (local path, key) pairs, in parallel where the backend can; returns size and sha256 of each."""

    @abc.abstractmethod
    def download_files(self, pairs: list[tuple[str, str]]) -> None:
        """Download (key, local path) pairs, in parallel where the backend can; creates parent directories."""

    def abort_uploads(self, prefix: str) -> int:
        """Abort unfinished multipart uploads under the directory `prefix` (a writer killed mid-upload leaves
        them, billed, forever); returns how many. Nothing to do on backends without them."""
        return 0

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release pools; the store stays usable (they are recreated on demand)."""

    # -- conveniences built on the primitives
    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def list_key_and_dir(self, key: str, prefix: str) -> list[FileInfo]:
        """The object `key` if it exists and every object under the directory `prefix`, sorted by key: for a
        key that sorts before the directory (e.g. `owner.json` and `tasks/`), one listing where the backend
        can (S3: ListObjectsV2 from `key` on); here a head and a listing."""
        info = self.head(key)
        found = [FileInfo(info.key, info.size)] if info is not None else []
        return sorted(found + self.list_info(prefix), key=lambda i: i.key)

    def list(self, prefix: str = "") -> list[str]:
        return [info.key for info in self.list_info(prefix)]

    def delete_prefix(self, prefix: str) -> None:
        """Delete everything under the directory `prefix` ('' deletes the whole store)."""
        self.delete_keys(self.list(prefix))

    def put_json(self, key: str, obj: Any) -> None:
        self.put_bytes(key, dump_json(obj))

    def get_json(self, key: str) -> Any:
        data = self.get_bytes(key)
        try:
            return json.loads(data)
        except ValueError as exc:
            raise StorageError(f"{key} is not valid JSON: {exc}") from None

    def upload_file(self, local_path: str | os.PathLike[str], key: str) -> FileInfo:
        return self.upload_files([(os.fspath(local_path), check_key(key))])[0]

    def download_file(self, key: str, local_path: str | os.PathLike[str]) -> None:
        self.download_files([(check_key(key), os.fspath(local_path))])

    def upload_dir(self, local_dir: str | os.PathLike[str], prefix: str) -> list[FileInfo]:
        """Upload every file under local_dir to `prefix/<relative path>`."""
        pairs = [(os.fspath(path), join(prefix, rel)) for path, rel in walk_files(local_dir)]
        return self.upload_files(pairs)

    def download_dir(self, prefix: str, local_dir: str | os.PathLike[str]) -> list[str]:
        """Download every object under `prefix` into local_dir; returns the local paths."""
        base = dir_prefix(prefix)
        pairs = [(key, os.path.join(os.fspath(local_dir), *key[len(base):].split("/")))
                 for key in self.list(prefix)]
        self.download_files(pairs)
        return [path for _, path in pairs]

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


def dump_json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode("utf-8")
