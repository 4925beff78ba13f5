"""A directory on a local (or shared POSIX) filesystem as a Store: local mode, tests, and NFS-style volumes.

Every write goes to a temporary file in the target directory and is renamed into place, so a reader never
sees half a file; put_if_absent publishes with a hard link, which fails atomically if the key exists.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Optional

from cpt_core.storage.base import HASH_CHUNK, FileInfo, Store, check_key, dir_prefix, sha256_file
from cpt_core.storage.errors import NotFound, StorageError

TMP_MARK = ".cpt-tmp-"


class LocalStore(Store):
    def __init__(self, root: str | os.PathLike[str], *, workers: int = 4) -> None:
        self.root = Path(root).absolute()
        self.uri = self.root.as_uri()
        self.workers = workers
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def _tmp_for(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.with_name(f"{TMP_MARK}{uuid.uuid4().hex}-{path.name}")

    def _durable_tmp(self, path: Path, data: bytes) -> Path:
        """`data` written and fsynced to a temporary file beside `path` (the caller renames or links it)."""
        tmp = self._tmp_for(path)
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)  # a failed write (disk full) leaves nothing behind
            raise
        return tmp

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._durable_tmp(path, data)
        try:
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"{self.uri}/{key} not found") from None

    def put_if_absent(self, key: str, data: bytes, *, seen_absent: bool = False) -> bool:
        # a hard link fails atomically when the key exists: no separate check to skip (seen_absent)
        path = self._path(key)
        tmp = self._durable_tmp(path, data)
        try:
            try:
                os.link(tmp, path)
                return True
            except FileExistsError:
                return False
            except OSError as exc:  # no hard links here (some FUSE mounts): O_EXCL, then fill
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                    raise
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                return True
        finally:
            tmp.unlink(missing_ok=True)

    def head(self, key: str) -> Optional[FileInfo]:
        path = self._path(key)
        return FileInfo(key, path.stat().st_size) if path.is_file() else None

    def list_info(self, prefix: str = "") -> list[FileInfo]:
        base = dir_prefix(prefix)
        start = self.root.joinpath(*base.strip("/").split("/")) if base else self.root
        if not start.is_dir():
            return []
        out = []
        for dirpath, _dirs, files in os.walk(start):
            for name in files:
                if name.startswith(TMP_MARK):
                    continue
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                try:
                    out.append(FileInfo(key, full.stat().st_size))
                except FileNotFoundError:  # deleted while listing
                    continue
        return sorted(out, key=lambda info: info.key)

    def delete_keys(self, keys: Iterable[str]) -> None:
        for key in keys:
            path = self._path(key)
            path.unlink(missing_ok=True)
            # Drop now-empty parent directories up to the root, so listings stay clean.
            parent = path.parent
            while parent != self.root:
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent

    def sha256(self, key: str) -> str:
        path = self._path(key)
        if not path.is_file():
            raise NotFound(f"{self.uri}/{key} not found")
        return sha256_file(path)

    def upload_files(self, pairs: list[tuple[str, str]]) -> list[FileInfo]:
        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(lambda pair: self._copy_in(*pair), pairs))

    def _copy_in(self, local_path: str, key: str) -> FileInfo:
        """Copy and hash in one pass; publish by rename."""
        path = self._path(key)
        tmp = self._tmp_for(path)
        digest, size = hashlib.sha256(), 0
        try:
            with open(local_path, "rb") as src, open(tmp, "wb") as dst:
                while chunk := src.read(HASH_CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
                    size += len(chunk)
                dst.flush()
                os.fsync(dst.fileno())  # durable before a manifest can name it
            os.replace(tmp, path)
        except FileNotFoundError as exc:
            raise StorageError(f"cannot upload {local_path}: {exc.strerror}") from None
        finally:
            tmp.unlink(missing_ok=True)
        return FileInfo(key, size, digest.hexdigest())

    def download_files(self, pairs: list[tuple[str, str]]) -> None:
        with ThreadPoolExecutor(self.workers) as pool:
            list(pool.map(lambda pair: self._copy_out(*pair), pairs))

    def _copy_out(self, key: str, local_path: str) -> None:
        src = self._path(key)
        if not src.is_file():
            raise NotFound(f"{self.uri}/{key} not found")
        dst = Path(local_path)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f"{TMP_MARK}{uuid.uuid4().hex}-{dst.name}")
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
