"""List-then-watch streams over the kubernetes client, read in a thread per stream, consumed in the event loop.

What client-go's reflector does, and what kopf does for its own watches, in the few parts the informer needs:
a chunked LIST (server-side labelSelector), then a WATCH from the listing's resourceVersion with bookmarks; a
watch that ends (the server's timeoutSeconds, a dropped connection, 70 s of silence) is re-opened from the last
resourceVersion seen, without a re-list; 410 Gone (the version was compacted away) re-lists. Failed requests
(5xx, 429, connection errors) are retried after growing `backoffs`; then, and for any other error (404: the kind
is not served, 403), the stream raises and its caller decides when to try again.

Why not kopf's own streams: they are kopf's internal API (`kopf._cogs`), which any kopf release may change. The
kubernetes client blocks, so each stream reads in a daemon thread of its own and hands each chunk of events to
the event loop in one `call_soon_threadsafe`: events of one stream arrive in the order the server sent them.
Each stream has its own `rest.client.USER_AGENT`-like name (`WATCH_AGENT`), apart from the REST client's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, Optional, Union

import kubernetes
import urllib3

from cpt_operator import __version__
from cpt_operator.kube.rest.paths import collection_path

log = logging.getLogger(__name__)
WATCH_AGENT = f"cpt-operator-watch/{__version__}"
LISTED = "LISTED"  # in a stream: the (re-)listing before it is complete; watch events follow
PAGE = 500  # objects per LIST request (continue tokens for the rest)
INACTIVITY = 70.0  # seconds without a byte (API servers send a bookmark a minute) before a watch is re-opened
CONNECT = 10.0  # seconds to connect
RECONNECT = 0.1  # seconds between a watch that ended and the next one
RETRYABLE = frozenset({0, 429, 500, 502, 503, 504})  # 0: no HTTP reply (connection refused, reset, timed out)

Item = Union[str, dict]  # LISTED, or {"type": None (a listed object) | ADDED | MODIFIED | DELETED, "object": ...}


class WatchError(Exception):
    """A request of the stream failed for good: `status` (0 without an HTTP reply) and the server's words."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status


class _Gone(Exception):
    """410: the resourceVersion was compacted away; list again."""


class Watcher:
    """Opens streams over one ApiClient (its own connection pool: a stream holds a connection while it waits)."""

    def __init__(self, client: kubernetes.client.ApiClient, server_timeout: float,
                 backoffs: tuple[float, ...] = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2)) -> None:
        self.client = client
        self.client.user_agent = WATCH_AGENT
        self.server_timeout = server_timeout
        self.backoffs = backoffs

    @classmethod
    def connect(cls, configuration: kubernetes.client.Configuration, server_timeout: float,
                backoffs: tuple[float, ...]) -> "Watcher":
        configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 0, 64)
        return cls(kubernetes.client.ApiClient(configuration=configuration), server_timeout, backoffs)

    def close(self) -> None:
        self.client.close()

    async def stream(self, api_version: str, plural: str, namespace: Optional[str],
                     selector: str = "") -> AsyncIterator[Item]:
        """Every object listed (type None), LISTED, then the watch events; after a 410, the same again. Forever,
        until the consumer stops iterating (its thread then ends) or a request fails for good (raised here)."""
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue = asyncio.Queue()

        def deliver(batch: Union[list, BaseException]) -> None:
            try:
                loop.call_soon_threadsafe(inbox.put_nowait, batch)
            except RuntimeError:  # the loop is closed: the operator stopped
                reader.stopped.set()

        reader = _Reader(self, collection_path(api_version, plural, namespace), selector, deliver)
        thread = threading.Thread(target=reader.run, daemon=True, name=f"cpt-watch-{plural}-{namespace or 'all'}")
        thread.start()
        try:
            while True:
                batch = await inbox.get()
                if isinstance(batch, BaseException):
                    raise batch
                for item in batch:
                    yield item
        finally:
            reader.stop()


