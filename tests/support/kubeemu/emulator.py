"""A strict Kubernetes API emulator: kmock 0.8 (pinned) with the semantics the operator's tests rely on.

kmock 0.8's KubernetesEmulator is too lenient to prove idempotency. This subclass keeps
kmock's server, request log, discovery endpoints and `objects` array, and replaces the object handling:

- uid, resourceVersion (one global counter), generation (bumped on spec changes), creationTimestamp;
- 409 AlreadyExists on create of an existing name, 409 Conflict on a stale metadata.resourceVersion;
- `/status` separate from the object for resources declared with the `status` subresource (status is dropped
  on create and ignored on main-endpoint writes; the status endpoint only changes status);
- merge patches (RFC 7386; strategic merge is treated as merge), JSON patch, PUT (replace);
- label and field selectors on list and watch; name and label-value validation (422);
- finalizers + deletionTimestamp; ownerReference garbage collection (background propagation);
- watch streams with real semantics (watch.py): resume from a resourceVersion, synthetic ADDED only when none is given,
  410 Expired for a compacted version, server-side timeoutSeconds, a BOOKMARK a minute on a quiet stream;
- injectable faults, rejected or applied-then-failed (reply lost), dropped and expired (410) watches;
- lists shaped for kubectl (kind `<Kind>List`, apiVersion, metadata.resourceVersion).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import random
import string
import uuid
from typing import Any, Optional

import aiohttp.web
import attrs
import kmock
from kmock._internal import apps, rendering

from . import kmock_patch  # noqa: F401  (fixes kmock 0.8's path parser before use)
from . import semantics as sem
from .faults import Fault, Stats  # noqa: F401  (Fault is re-exported by the package)
from .watch import LOG_LIMIT, WatchStreams  # noqa: F401

assert kmock.__version__.startswith("0.8"), "tests/support/kubeemu is written against kmock==0.8"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(status: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=status, reason=reason, message=message, details=details or {})


@attrs.define(kw_only=True)
class StrictEmulator(WatchStreams, kmock.KubernetesEmulator):
    faults: list = attrs.field(factory=list)
    stats: Stats = attrs.field(factory=Stats)
    _rv: int = attrs.field(default=0, init=False)
    _log: list = attrs.field(factory=list, init=False)  # (rv, plural-resource, event)
    _log_first_rv: int = attrs.field(default=0, init=False)
    # Set (and replaced) on every change. Deliberately no asyncio.Lock/Condition: all state lives in one loop and
    # every mutation is synchronous, and the test server cancels handlers on disconnect; a cancel landing inside
    # wait_for(Condition.wait()) could leave the lock held by a finished task and hang every later request.
    _changed: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)
    _drop_epoch: int = attrs.field(default=0, init=False)
    # A quiet watch that asked for bookmarks gets one this often (seconds), like a real API server's.
    bookmark_seconds: float = attrs.field(default=60.0)

    # ------------------------------------------------------------------ public helpers (call in the loop)
    # (drop_watches and expire_watches: WatchStreams, watch.py)
    def declare(self, group_version: str, plural: str, kind: str, namespaced: bool = True,
                status: bool = False, shortnames: tuple = ()) -> None:
        self.resources[f"{group_version}/{plural}"] = kmock.ResourceInfo(
            kind=kind, namespaced=namespaced, singular=kind.lower(), shortnames=set(shortnames),
            subresources={"status"} if status else set(),
            verbs={"create", "delete", "get", "list", "patch", "update", "watch"})

    def live(self, plural: str, namespace: Optional[str] = None) -> list[dict]:
        """Current objects of a resource (any group), for assertions."""
        return [obj.raw for (res, ns, _), obj in self.objects.items()
                if res.plural == plural and not obj.deleted and (namespace is None or ns == namespace)]

    async def _serve_version(self, request: rendering.Request) -> Any:
        """kmock copies short names onto `x/status` entries, which makes kubectl's short names ambiguous."""
        payload = await super()._serve_version(request)
        if payload.get("groupVersion", "").startswith("/"):  # the core group is "v1", not "/v1"
            payload["groupVersion"] = payload["groupVersion"][1:]
        for entry in payload.get("resources", []):
            if "/" in entry["name"]:
                entry.update(shortNames=[], singularName="", verbs=["get", "patch", "update"])
        return payload

    # ------------------------------------------------------------------ dispatch
    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        path = sem.parse_path(request.url.path)
        if path is None:  # discovery, /version, /openapi: kmock's scaffold serves (or 404s) them
            return await apps.RawHandler._handle(self, request)
        info = self._info(path)
        method = str(request.method.value if hasattr(request.method, "value") else request.method).upper()
        params = request.params
        if method == "GET" and str(params.get("watch", "")).lower() in ("true", "1"):
            action = "watch"
        elif method == "GET":
            action = "fetch" if path.name else "list"
        elif method == "POST" and not path.name:
            action = "create"
        elif method == "PATCH" and path.name:
            action = "update"
        elif method == "PUT" and path.name:
            action = "replace"
        elif method == "DELETE" and path.name:
            action = "delete"
        else:
            raise _error(405, "MethodNotAllowed", f"{method} {request.url.path} is not supported")
        applied_fault = self._maybe_fault(action, path, request.headers.get("User-Agent", ""))
        if action == "watch":
            return await self._watch(request, path, info)
        if action == "list":
            self.stats.lists.append((path.plural, path.namespace, params.get("fieldSelector")))
            return aiohttp.web.json_response(self._list(path, info, params))
        if action == "fetch":
            result = self._get(path).raw
        else:
            try:
                if action == "create":
                    result = self._create(path, info, request.data)
                elif action == "update":
                    result = self._update(path, info, request.data, request.headers.get("Content-Type", ""))
                elif action == "replace":
                    result = self._update(path, info, request.data, "replace")
                else:
                    result = self._delete(path, params)
            finally:
                self._notify()
        if applied_fault is not None:  # done, but the client hears an error
            self.stats.faults_applied += 1
            raise _error(applied_fault.status, "InternalError", f"injected fault after applying: {action} {path.plural}")
        return aiohttp.web.json_response(result, status=201 if action == "create" else 200)

    def _info(self, path: sem.Path) -> kmock.ResourceInfo:
        res = kmock.resource(path.group, path.version, path.plural)
        if res not in self.resources:
            raise _error(404, "NotFound", f"the server could not find the requested resource ({path.plural})")
        info = self.resources[res]
        if path.subresource and path.subresource not in info.subresources:
            raise _error(404, "NotFound", f"{path.plural} has no subresource {path.subresource!r}")
        return info

    def _maybe_fault(self, action: str, path: sem.Path, agent: str = ""):
        """Raise the first matching fault, or return it if it is applied first (the caller raises after)."""
        for fault in self.faults:
            if fault.matches(action, path, agent) and random.random() < fault.probability:
                fault.times -= 1 if fault.times > 0 else 0
                self.stats.faults_injected += 1
                if fault.applied and action in ("create", "update", "replace", "delete"):
                    return fault
                reason = {409: "Conflict", 429: "TooManyRequests"}.get(fault.status, "InternalError")
                raise _error(fault.status, reason, f"injected fault: {action} {path.plural}")

    # ------------------------------------------------------------------ storage
    def _key(self, path: sem.Path, name: Optional[str] = None):
        return (kmock.resource(path.group, path.version, path.plural), path.namespace, name or path.name)

    def _get(self, path: sem.Path, name: Optional[str] = None) -> kmock.Object:
        key = self._key(path, name)
        if key not in self.objects or self.objects[key].deleted:
            raise _error(404, "NotFound", f'{path.plural} "{name or path.name}" not found',
                         name=name or path.name, kind=path.plural)
        return self.objects[key]

    def _bump(self, obj: dict) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)

    def _namespace_exists(self, ns: str) -> bool:
        key = (kmock.resource("", "v1", "namespaces"), None, ns)
        return key in self.objects and not self.objects[key].deleted

    def _create(self, path: sem.Path, info: kmock.ResourceInfo, body: Any) -> dict:
        if not isinstance(body, dict):
            raise _error(400, "BadRequest", "the body of the request was not a JSON object")
        if path.subresource:
            raise _error(405, "MethodNotAllowed", "cannot create a subresource")
        obj = json.loads(json.dumps(body))
        meta = obj.setdefault("metadata", {})
        if info.namespaced:
            if meta.get("namespace") not in (None, path.namespace):
                raise _error(400, "BadRequest", "the namespace of the object does not match the URL")
            meta["namespace"] = path.namespace
            if not self._namespace_exists(path.namespace):
                raise _error(404, "NotFound", f'namespaces "{path.namespace}" not found')
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(random.choices(string.ascii_lowercase + "0123456789", k=5))
        name = meta.get("name")
        if not name:
            raise _error(422, "Invalid", "metadata.name: Required value")
        problems = sem.name_problems(path.plural, name) + sem.label_problems(meta.get("labels"))
        if problems:
            raise _error(422, "Invalid", f'{info.kind} "{name}" is invalid: ' + "; ".join(problems))
        key = self._key(path, name)
        if key in self.objects and not self.objects[key].deleted:
            raise _error(409, "AlreadyExists", f'{path.plural} "{name}" already exists', name=name)
        obj["apiVersion"] = f"{path.group}/{path.version}" if path.group else path.version
        obj["kind"] = info.kind
        if "status" in info.subresources:
            obj.pop("status", None)
        for k in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(k, None)
        meta.update(uid=str(uuid.uuid4()), generation=1, creationTimestamp=_now())
        self._bump(obj)
        if key in self.objects:
            self.objects[key].history.append(obj)
        else:
            self.objects[key] = obj
        self.stats.creates.append((path.plural, path.namespace, name, meta["uid"]))
        self._record(key[0], "ADDED", obj)
        return obj

    def _update(self, path: sem.Path, info: kmock.ResourceInfo, body: Any, content_type: str) -> dict:
        stored = self._get(path)
        old = stored.raw
        try:
            if content_type == "replace":
                new = json.loads(json.dumps(body))
            elif "json-patch" in content_type:
                new = sem.json_patch(old, body)
            else:  # merge-patch+json, strategic-merge-patch+json (treated as merge), apply-patch
                new = sem.merge_patch(old, body)
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise _error(422, "Invalid", f"the patch could not be applied: {exc}")
        if not isinstance(new, dict):
            raise _error(400, "BadRequest", "the result is not an object")
        sent_rv = (body.get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
        if content_type == "replace" and not sent_rv:
            raise _error(422, "Invalid", "metadata.resourceVersion: must be specified for an update")
        if sent_rv is not None and sent_rv != old["metadata"]["resourceVersion"]:
            raise _error(409, "Conflict", f'Operation cannot be fulfilled on {path.plural} "{path.name}": '
                         "the object has been modified; please apply your changes to the latest version")
        has_status = "status" in info.subresources
        if path.subresource == "status":
            new = dict(old, status=new.get("status")) if new.get("status") is not None else {
                k: v for k, v in old.items() if k != "status"}
        else:
            if has_status:
                new = {k: v for k, v in new.items() if k != "status"}
                if "status" in old:
                    new["status"] = old["status"]
            # identity fields are immutable; kubectl/kopf never change them, a buggy client would
            meta, old_meta = new.setdefault("metadata", {}), old["metadata"]
            for k in ("name", "namespace", "uid", "creationTimestamp", "generation", "deletionTimestamp"):
                if k in old_meta:
                    meta[k] = old_meta[k]
                else:
                    meta.pop(k, None)
            if old_meta.get("deletionTimestamp") and set(meta.get("finalizers") or []) - set(
                    old_meta.get("finalizers") or []):
                raise _error(422, "Invalid", "no new finalizers can be added if the object is being deleted")
            problems = sem.label_problems(meta.get("labels"))
            if problems:
                raise _error(422, "Invalid", "; ".join(problems))
            if sem.spec_part(new) != sem.spec_part(old):
                meta["generation"] = old_meta.get("generation", 1) + 1
        new["apiVersion"], new["kind"] = old["apiVersion"], old["kind"]
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            return old  # a no-op write changes nothing and emits no event, as on a real server
        self._bump(new)
        stored.history.append(new)
        key = self._key(path)
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            self._remove(key)
        else:
            self._record(key[0], "MODIFIED", new)
        return new

    def _delete(self, path: sem.Path, params: dict) -> dict:
        stored = self._get(path)
        key = self._key(path)
        obj = stored.raw
        if obj["metadata"].get("finalizers"):
            if not obj["metadata"].get("deletionTimestamp"):
                new = json.loads(json.dumps(obj))
                new["metadata"]["deletionTimestamp"] = _now()
                new["metadata"]["deletionGracePeriodSeconds"] = 0
                self._bump(new)
                stored.history.append(new)
                self._record(key[0], "MODIFIED", new)
                obj = new
            return obj
        orphan = params.get("propagationPolicy") == "Orphan"
        return self._remove(key, gc=not orphan)

    def _remove(self, key, gc: bool = True) -> dict:
        stored = self.objects[key]
        final = json.loads(json.dumps(stored.raw))
        self._bump(final)
        stored.history.append(final)
        stored.delete()
        self._record(key[0], "DELETED", final)
        if gc:
            self._collect_garbage()
        return final

    def _collect_garbage(self) -> None:
        """Background cascading deletion: a dependent whose owners are all gone is deleted (finalizers kept)."""
        changed = True
        while changed:
            changed = False
            uids = {obj.raw["metadata"].get("uid") for obj in self.objects.values() if not obj.deleted}
            for key, obj in list(self.objects.items()):
                if obj.deleted:
                    continue
                owners = obj.raw["metadata"].get("ownerReferences") or []
                if owners and not any(o.get("uid") in uids for o in owners):
                    res, ns, name = key
                    path = sem.Path(res.group, res.version, res.plural, ns, name)
                    before = obj.raw["metadata"].get("deletionTimestamp")
                    self._delete(path, {})
                    changed = changed or obj.deleted or not before

    # ------------------------------------------------------------------ reading
    def _matching(self, path: sem.Path, params: dict) -> list[dict]:
        res = kmock.resource(path.group, path.version, path.plural)
        return [obj.raw for (r, _, _), obj in self.objects.items()
                if r == res and not obj.deleted and sem.object_matches(path, params, obj.raw)]

    def _list(self, path: sem.Path, info: kmock.ResourceInfo, params: dict) -> dict:
        items = sorted(self._matching(path, params), key=lambda o: int(o["metadata"]["resourceVersion"]))
        return {"apiVersion": f"{path.group}/{path.version}" if path.group else path.version,
                "kind": f"{info.kind}List", "metadata": {"resourceVersion": str(self._rv)},
                "items": json.loads(json.dumps(items))}
