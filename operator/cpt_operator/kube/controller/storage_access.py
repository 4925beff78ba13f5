"""Committed results of a run, read from its storage with the operator's credentials.

Credentials: the Secret named by spec.storage.secretRef (read through `kube`), else the operator's environment
(AWS_* or a mounted secret directory, see cpt_core.storage.credentials), which a run may use only under the
per-namespace prefix of CPT_STORAGE_PREFIX_WITHOUT_SECRET (the operator's identity must not read or write another
team's prefix for a tenant). They are registered with the storage layer's scrubber, so they never show up in
logs, exception messages or status. On a run's first pass the prefix is claimed (cpt_core.storage.owner) and a
base model under another run's prefix is refused.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from cpt_core import layout, tenancy
from cpt_core.api import StorageSpec
from cpt_core.results import CommittedTask, ResumeMarker
from cpt_core.storage import Credentials, RetryPolicy, Store, open_store_for_spec, scrub
from cpt_core.storage import s3client
from cpt_core.storage.redact import hold_secrets, release_secrets
from cpt_core.storage.s3 import ReadLimits
from cpt_core.storage.s3client import Timeouts
from cpt_core.storage.manifest import load_committed_report
from cpt_core.storage.owner import ADOPT_ANNOTATION, OWNER, claim, model_conflict
from cpt_core.storage.resume_marker import read_markers
from cpt_core.validation import SpecError, validate_resource
from cpt_operator.kube.controller import storage_problems as problems
from cpt_operator.kube.controller.state import RunState, Runs
from cpt_operator.kube.settings import Settings

log = logging.getLogger(__name__)

# S3 clients kept between passes, least recently used evicted. All share one parsed botocore model
# (cpt_core.storage.s3client): ~0.4 MB and ~15 ms of CPU each, so 256 bound the cache near 100 MB and 100
# endpoints are kept, not rebuilt (bench/storage_endpoints measures it).
MAX_CLIENTS = 256
# A run's read is a few small objects: short socket timeouts and two attempts per request, under the wall-clock
# deadline of controller.storage_reads; a dead endpoint gives up within seconds (the next pass tries again).
READ_TIMEOUTS = Timeouts(connect=3.0, read=5.0, attempts=2)
READ_DEADLINE = 10.0  # seconds a run's whole read (Secret, listing, claim, manifests) may take, wall clock
READ_POOL = 2  # connections per client: a run's read sends one request at a time
# What one run's read may bring back: an endpoint that paginates forever or serves a huge "manifest" stops here.
# A run's tasks/ holds a few files per task (checkpoint shards, eval, manifest); manifests are a few KB. A page
# of 1,000 keys costs botocore ~50 ms of CPU to parse: 20 pages bound a hostile listing near a second.
READ_LIMITS = ReadLimits(max_pages=20, max_keys=20_000, max_body=4 << 20)
MAX_VIEWS = 10_000  # runs whose committed results are kept between passes (a few KB each)
# Owner claims remembered (a few hundred bytes each); past this many the set starts over (claims are re-read).
MAX_CLAIMS = 100_000
READ_RETRY = RetryPolicy(attempts=2, base_delay=0.2, max_delay=1.0)
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")  # a resource name (a marker's is storage data)


@dataclass
class StorageView:
    """What one pass could learn from a run's storage. `error` / `conflict`: nothing else is known."""

    committed: dict[int, CommittedTask] = field(default_factory=dict)
    damaged: dict[int, str] = field(default_factory=dict)
    resumed: dict[int, ResumeMarker] = field(default_factory=dict)  # uncommitted tasks' resume markers
    error: Optional[str] = None
    conflict: Optional[str] = None
    reason: Optional[str] = None  # the condition reason of `error` (controller.storage_problems)


class ClientCache:
    """At most `size` clients, least recently used evicted first and closed (its connection pool with it)."""

    def __init__(self, size: int = MAX_CLIENTS) -> None:
        self.size = size
        self._clients: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.evicted = 0

    def get(self, key: tuple, make: Callable[[], Any]) -> Any:
        with self._lock:
            client = self._clients.get(key)
            if client is not None:
                self._clients.move_to_end(key)
                return client
        client = make()  # outside the lock: making a client takes ~15 ms of CPU
        with self._lock:
            if key in self._clients:  # another thread made one meanwhile: keep theirs
                _close(client)
                self._clients.move_to_end(key)
                return self._clients[key]
            self._clients[key] = client
            while len(self._clients) > self.size:
                _, old = self._clients.popitem(last=False)
                self.evicted += 1
                _close(old)  # a pass still using it gets a fresh pool on its next request (botocore)
            return client

    def __len__(self) -> int:
        return len(self._clients)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), OrderedDict()
        for client in clients:
            _close(client)


