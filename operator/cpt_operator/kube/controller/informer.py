"""Watch-fed caches of the operator's children: one list-then-watch stream per child kind (and namespace), read
through the REST layer's streams (rest/watch.py: chunked listing, resourceVersion continuation, bookmarks, 410
re-listing, reconnect backoff), and no per-event handler machinery.

Why not kopf's indexes or handlers: kopf handles every watch event of every object through its generic reactor
(a worker task and queue per object, a body view, a patch, a logger, handler kwargs built per handler), about a
fifth of the operator's CPU when 1,000 runs start at once (bench/operator_scale/RESULTS.md, step 4); and it
watches every object of the kind, filtering labels client-side. Here the API server filters (labelSelector
`cpt.dev/run`) and an event costs a slim copy and a dict update.

Children are keyed by (namespace, run label). `on_change(kind, old, new)` sees every change (new None: gone),
in the event loop, in the order each stream delivered them; the caller (controller.wake) decides which changes
wake a run. Passes wait for `synced`: every stream has listed once, so a restarted operator never plans from an
empty cache. A re-listing (after a 410 or a broken stream) drops what it no longer returns, as a deletion, and
is reported to `on_listed`. No kopf: `stream_of` is any function that opens such a stream (tests pass their own).
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Optional, Union

from cpt_operator.kube import manifests
from cpt_operator.kube.observe import KINDS, owned_by, slim_child
from cpt_operator.kube.rest.watch import LISTED, WatchError

log = logging.getLogger(__name__)
Key = tuple[str, str, str]  # (kind, namespace, name)
OnChange = Callable[[str, Optional[dict], Optional[dict]], None]
# (kind, namespace or None for all, the (namespace, name)s the re-listing returned): called at every listing, so
# that whatever stands in for the cache (a write's reply whose watch event never came) can be checked against it.
OnListed = Callable[[str, Optional[str], set[tuple[str, str]]], None]
# (apiVersion, plural, namespace or None, labelSelector) -> the stream's items (rest.watch.Watcher.stream)
StreamOf = Callable[[str, str, Optional[str], str], AsyncIterator[Union[str, dict]]]
RETRY_S = 10.0  # a stream that failed (forbidden, kind not served) is tried again this often


def specific_namespaces(patterns: Iterable[str]) -> set[str]:
    """The patterns that name one namespace each (no glob, no negation)."""
    return {p for p in patterns if not any(c in p for c in "!*?,")}


def match_namespace(name: str, pattern: str) -> bool:
    """kopf's namespace patterns: comma-separated globs, `!glob` excludes, a leading exclusion implies `*`; the
    first inclusive glob matches, later ones only re-admit what the first admitted and an exclusion removed."""
    globs = [glob.strip() for glob in pattern.split(",")]
    if not globs or globs[0].startswith("!"):
        globs.insert(0, "*")
    matches = first = fnmatch.fnmatch(name, globs[0])
    for glob in globs[1:]:
        if glob.startswith("!"):
            matches = matches and not fnmatch.fnmatch(name, glob.lstrip("!"))
        else:
            matches = matches or (first and fnmatch.fnmatch(name, glob))
    return matches


class ChildCache:
    """Slim copies (observe.slim_child) of every child by (kind, namespace, name), indexed by run."""

    def __init__(self, on_change: Optional[OnChange] = None) -> None:
        self.objects: dict[Key, dict] = {}
        self.runs: dict[tuple[str, str], set[Key]] = {}
        self.on_change = on_change

    def put(self, kind: str, obj: dict) -> None:
        meta = obj.get("metadata") or {}
        run = (meta.get("labels") or {}).get(manifests.LABEL_RUN)
        key = (kind, meta.get("namespace") or "", meta.get("name") or "")
        if run is None:  # the label was removed: no longer a child of any run
            self.drop(key)
            return
        child = slim_child(obj, kind)
        old = self.objects.get(key)
        if old is not None and (old["metadata"].get("labels") or {}).get(manifests.LABEL_RUN) != run:
            self._unindex(key, old)
        self.objects[key] = child
        self.runs.setdefault((key[1], run), set()).add(key)
        if self.on_change is not None:
            self.on_change(kind, old, child)

    def drop(self, key: Key) -> None:
        old = self.objects.pop(key, None)
        if old is None:
            return
        self._unindex(key, old)
        if self.on_change is not None:
            self.on_change(key[0], old, None)

    def _unindex(self, key: Key, old: dict) -> None:
        run_key = (key[1], (old["metadata"].get("labels") or {}).get(manifests.LABEL_RUN))
        members = self.runs.get(run_key)
        if members is not None:
            members.discard(key)
            if not members:
                del self.runs[run_key]

    def children(self, namespace: str, run: str, uid: Optional[str]) -> dict[tuple[str, str], dict]:
        """The run's children by (kind, name), those owned by this uid (a same-named earlier run's are not)."""
        out = {}
        for key in self.runs.get((namespace, run), ()):
            child = self.objects[key]
            if owned_by(child, uid):
                out[(key[0], key[2])] = child
        return out

    def keys(self, kind: str, namespace: Optional[str]) -> set[Key]:
        return {k for k in self.objects if k[0] == kind and (namespace is None or k[1] == namespace)}


class Informer:
    """Streams of every child kind in the operator's namespaces into one ChildCache.

    namespaces: () for the whole cluster, else names or kopf-style globs (`team-*`, `!kube-*`); with globs the
    Namespace objects are watched too and a namespace's streams start and stop as it appears and goes."""

    def __init__(self, stream_of: StreamOf, kinds: Iterable[str], namespaces: Iterable[str] = (),
                 on_change: Optional[OnChange] = None, optional: Iterable[str] = (),
                 on_listed: Optional[OnListed] = None) -> None:
        self.stream_of = stream_of
        self.on_listed = on_listed
        self.kinds = tuple(kinds)
        # Kinds whose stream may fail for good (refused, 403) without holding passes back: the other job backend's.
        self.optional = frozenset(optional)
        self.patterns = tuple(namespaces)
        self.cache = ChildCache(on_change)
        self.synced = asyncio.Event()
        self._streams: dict[tuple[str, Optional[str]], asyncio.Task] = {}
        self._pending: set[tuple[str, Optional[str]]] = set()  # streams that have not listed yet
        self._root: Optional[asyncio.Task] = None

    def start(self) -> None:
        specific = specific_namespaces(self.patterns)
        if not self.patterns:
            self._open(None)
        elif len(specific) == len(self.patterns):
            for namespace in sorted(specific):
                self._open(namespace)
        else:
            self._pending.add(("Namespace", None))
            self._root = asyncio.create_task(self._namespaces(), name="cpt-informer-namespaces")
        self._check_synced()

    async def stop(self) -> None:
        tasks = [*self._streams.values(), *([self._root] if self._root else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._streams.clear()

    def _open(self, namespace: Optional[str]) -> None:
        for kind in self.kinds:
            if (kind, namespace) not in self._streams:
                self._pending.add((kind, namespace))
                self._streams[(kind, namespace)] = asyncio.create_task(
                    self._stream(kind, namespace), name=f"cpt-informer-{kind}-{namespace or 'all'}")

    def _close(self, namespace: str) -> None:
        for kind in self.kinds:
            task = self._streams.pop((kind, namespace), None)
            if task is not None:
                task.cancel()
            self._pending.discard((kind, namespace))
            for key in self.cache.keys(kind, namespace):
                self.cache.drop(key)
        self._check_synced()

    def _listed(self, stream: tuple[str, Optional[str]]) -> None:
        self._pending.discard(stream)
        self._check_synced()

    def _check_synced(self) -> None:
        if not self._pending and not self.synced.is_set():
            log.info("children cache filled: %d objects of %s", len(self.cache.objects), ", ".join(self.kinds))
            self.synced.set()

    async def _forever(self, what: str, once: Callable[[], Awaitable[None]],
                       not_served: Optional[Callable[[], None]] = None,
                       failed: Optional[Callable[[], None]] = None) -> None:
        """Run a stream again and again; a failure is logged and retried after RETRY_S, never fatal."""
        while True:
            try:
                await once()
            except asyncio.CancelledError:
                raise
            except WatchError as exc:
                if exc.status != 404:
                    log.error("watching %s failed: %s; again in %.0fs", what, exc, RETRY_S)
                    if failed is not None:
                        failed()
                else:
                    log.warning("%s is not served by the API server; watching it again in %.0fs", what, RETRY_S)
                    if not_served is not None:
                        not_served()
            except Exception as exc:  # noqa: BLE001 - a bug: log, retry; passes wait if never listed
                log.error("watching %s failed: %s: %s; again in %.0fs", what, type(exc).__name__, exc, RETRY_S)
                if failed is not None:
                    failed()
            await asyncio.sleep(RETRY_S)

    async def _stream(self, kind: str, namespace: Optional[str]) -> None:
        """One kind in one namespace (or all). A kind not served (its CRD missing) cannot hold objects: its
        creates will fail and say so on the run; it does not hold every pass back."""
        listed = lambda: self._listed((kind, namespace))  # noqa: E731
        await self._forever(f"{kind} in {namespace or 'all namespaces'}", lambda: self._follow(kind, namespace),
                            listed, listed if kind in self.optional else None)

    async def _follow(self, kind: str, namespace: Optional[str]) -> None:
        api_version, plural = KINDS[kind]
        listing: Optional[set[Key]] = None
        async for item in self.stream_of(api_version, plural, namespace, manifests.LABEL_RUN):
            if item == LISTED:
                for key in self.cache.keys(kind, namespace) - (listing or set()):
                    self.cache.drop(key)  # deleted while the stream was down
                if self.on_listed is not None:
                    self.on_listed(kind, namespace, {(k[1], k[2]) for k in listing or ()})
                listing = None
                self._listed((kind, namespace))
                continue
            event_type, obj = item.get("type"), item.get("object") or {}
            meta = obj.get("metadata") or {}
            key = (kind, meta.get("namespace") or "", meta.get("name") or "")
            if event_type == "DELETED":
                self.cache.drop(key)
                continue
            if event_type is None:  # a (re-)listing
                listing = set() if listing is None else listing
                listing.add(key)
            self.cache.put(kind, obj)

    async def _namespaces(self) -> None:
        """With globs: follow the Namespace objects, a stream set per matching namespace."""
        await self._forever("namespaces", self._follow_namespaces)

    async def _follow_namespaces(self) -> None:
        listing: Optional[set[str]] = None
        async for item in self.stream_of("v1", "namespaces", None, ""):
            if item == LISTED:
                for namespace in {ns for _, ns in self._streams if ns} - (listing or set()):
                    self._close(namespace)
                listing = None
                self._listed(("Namespace", None))
                continue
            name = ((item.get("object") or {}).get("metadata") or {}).get("name")
            if not name or not any(match_namespace(name, p) for p in self.patterns):
                continue
            if item.get("type") == "DELETED":
                self._close(name)
                continue
            if item.get("type") is None:
                listing = set() if listing is None else listing
                listing.add(name)
            self._open(name)
