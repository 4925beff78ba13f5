"""Credentials come from a mounted Secret dir or the standard AWS variables, never the spec, and never show up
in logs (botocore debug logs included), exception messages, reprs or tracebacks."""

from __future__ import annotations

import logging
import socket
import traceback
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from cpt_core.storage import Credentials, NotFound, StorageError, load_credentials, open_store, open_store_for_spec
from cpt_core.storage.s3 import S3Store
from storage_testlib import new_bucket

FAKE_ID = "AKIATESTLEAKID123456"
FAKE_SECRET = "leakTestSecret/8h3Kd9+QpZ0aBcDeFgHiJkLmNoP"
FAKE_TOKEN = "leakTestSessionToken0123456789"


def _everything(exc: BaseException) -> str:
    return "\n".join([str(exc), repr(exc), "".join(traceback.format_exception(exc))])


@pytest.fixture
def secret_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "secret"
    d.mkdir()
    (d / "AWS_ACCESS_KEY_ID").write_text(FAKE_ID + "\n")
    (d / "AWS_SECRET_ACCESS_KEY").write_text(FAKE_SECRET)
    (d / "AWS_SESSION_TOKEN").write_text(FAKE_TOKEN)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CPT_S3_CREDENTIALS_DIR", str(d))
    return d


def test_secret_dir_used_and_never_leaked(secret_dir: Path, moto_endpoint: str,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # botocore debug logs print request headers (Authorization: Credential=<id>)
    for name in ("botocore", "boto3", "s3transfer", "urllib3", "cpt_trainer"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        bucket = new_bucket(moto_endpoint)
        st = open_store(f"s3://{bucket}/run", endpoint=moto_endpoint, path_style=True)
        creds = st.client._request_signer._credentials.get_frozen_credentials()
        assert (creds.access_key, creds.secret_key, creds.token) == (FAKE_ID, FAKE_SECRET, FAKE_TOKEN)
        st.put_json("a.json", {"x": 1})
        assert st.get_json("a.json") == {"x": 1}
        errors = []
        with pytest.raises(NotFound) as nf:
            st.get_bytes("missing")
        errors.append(nf.value)
        with pytest.raises(StorageError) as nb:
            open_store("s3://no-such-bucket/x", endpoint=moto_endpoint, path_style=True).put_bytes("k", b"v")
        errors.append(nb.value)
        with socket.socket() as s:  # a port with nothing listening: connection refused
            s.bind(("127.0.0.1", 0))
            dead = f"http://127.0.0.1:{s.getsockname()[1]}"
        with pytest.raises(StorageError) as cr:
            open_store(f"s3://{bucket}/x", endpoint=dead, path_style=True, max_attempts=1).put_bytes("k", b"v")
        assert cr.value.transient
        errors.append(cr.value)
        # A backend error that *does* quote the secret (some servers echo request details) is scrubbed too.
        leaky = ClientError({"Error": {"Code": "SignatureDoesNotMatch",
                                       "Message": f"bad sig for {FAKE_ID}:{FAKE_SECRET} token {FAKE_TOKEN}"},
                             "ResponseMetadata": {"HTTPStatusCode": 403}}, "PutObject")

        def boom(**_: object) -> None:
            raise leaky

        st.client.put_object = boom
        with pytest.raises(StorageError) as lk:
            st.put_bytes("k", b"v")
        assert "SignatureDoesNotMatch" in str(lk.value) and "***" in str(lk.value)
        errors.append(lk.value)
        logging.getLogger("cpt_trainer.test").warning("a careless log line with %s", FAKE_SECRET)
        try:
            raise RuntimeError(f"careless {FAKE_SECRET}")
        except RuntimeError:
            logging.getLogger("cpt_trainer.test").exception("and a careless traceback")
        assert "Credential=" in caplog.text  # the debug logs really were captured ...
        for text in [caplog.text, repr(st), repr(Credentials(FAKE_ID, FAKE_SECRET))] + [_everything(e) for e in errors]:
            for secret in (FAKE_ID, FAKE_SECRET, FAKE_TOKEN):
                assert secret not in text  # ... and hold no credential
        assert all(e.__cause__ is None and e.__context__ is None for e in errors)
    finally:
        for name in ("botocore", "boto3", "s3transfer", "urllib3", "cpt_trainer"):
            logging.getLogger(name).setLevel(logging.NOTSET)


def test_incomplete_secret_dir_is_an_error(secret_dir: Path) -> None:
    (secret_dir / "AWS_SECRET_ACCESS_KEY").unlink()
    with pytest.raises(StorageError) as info:
        load_credentials()
    assert FAKE_ID not in _everything(info.value)


def test_env_credentials_are_registered_for_scrubbing(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> None:
    monkeypatch.delenv("CPT_S3_CREDENTIALS_DIR", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVONLY000000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "envOnlySecret/abcdefghij0123456789")
    assert load_credentials() is None  # boto3's own chain reads the variables
    st = open_store(f"s3://{new_bucket(moto_endpoint)}/r", endpoint=moto_endpoint, path_style=True)
    st.put_bytes("k", b"v")
    assert StorageError("x envOnlySecret/abcdefghij0123456789 y").args[0] == "x *** y"


def test_open_store_for_spec(moto_endpoint: str, secret_dir: Path, tmp_path: Path) -> None:
    from cpt_core.api import StorageSpec

    bucket = new_bucket(moto_endpoint)
    spec = StorageSpec(uri=f"s3://{bucket}/runs/x/", endpoint=moto_endpoint, path_style=True,
                       secret_ref="s3-credentials")
    st = open_store_for_spec(spec)
    assert isinstance(st, S3Store) and st.uri == f"s3://{bucket}/runs/x"
    st.put_bytes("k", b"v")
    assert st.list("") == ["k"]
    local = open_store_for_spec(StorageSpec(uri=str(tmp_path / "runs")))
    local.put_bytes("k", b"v")
    assert local.get_bytes("k") == b"v"


def test_encoded_forms_of_a_secret_are_scrubbed_too() -> None:
    """A secret in a URL (percent-encoded) or a header / config dump (base64) is as much a leak as the raw value."""
    import base64
    from urllib.parse import quote

    from cpt_core.storage.redact import register_secret, scrub

    secret = "canary/Se+cret=42&x"
    register_secret(secret)
    for leaked in (secret, quote(secret, safe=""), base64.b64encode(secret.encode()).decode(),
                   base64.urlsafe_b64encode(secret.encode()).decode(),
                   base64.b64encode(secret.encode()).decode().rstrip("=")):
        text = f"error talking to http://u:{leaked}@host/: denied"
        assert leaked not in scrub(text) and "***" in scrub(text), leaked
    assert scrub("nothing secret here") == "nothing secret here"