class _Listed:
    """A Store whose listing of tasks/ is the one this pass already made: load_committed_report reads its
    results with the very listing the view cache is keyed by, and lists nothing again."""

    def __init__(self, store: Store, tasks: list) -> None:
        self._store = store
        self._tasks = tasks

    def list_info(self, prefix: str = "") -> list:
        return list(self._tasks) if prefix == layout.TASKS else self._store.list_info(prefix)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _close(client: Any) -> None:
    try:
        client.close()
    except Exception:  # noqa: BLE001 - closing is best effort
        pass


class CommittedReader:
    """`reader(resource) -> StorageView`; keeps S3 clients per (endpoint, region, addressing, credentials)
    between passes and runs, in a bounded LRU cache.

    Not one per run: even over the shared botocore model a client costs ~15 ms of CPU and ~0.4 MB; a Store over
    a shared client is a few attributes; clients are thread-safe. Reads are bounded (READ_TIMEOUTS, READ_LIMITS;
    controller.storage_reads runs them off the pass workers under a deadline). A run's credentials are held by the
    scrubber while a run of the namespace uses that Secret, and let go with the last one (`forget`).
    """

    def __init__(self, settings: Settings, read_secret: Callable[[str, str], dict[str, str]],
                 max_clients: int = MAX_CLIENTS, limits: ReadLimits = READ_LIMITS,
                 get_resource: Optional[Callable[[str, str], Optional[dict]]] = None,
                 runs: Optional[Runs] = None) -> None:
        self.settings = settings
        self.read_secret = read_secret
        self.get_resource = get_resource  # whether a marker's run still exists (adopting a deleted run's prefix)
        self.clients = ClientCache(max_clients)
        self.limits = limits
        # (uid, uri) whose owner marker this process has read as ours: claimed once, not on every resync.
        self._claimed: set[tuple[str, str]] = set()
        # (uid, uri) -> (listing of tasks/, the StorageView read with it), least recently used first.
        self._views: OrderedDict[tuple, tuple[tuple, StorageView]] = OrderedDict()
        self._lock = threading.Lock()
        # (uid, generation) -> the validated spec.storage and (index, name) of its tasks (~2 ms to validate)
        self._specs: dict[tuple, tuple[StorageSpec, tuple[tuple[int, str], ...]]] = {}
        # The runs it reads for: each one's Secret (RunState.secret) is let go with the last run that uses it.
        self.runs = runs if runs is not None else Runs()
        self.runs.on_forget(self._release)

    def __call__(self, resource: dict) -> StorageView:
        meta = resource["metadata"]
        version = (meta.get("uid"), meta.get("generation"))  # the spec changes only with the generation
        known = self._specs.get(version) if all(version) else None
        if known is None:
            try:
                spec = validate_resource(resource, "cluster").spec
            except SpecError:
                return StorageView()  # the planner reports the invalid spec; nothing to read
            known = (spec.storage, tuple((i, t.name) for i, t in enumerate(spec.tasks, start=1)))
            if all(version):
                if len(self._specs) >= MAX_VIEWS:
                    self._specs.clear()
                self._specs[version] = known
        storage, names = known
        refused = self.settings.unsigned_refusal(storage, meta["namespace"])
        if refused:
            return StorageView(conflict=refused)
        internal = tenancy.resolved_problem(storage.endpoint, tenancy.TenantPolicy.from_env())
        if internal:  # a name that resolves to an internal address here: nothing is sent (the marker's PUT included)
            return StorageView(error=internal, reason=problems.NOT_ALLOWED)
        if storage.secret_ref:
            self.runs.of((meta["namespace"], meta["name"])).secret = (meta["namespace"], storage.secret_ref)
        try:
            store = self._store(storage, meta["namespace"])
            key = (meta.get("uid"), storage.uri)
            tasks = None
            if meta.get("uid") and key not in self._claimed:
                # One listing shows the owner marker and holds tasks/: a fresh run costs it and the marker's
                # conditional write, a run claimed before this process started it and a read of the marker.
                listed = store.list_key_and_dir(OWNER, layout.TASKS)
                tasks = [info for info in listed if info.key != OWNER]
                conflict, new = claim(store, meta["uid"], meta["namespace"], meta["name"],
                                      listed=len(tasks) < len(listed), may_adopt=self._adoption(resource))
                if not conflict:
                    conflict = model_conflict(lambda uri: self._store(storage, meta["namespace"], uri),
                                              storage_model(resource), meta["uid"])
                if conflict:
                    return StorageView(conflict=scrub(conflict)[:1000])
                if new and tasks:
                    log.warning("%s holds tasks but no %s: adopted by %s/%s", storage.uri, OWNER,
                                meta["namespace"], meta["name"])
                if len(self._claimed) >= MAX_CLAIMS:
                    self._claimed.clear()
                self._claimed.add(key)
            return self._committed(key, store, names, tasks)
        except Exception as exc:  # noqa: BLE001 - storage down, bad credentials, missing secret: report, retry
            reason, message = problems.explain(exc, storage, s3client.budget() or READ_DEADLINE)
            message = scrub(message)[:problems.MAX_MESSAGE]
            log.warning("%s/%s: %s: %s", meta["namespace"], meta["name"], reason, message)
            return StorageView(error=message, reason=reason)

    def _committed(self, claim: tuple, store: Store, names: tuple[tuple[int, str], ...],
                   tasks: Optional[list] = None) -> StorageView:
        """Committed results and the uncommitted tasks' resume markers, read again only when the listing of
        tasks/ changed (keys and sizes): a pass costs one listing (`tasks`, when the caller made it), and an
        unchanged run gets the very same StorageView back (reconcile skips it)."""
        if tasks is None:
            tasks = store.list_info(layout.TASKS)
        listing = tuple(sorted((info.key, info.size) for info in tasks))
        with self._lock:
            cached = self._views.get(claim)
            if cached is not None and cached[0] == listing:
                self._views.move_to_end(claim)
                return cached[1]
        committed, damaged = load_committed_report(_Listed(store, tasks))  # type: ignore[arg-type]
        resumed = read_markers(store, (info.key for info in tasks), [t for t in names if t[0] not in committed])
        view = StorageView(committed=committed, damaged=damaged, resumed=resumed)
        with self._lock:
            self._views[claim] = (listing, view)
            while len(self._views) > MAX_VIEWS:
                self._views.popitem(last=False)
        return view

    def _adoption(self, resource: dict) -> Optional[Callable[[dict], bool]]:
        """With the adopt-prefix annotation: a check that a marker's run was of this namespace and is gone."""
        meta = resource["metadata"]
        if str((meta.get("annotations") or {}).get(ADOPT_ANNOTATION, "")).lower() != "true" or not self.get_resource:
            return None

        def gone(marker: dict) -> bool:
            name = marker.get("name")
            if marker.get("namespace") != meta["namespace"] or not isinstance(name, str) or not _NAME.match(name):
                return False
            current = self.get_resource(meta["namespace"], name)  # type: ignore[misc]
            return current is None or (current.get("metadata") or {}).get("uid") != marker.get("uid")
        return gone

    def _store(self, storage: StorageSpec, namespace: str, uri: Optional[str] = None) -> Store:
        creds = None
        if storage.secret_ref:
            try:
                data = self.read_secret(namespace, storage.secret_ref)
            except Exception as exc:  # noqa: BLE001 - told apart by status: missing, forbidden, API down
                raise problems.secret_problem(exc, namespace, storage.secret_ref) from None
            missing = [k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not data.get(k)]
            if missing:
                raise problems.missing_keys(namespace, storage.secret_ref, missing)
            # Only the values used, held while a run of the namespace reads with this Secret (not every key of
            # it, and not forever: a Secret of 20,000 keys cost every later log line 28 ms, issue 26).
            hold_secrets((namespace, storage.secret_ref), (data["AWS_ACCESS_KEY_ID"], data["AWS_SECRET_ACCESS_KEY"],
                                                           data.get("AWS_SESSION_TOKEN")))
            creds = Credentials(data["AWS_ACCESS_KEY_ID"], data["AWS_SECRET_ACCESS_KEY"],
                                data.get("AWS_SESSION_TOKEN") or None)
        elif storage.endpoint and storage.endpoint != self.settings.storage_endpoint:
            # A tenant's own endpoint without secretRef: never sign for it with the operator's identity, which
            # would hand the operator's key id and session token to whoever runs that endpoint.
            creds = Credentials("anonymous", "anonymous")
        # The operator's storage defaults are already in the spec (reconcile.effective_resource).
        effective = storage.model_copy(update={"uri": uri}) if uri else storage
        if not effective.uri.startswith("s3://"):
            return open_store_for_spec(effective)  # a local directory (`cpt run`): nothing worth sharing
        fingerprint = hashlib.sha256(repr((creds.access_key_id, creds.secret_access_key, creds.session_token)
                                          if creds else "").encode()).hexdigest()
        key = (effective.endpoint, effective.region, effective.path_style, fingerprint)
        extra = {"credentials": creds} if creds else {}
        client = self.clients.get(key, lambda: open_store_for_spec(effective, timeouts=READ_TIMEOUTS,
                                                                   max_pool_connections=READ_POOL, **extra).client)
        return open_store_for_spec(effective, client=client, retry=READ_RETRY, limits=self.limits)

    def _release(self, state: RunState) -> None:
        """The run is forgotten (Runs.forget): its Secret's values are let go when no other run reads with it."""
        if state.secret is not None and all(other.secret != state.secret for other in self.runs.states()):
            release_secrets(state.secret)

    def close(self) -> None:
        self.clients.close()


def storage_model(resource: dict) -> str:
    model = (resource.get("spec") or {}).get("model")
    return model if isinstance(model, str) else ""
