"""The Store primitives behave the same on a local directory and on S3 (moto over HTTP)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cpt_core.storage import NotFound, StorageError, Store, open_store
from cpt_core.storage.local import LocalStore
from storage_testlib import new_bucket, raw_client, s3_store


def test_bytes_json_list_delete(store: Store) -> None:
    store.put_bytes("a/b/c.bin", b"\x00\x01")
    store.put_json("a/x.json", {"k": [1, 2]})
    store.put_bytes("ab/y", b"y")
    assert store.get_bytes("a/b/c.bin") == b"\x00\x01"
    assert store.get_json("a/x.json") == {"k": [1, 2]}
    assert store.exists("a/x.json") and not store.exists("a/missing")
    assert store.list("a") == ["a/b/c.bin", "a/x.json"]  # a directory: 'ab/y' is not under 'a'
    assert store.list("") == ["a/b/c.bin", "a/x.json", "ab/y"]
    assert store.head("a/b/c.bin").size == 2
    store.put_bytes("a/x.json", b"{}")  # overwrite
    assert store.get_json("a/x.json") == {}
    store.delete_prefix("a")
    assert store.list("") == ["ab/y"]
    with pytest.raises(NotFound):
        store.get_bytes("a/x.json")


def test_put_if_absent(store: Store) -> None:
    assert store.put_if_absent("m/manifest.json", b"first")
    assert not store.put_if_absent("m/manifest.json", b"second")
    assert store.get_bytes("m/manifest.json") == b"first"


@pytest.mark.parametrize("key", ["/abs", "a/../b", "a//b", "", "./a"])
def test_bad_keys_rejected(store: Store, key: str) -> None:
    with pytest.raises(StorageError):
        store.put_bytes(key, b"x")


def test_dir_round_trip(store: Store, ckpt: tuple[Path, dict[str, bytes]], tmp_path: Path) -> None:
    src, files = ckpt
    infos = store.upload_dir(src, "tasks/1-a/checkpoint")
    assert sorted(i.key for i in infos) == sorted(f"tasks/1-a/checkpoint/{k}" for k in files)
    assert all(i.sha256 and len(i.sha256) == 64 for i in infos)
    out = tmp_path / "down"
    store.download_dir("tasks/1-a/checkpoint", out)
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == files


def test_local_uris_and_no_tmp_leftovers(tmp_path: Path) -> None:
    st = open_store((tmp_path / "r").as_uri())
    assert isinstance(st, LocalStore) and st.root == tmp_path / "r"
    st.put_bytes("k", b"v")
    assert [p.name for p in (tmp_path / "r").iterdir()] == ["k"]
    assert isinstance(open_store(str(tmp_path / "plain")), LocalStore)
    with pytest.raises(StorageError):
        open_store("gs://bucket/x")


def test_s3_errors_are_storage_errors(moto_endpoint: str) -> None:
    st = s3_store(moto_endpoint, "no-such-bucket-here")
    with pytest.raises(StorageError) as info:
        st.put_bytes("k", b"v")
    assert "NoSuchBucket" in str(info.value) and not info.value.transient
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_multipart_used_for_large_files(moto_endpoint: str, ckpt: tuple[Path, dict[str, bytes]]) -> None:
    bucket = new_bucket(moto_endpoint)
    st = s3_store(moto_endpoint, bucket)
    st.upload_dir(ckpt[0], "c")
    etag = raw_client(moto_endpoint).head_object(Bucket=bucket, Key="runs/r1/c/model.safetensors")["ETag"]
    assert etag.strip('"').endswith("-3")  # 12 MiB in 5 MiB parts


def test_imports_no_torch() -> None:
    """The operator imports this package: no torch, no transformers, and boto3 only when S3 is used."""
    code = ("import sys, cpt_core.storage as s; s.open_store('/tmp/cpt-no-torch').list('');"
            "from cpt_core.storage import S3Store;"
            "assert not {'torch', 'transformers', 'kopf'} & set(sys.modules), 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_put_if_absent_without_server_support(moto_endpoint: str) -> None:
    """Servers that answer 501 to If-None-Match still get a (HEAD-checked) write instead of an error."""
    from botocore.exceptions import ClientError

    st = s3_store(moto_endpoint, new_bucket(moto_endpoint))
    real = st.client.put_object

    def no_conditional(**kwargs: object) -> object:
        if "IfNoneMatch" in kwargs:
            raise ClientError({"Error": {"Code": "NotImplemented"}, "ResponseMetadata": {"HTTPStatusCode": 501}},
                              "PutObject")
        return real(**kwargs)

    st.client.put_object = no_conditional
    assert st.put_if_absent("m", b"1") and not st.put_if_absent("m", b"2")
    assert st.get_bytes("m") == b"1"
