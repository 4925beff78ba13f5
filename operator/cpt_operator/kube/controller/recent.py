"""Our own writes' replies, standing in for the watch-fed cache until it has caught up (what the next pass reads).

The watches deliver this operator's writes a moment after the server answered them. A pass right after a
create would otherwise not see its child (and create it again: a harmless 409, names are deterministic) and a
pass right after a status write would decide from the status it already replaced. So the server's replies are
kept in the run's state (RunState.replies, .status_reply) for at most `ttl` seconds, and win over an older cached
copy; a newer watch event, a deletion the watch delivered, or a re-listing that does not hold the object ends
them. Thread-safe: passes write from their threads, the watch's events arrive in the loop.
"""

from __future__ import annotations

import threading
import time
from typing import Optional

from cpt_operator.kube.controller.apply import Applied
from cpt_operator.kube.controller.state import RunKey, Runs
from cpt_operator.kube.observe import newer, slim_child

RECENT_TTL = 60.0  # seconds a reply to our own write stands in for a watch event that has not come yet


class Recent:
    """The server's replies to this operator's writes, per run, until the watch-fed cache has caught up."""

    def __init__(self, ttl: float = RECENT_TTL, runs: Optional[Runs] = None) -> None:
        self.ttl = ttl
        self.runs = runs if runs is not None else Runs()
        self._lock = threading.Lock()

    def remember(self, namespace: str, name: str, applied: Applied) -> None:
        state = self.runs.of((namespace, name))
        now = time.monotonic()
        until = now + self.ttl
        with self._lock:
            gone = state.gone
            for key, (expires, _) in list(gone.items()):
                if expires < now:
                    del gone[key]
            for reply in applied.replies:
                child = slim_child(reply)
                key = (child["kind"], child["metadata"].get("name", ""))
                deleted = gone.get(key)
                if deleted is not None and not newer(child, deleted[1]):
                    continue  # the watch saw this version (or a later one) deleted already
                state.replies[key] = (until, child)
            reply = applied.status_reply
            if reply is not None:  # only what stands in for the cached copy: identity, version, status
                meta = reply.get("metadata") or {}
                state.status_reply = (until, {
                    "metadata": {"uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion")},
                    "status": reply.get("status") or {}})

    def resource(self, namespace: str, name: str, resource: dict) -> dict:
        """`resource` with the status of our last status write if the cached copy is older than that write.

        Only the status: a spec changed in between would be newer than our write, so the cache holds it."""
        state = self.runs.of((namespace, name))
        with self._lock:
            until, reply = state.status_reply or (0.0, None)
            if reply is None or until < time.monotonic() or not newer(reply, resource):
                state.status_reply = None
                return resource
        if reply["metadata"].get("uid") != resource["metadata"].get("uid"):
            return resource
        return dict(resource, status=reply["status"])

    def children(self, namespace: str, name: str, cached: dict[tuple[str, str], dict]) -> dict:
        """The cached children, each replaced by our own reply where that is newer (or not cached yet)."""
        state = self.runs.of((namespace, name))
        now = time.monotonic()
        with self._lock:
            mine = state.replies
            if not mine:
                return cached
            out = dict(cached)
            for key, (until, child) in list(mine.items()):
                seen = cached.get(key)
                if until < now or (seen is not None and not newer(child, seen)):
                    del mine[key]  # the watch has caught up (or the write is too old to matter)
                else:
                    out[key] = child
            return out

    def seen(self, namespace: str, run: str, child: dict, gone: bool = False) -> None:
        """The watch delivered `child` (or its deletion): a reply of ours that is not newer no longer counts."""
        state = self.runs.of((namespace, run))
        key = (child.get("kind") or "", (child.get("metadata") or {}).get("name", ""))
        with self._lock:
            mine = state.replies
            if key in mine and (gone or not newer(mine[key][1], child)):
                del mine[key]
            if gone:
                state.gone[key] = (time.monotonic() + self.ttl, child)

    def listed(self, kind: str, namespace: Optional[str], present: set[tuple[str, str]]) -> list[RunKey]:
        """A (re-)listing of `kind` in `namespace` (None: all) returned `present`: our replies for objects of that
        kind it does not hold no longer count. Returns the runs that lost one (to be looked at again)."""
        touched = []
        with self._lock:
            for state in self.runs.states():
                ns = state.key[0]
                if namespace is not None and ns != namespace:
                    continue
                stale = [key for key in state.replies if key[0] == kind and (ns, key[1]) not in present]
                for key in stale:
                    del state.replies[key]
                if stale:
                    touched.append(state.key)
        return touched
