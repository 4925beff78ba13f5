"""Committed results of a run, read from its storage with the operator's credentials.

Credentials: the Secret named by spec.storage.secretRef (read through `kube`), else the operator's environment
(AWS_* or a mounted secret directory, see cpt_core.storage.credentials). They are registered with the
storage layer's scrubber, so they never show up in logs, exception messages or status.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from types import SimpleNamespace
from typing import Any, Callable, Optional

from cpt_core.results import CommittedTask
from cpt_core.storage import Credentials, Store, load_committed, open_store_for_spec, scrub
from cpt_core.storage.credentials import register_secret
from cpt_core.validation import SpecError, validate_resource
from cpt_operator.kube.settings import Settings

log = logging.getLogger(__name__)


class CommittedReader:
    """`reader(resource) -> (committed, error)`; keeps one S3 client per (endpoint, region, addressing,
    credentials) between passes and runs.

    Not one per run: a boto3 client costs ~140 ms of CPU (it parses botocore's S3 model and endpoint rules,
    per Session) and ~13 MB, which with 1,000 runs (each its own URI) was 70% of the operator's CPU and most of
    its memory (bench/operator_scale/RESULTS.md). A Store over a shared client is a few attributes; clients
    are thread-safe.
    """

    def __init__(self, settings: Settings, read_secret: Callable[[str, str], dict[str, str]]) -> None:
        self.settings = settings
        self.read_secret = read_secret
        self._clients: dict[tuple, Any] = {}
        self._lock = threading.Lock()

    def __call__(self, resource: dict) -> tuple[dict[int, CommittedTask], Optional[str]]:
        try:
            cpt = validate_resource(resource, "cluster")
        except SpecError:
            return {}, None  # the planner reports the invalid spec; nothing to read
        try:
            store = self._store(cpt.spec.storage, resource["metadata"]["namespace"])
            return load_committed(store), None
        except Exception as exc:  # storage down, bad credentials, missing secret: report, retry later
            message = scrub(f"cannot read {cpt.spec.storage.uri}: {type(exc).__name__}: {exc}")[:500]
            log.warning("%s/%s: %s", resource["metadata"]["namespace"], resource["metadata"]["name"], message)
            return {}, message

    def _store(self, storage, namespace: str) -> Store:
        creds = None
        if storage.secret_ref:
            data = self.read_secret(namespace, storage.secret_ref)
            missing = [k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not data.get(k)]
            if missing:
                raise KeyError(f"secret {storage.secret_ref!r} lacks {', '.join(missing)}")
            for value in data.values():
                register_secret(value)
            creds = Credentials(data["AWS_ACCESS_KEY_ID"], data["AWS_SECRET_ACCESS_KEY"],
                                data.get("AWS_SESSION_TOKEN") or None)
        elif storage.endpoint and storage.endpoint != self.settings.storage_endpoint:
            # A tenant's own endpoint without secretRef: never sign for it with the operator's identity, which
            # would hand the operator's key id and session token to whoever runs that endpoint.
            creds = Credentials("anonymous", "anonymous")
        # The operator's storage defaults are already in the spec (reconcile.effective_resource).
        effective = SimpleNamespace(uri=storage.uri, endpoint=storage.endpoint, region=storage.region,
                                    path_style=bool(storage.path_style))
        if not storage.uri.startswith("s3://"):
            return open_store_for_spec(effective)  # a local directory (`cpt run`): nothing worth sharing
        fingerprint = hashlib.sha256(repr((creds.access_key_id, creds.secret_access_key, creds.session_token)
                                          if creds else "").encode()).hexdigest()
        key = (effective.endpoint, effective.region, effective.path_style, fingerprint)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                store = open_store_for_spec(effective, **({"credentials": creds} if creds else {}))
                self._clients[key] = store.client
                return store
        return open_store_for_spec(effective, client=client)

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                try:
                    client.close()
                except Exception:  # closing is best effort
                    pass
            self._clients.clear()