class _Reader:
    """One stream's thread: list, watch, re-watch, re-list; hands batches to `deliver` until stopped."""

    def __init__(self, watcher: Watcher, path: str, selector: str,
                 deliver: Callable[[Union[list, BaseException]], None]) -> None:
        self.watcher, self.path, self.selector, self.deliver = watcher, path, selector, deliver
        self.stopped = threading.Event()
        self._response: Optional[urllib3.HTTPResponse] = None
        self._lock = threading.Lock()

    def stop(self) -> None:
        """From the loop: end the thread; a read blocked on the socket is woken by shutting the socket down."""
        self.stopped.set()
        with self._lock:
            response = self._response
        if response is not None:
            try:
                response.shutdown()
            except Exception:  # noqa: BLE001 - already closed
                pass

    def run(self) -> None:
        try:
            while not self.stopped.is_set():
                version = self._list()
                try:
                    self._watch(version)
                except _Gone:
                    log.debug("%s: 410 Gone, listing again", self.path)
        except Exception as exc:  # noqa: BLE001 - the consumer logs it and decides when to try again
            if not self.stopped.is_set():
                self.deliver(exc)

    # ------------------------------------------------------------------ requests
    def _query(self, **params: Any) -> list[tuple[str, Any]]:
        query = [(k, v) for k, v in params.items() if v not in (None, "")]
        return query + ([("labelSelector", self.selector)] if self.selector else [])

    def _open(self, query: list[tuple[str, Any]], read_timeout: float) -> urllib3.HTTPResponse:
        """One GET, retried after `backoffs` while the failure is one a wait can cure."""
        for attempt, backoff in enumerate((*self.watcher.backoffs, None)):
            if self.stopped.is_set():
                raise WatchError(0, "stopped")
            try:
                return self.watcher.client.call_api(
                    self.path, "GET", query_params=query, header_params={"Accept": "application/json"},
                    auth_settings=["BearerToken"], _return_http_data_only=True, _preload_content=False,
                    _request_timeout=(CONNECT, read_timeout))
            except kubernetes.client.ApiException as exc:
                status, message = exc.status or 0, _message(exc)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                status, message = 0, f"{type(exc).__name__}: {exc}"
            if status == 410:
                raise _Gone()
            if status not in RETRYABLE or backoff is None:
                raise WatchError(status, message)
            log.debug("%s: attempt %d failed (%s %s), again in %.1fs", self.path, attempt + 1, status, message,
                      backoff)
            self.stopped.wait(backoff)
        raise AssertionError("unreachable")

    def _list(self) -> str:
        """Every object, page by page, then LISTED; returns the listing's resourceVersion."""
        token, version = None, ""
        while True:
            response = self._open(self._query(limit=PAGE, **{"continue": token}), 60.0)
            try:
                listing = json.loads(response.data or b"{}")
            finally:
                response.release_conn()
            meta = listing.get("metadata") or {}
            version, token = meta.get("resourceVersion") or version, meta.get("continue")
            batch: list = [{"type": None, "object": obj} for obj in listing.get("items") or []]
            if not token:
                self.deliver([*batch, LISTED])
                return version
            self.deliver(batch)

    def _watch(self, version: str) -> None:
        """Watch from `version`, re-opened from the last version seen whenever a stream ends; 410 raises _Gone."""
        while not self.stopped.is_set():
            query = self._query(watch="true", allowWatchBookmarks="true", resourceVersion=version,
                                timeoutSeconds=str(int(self.watcher.server_timeout)))
            response = self._open(query, INACTIVITY)
            with self._lock:
                self._response = response
            try:
                version = self._read(response, version)
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
                if not self.stopped.is_set():
                    log.debug("%s: watch ended: %s: %s", self.path, type(exc).__name__, exc)
            finally:
                with self._lock:
                    self._response = None
                response.release_conn()
            self.stopped.wait(RECONNECT)

    def _read(self, response: urllib3.HTTPResponse, version: str) -> str:
        """Deliver the stream's events a chunk at a time; returns the last resourceVersion seen."""
        rest = b""
        for chunk in response.stream(amt=None, decode_content=False):
            if self.stopped.is_set():
                break
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            batch = []
            for line in lines:
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        self.deliver(batch)
                        raise _Gone()
                    raise WatchError(int(obj.get("code") or 0), str(obj.get("message") or obj))
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    batch.append(event)
            if batch:
                self.deliver(batch)
        return version


def _message(exc: kubernetes.client.ApiException) -> str:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    return str(body.get("message") or exc.reason or "")
