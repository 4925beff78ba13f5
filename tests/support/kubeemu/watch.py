"""The strict emulator's event log and watch streams (a mixin of StrictEmulator, whose attrs fields it uses:
_rv, _log, _log_first_rv, _changed, _drop_epoch, bookmark_seconds, stats).

Real watch semantics: resume from a resourceVersion, synthetic ADDED only when none is given, 410 Expired for a
compacted version, server-side timeoutSeconds, a BOOKMARK a minute on a quiet stream; and the test's levers,
dropped watches and an expired (compacted) log.
"""

from __future__ import annotations

import asyncio
import json
from typing import Optional

import aiohttp.web
import kmock
from kmock._internal import rendering

from . import semantics as sem

LOG_LIMIT = 20000  # watch events kept for resuming; older resourceVersions get 410 Expired


class WatchStreams:
    __slots__ = ()

    def drop_watches(self) -> None:
        """Close every open watch stream (the clients must re-list/re-watch)."""
        self._drop_epoch += 1
        self._notify()

    def expire_watches(self) -> None:
        """Compact the event log: every open watch ends and a re-watch from its last resourceVersion gets 410
        Expired (the client must re-list), as after an API server's etcd compaction."""
        self._log_first_rv = self._rv
        self._log = []
        self.drop_watches()

    def _notify(self) -> None:
        """Wake every watch waiting for a change (each waits on the event current when it started waiting)."""
        self._changed.set()
        self._changed = asyncio.Event()

    def _record(self, res: kmock.resource, etype: str, raw: dict) -> None:
        self._log.append((self._rv, res, {"type": etype, "object": json.loads(json.dumps(raw))}))
        if len(self._log) > LOG_LIMIT:
            dropped = self._log[: len(self._log) - LOG_LIMIT]
            self._log = self._log[len(dropped):]
            self._log_first_rv = dropped[-1][0]

    # ------------------------------------------------------------------ watch streams
    async def _watch(self, request: rendering.Request, path: sem.Path, info: kmock.ResourceInfo):
        params = request.params
        res = kmock.resource(path.group, path.version, path.plural)
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request._raw_request)
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None
        epoch = self._drop_epoch
        bookmarks = str(params.get("allowWatchBookmarks", "")).lower() == "true"
        pending, position = self._watch_start(path, params)
        quiet_since = loop.time()  # the last write to this stream (events of other kinds do not count)
        try:
            while True:
                for event in pending:
                    await response.write(json.dumps(event).encode() + b"\n")
                    quiet_since = loop.time()
                if position is None:
                    break
                while position >= len(self._log) and self._drop_epoch == epoch:
                    transport = request._raw_request.transport
                    if (deadline is not None and loop.time() >= deadline) or transport is None \
                            or transport.is_closing():
                        break
                    if bookmarks and loop.time() - quiet_since >= self.bookmark_seconds:
                        # As the real API server does about once a minute: the client knows the stream is
                        # alive (kopf re-opens a stream silent for 70 s) and where to resume.
                        await response.write(json.dumps({"type": "BOOKMARK", "object": {
                            "kind": info.kind, "apiVersion": f"{path.group}/{path.version}" if path.group
                            else path.version, "metadata": {"resourceVersion": str(self._rv)}}}).encode() + b"\n")
                        quiet_since = loop.time()
                    try:  # Event.wait holds nothing, so a cancel here (client gone) leaves no state behind
                        await asyncio.wait_for(self._changed.wait(), 0.5)
                    except asyncio.TimeoutError:
                        pass
                if self._drop_epoch != epoch:
                    self.stats.watches_dropped += 1
                    break
                if position >= len(self._log):
                    break  # timed out or the client went away
                pending = [event for _, r, event in self._log[position:]
                           if r == res and sem.object_matches(path, params, event["object"])]
                position = len(self._log)
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away
        return response

    def _watch_start(self, path: sem.Path, params: dict) -> tuple[list[dict], Optional[int]]:
        """The first events of a watch and its position in the log (None: the stream ends after them)."""
        since = params.get("resourceVersion") or "0"
        if since == "0":
            return [{"type": "ADDED", "object": json.loads(json.dumps(o))}
                    for o in self._matching(path, params)], len(self._log)
        if int(since) < self._log_first_rv:
            self.stats.watches_expired += 1
            return [{"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                                 "code": 410, "reason": "Expired",
                                                 "message": f"too old resource version: {since}"}}], None
        return [], next((i for i, (rv, _, _) in enumerate(self._log) if rv > int(since)), len(self._log))
