"""Issue 15 item 5: the operator never sends its own credentials to an endpoint a tenant picks; a password in
the endpoint URL is refused without being echoed."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from children_common import example

from cpt_core.validation import SpecError, validate_resource
from cpt_operator.kube.settings import Settings
from cpt_operator.kube.controller.storage_access import CommittedReader

CANARY_KEY = "AKIACANARY0000000015"
CANARY_TOKEN = "canary-session-token-15"


@pytest.fixture
def endpoint():
    """An S3 look-alike that records what every request carried and answers 403."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            seen.append(" ".join(f"{k}: {v}" for k, v in self.headers.items()))
            body = b"<Error><Code>AccessDenied</Code><Message>no</Message></Error>"
            self.send_response(403)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_PUT = do_HEAD = do_POST = _answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()


def _read(endpoint_url: str, operator_endpoint: str | None, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CANARY_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "canary-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", CANARY_TOKEN)
    monkeypatch.setenv("CPT_ALLOWED_INTERNAL_ENDPOINTS", "127.0.0.1")  # the test's endpoint, as an admin allows one
    resource = example("sft", name="ssrf")
    resource["spec"]["storage"].update(endpoint=endpoint_url, pathStyle=True)
    resource["spec"]["storage"].pop("secretRef")  # no Secret: the case where the operator used its own keys
    reader = CommittedReader(Settings(storage_endpoint=operator_endpoint), lambda ns, name: {})
    try:
        reader(resource)  # fails (403): reported as a storage error, never raised
    finally:
        reader.close()


def test_a_tenant_endpoint_never_gets_the_operators_credentials(endpoint, monkeypatch):
    url, seen = endpoint
    _read(url, None, monkeypatch)
    assert seen, "the reader must have tried the endpoint"
    assert not any(CANARY_KEY in h or CANARY_TOKEN in h for h in seen)


def test_the_admins_own_endpoint_is_signed_with_the_operators_identity(endpoint, monkeypatch):
    """The control: the same check sees the credentials when the endpoint is the chart's storage.endpoint."""
    url, seen = endpoint
    _read(url, url, monkeypatch)
    assert any(CANARY_KEY in h for h in seen)


@pytest.mark.parametrize("endpoint_url", ["http://user:hunter2@minio:9000", "https://AKIA:hunter2@s3.example.com",
                                          "http://user:hunter2@mi nio"])
def test_userinfo_in_the_endpoint_is_refused_and_never_echoed(endpoint_url):
    resource = example("sft")
    resource["spec"]["storage"]["endpoint"] = endpoint_url
    with pytest.raises(SpecError) as err:
        validate_resource(resource)
    assert any(p.startswith("spec.storage.endpoint:") for p in err.value.problems)
    assert "hunter2" not in str(err.value)
