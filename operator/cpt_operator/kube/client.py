"""The only module that talks to the Kubernetes API (kopf's own watching aside).

Synchronous (the kubernetes client), called from a worker thread by `reconcile`. Every call is idempotent:
"already exists" on create and "not found" on delete are success, status is written as a merge patch only when
it changed, so a pass can be repeated or cut short at any point. Every verb used here is listed in
`permissions.REQUIRED_RULES` (the chart's RBAC is tested against it).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Optional

import kubernetes

from cpt_operator import __version__
from cpt_core import api
from cpt_operator.kube import manifests, ownership
from cpt_operator.kube.admission import AdmissionScanner, PendingJob, rejected_deployments
from cpt_operator.kube.observe import (KINDS, collection_path, event_body, merge_patch_for, object_path, observed_job,
                                       owned_by, parse_time)
from cpt_operator.kube.children import Changes
from cpt_operator.kube.jobs import BY_KIND, unit_kinds
from cpt_operator.kube.storage_access import StorageView
from cpt_operator.planner.intents import Plan
from cpt_operator.planner.observed import Observed

log = logging.getLogger(__name__)
USER_AGENT = f"cpt-operator/{__version__}"
TIMEOUT = (5, 30)  # connect, read (seconds)


class ApiError(Exception):
    """An API call failed: status code, the server's reason and message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


class ForeignObject(ApiError):
    """A child's name is taken by an object that does not carry this run's mark (kube.ownership; an
    ownerReference with the run's uid is no proof, anyone can write one): never adopted (it could be a planted
    ConfigMap or Service), reported on the resource, and the pass stops before anything that would use it."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(409, "ForeignObject", f"{kind}/{name} already exists and is not owned by this run; "
                                               "it is not adopted: delete or rename it")
        self.kind, self.name = kind, name


# Created but never listed or watched: that would need `list secrets` (every Secret of the namespace). The run's
# rollout key is sent only along with new rollout servers (kube/children), and a 409 on it is checked like any
# other.
UNLISTED_KINDS: dict[str, tuple[str, str]] = {
    "Secret": ("v1", "secrets"),
    # A stage's own runtime under a queue (kube/units): read by Trainer, garbage-collected with the run.
    "TrainingRuntime": ("trainer.kubeflow.org/v1alpha1", "trainingruntimes"),
}


@dataclass
class World:
    """One pass's observation: the resource, its children by (kind, name), and the planner's view of it."""

    resource: dict
    children: dict[tuple[str, str], dict]
    observed: Observed


@dataclass
class Applied:
    created: list[str] = field(default_factory=list)
    existed: list[str] = field(default_factory=list)
    patched: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    status_written: bool = False
    events: int = 0
    replies: list[dict] = field(default_factory=list)  # the server's copies of what was created or patched
    status_reply: Optional[dict] = None  # the resource as the status patch left it


class Kube:
    """A thin REST layer over kubernetes.client.ApiClient: JSON in, JSON out, ApiError on failure."""

    def __init__(self, client: kubernetes.client.ApiClient, job_kind: str = "PyTorchJob",
                 mark_key: Optional[bytes] = None) -> None:
        self.client = client
        # Marks the children this operator creates and proves the ones it finds (kube.ownership).
        self.mark_key = mark_key if mark_key is not None else ownership.default_key()
        self.job_kind = job_kind  # the stage-job kind in use; the other one is never listed (no CRD, no RBAC)
        self.client.user_agent = USER_AGENT
        self.instance = os.environ.get("HOSTNAME") or socket.gethostname()
        # Where events go: None posts them at once (tools, tests); the operator sets an EventSender's `put`,
        # which posts them behind the passes (kube/event_sender.py).
        self.event_sink: Optional[Callable[[str, dict], None]] = None

    @classmethod
    def connect(cls, kubeconfig: Optional[str] = None, job_kind: str = "PyTorchJob") -> "Kube":
        """In-cluster service account if there is one, else KUBECONFIG / ~/.kube/config."""
        config = kubernetes.client.Configuration()
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            kubernetes.config.load_incluster_config(client_configuration=config)
        else:
            kubernetes.config.load_kube_config(config_file=kubeconfig or os.environ.get("KUBECONFIG"),
                                               client_configuration=config)
        return cls(kubernetes.client.ApiClient(configuration=config), job_kind)

    def close(self) -> None:
        self.client.close()

    def request(self, method: str, path: str, body: Any = None, query: Optional[dict] = None,
                content_type: str = "application/json") -> Any:
        try:
            data = self.client.call_api(
                path, method, query_params=list((query or {}).items()), body=body,
                header_params={"Accept": "application/json", "Content-Type": content_type},
                response_types_map=None, auth_settings=["BearerToken"], _return_http_data_only=True,
                _preload_content=False, _request_timeout=TIMEOUT)
        except kubernetes.client.ApiException as exc:
            try:
                status = json.loads(exc.body or "{}")
            except ValueError:
                status = {}
            raise ApiError(exc.status or 0, status.get("reason") or str(exc.reason), status.get("message") or "") \
                from None
        raw = data.data
        return json.loads(raw) if raw else None

    # ---------------------------------------------------------------- reads
    def get_resource(self, namespace: str, name: str) -> Optional[dict]:
        try:
            return self.request("GET", object_path(api.API_VERSION, api.PLURAL, namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list_children(self, resource: dict) -> dict[tuple[str, str], dict]:
        """Every child of the run, found by the cpt.dev/run label, owned by this very resource (uid) and
        carrying the run's mark (an object planted with the label and the uid is not a child)."""
        meta = resource["metadata"]
        selector = f"{manifests.LABEL_RUN}={meta['name']}"
        out: dict[tuple[str, str], dict] = {}
        for kind, (api_version, plural) in KINDS.items():
            if kind in BY_KIND and kind != self.job_kind and kind not in unit_kinds(self.job_kind):
                continue
            listing = self.request("GET", collection_path(api_version, plural, meta["namespace"]),
                                   query={"labelSelector": selector})
            for item in listing.get("items") or []:
                if owned_by(item, meta.get("uid")) and ownership.proven(self.mark_key, dict(item, kind=kind),
                                                                        meta.get("uid")):
                    out[(kind, item["metadata"]["name"])] = item
        return out

    def list_warning_events(self, namespace: str) -> list[dict]:
        """The namespace's Warning events (kube.admission looks for pods the cluster refused to create)."""
        listing = self.request("GET", collection_path("v1", "events", namespace),
                               query={"fieldSelector": "type=Warning"})
        return listing.get("items") or []

    def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        """A Secret's data, decoded. Values are credentials: never log or return them in errors."""
        secret = self.request("GET", object_path("v1", "secrets", namespace, name))
        return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}

    # ---------------------------------------------------------------- writes
    def create(self, obj: dict, namespace: str) -> Optional[dict]:
        """Create a child, marked as this run's: the server's copy, or None if this run's own object already
        existed (names are deterministic, so a lagging cache only costs this 409). An object of that name that
        does not carry this run's mark raises ForeignObject, whoever it claims to be owned by."""
        api_version, plural = {**KINDS, **UNLISTED_KINDS}[obj["kind"]]
        uid = obj["metadata"]["ownerReferences"][0]["uid"]
        body = ownership.sign(self.mark_key, manifests.with_key(obj), uid)
        try:
            reply = self.request("POST", collection_path(api_version, plural, namespace), body=body)
            return reply if isinstance(reply, dict) and reply else body
        except ApiError as exc:
            if not (exc.status == 409 and exc.reason == "AlreadyExists"):
                raise
        name = obj["metadata"]["name"]
        try:
            existing = self.request("GET", object_path(api_version, plural, namespace, name))
        except ApiError as exc:
            if exc.status == 404:  # deleted in between (garbage collection): the next pass creates it
                return None
            raise
        existing = dict(existing, kind=obj["kind"])
        if not uid or not owned_by(existing, uid) or not ownership.proven(self.mark_key, existing, uid):
            raise ForeignObject(obj["kind"], name)
        return None

    def patch(self, kind: str, namespace: str, name: str, body: dict) -> Optional[dict]:
        api_version, plural = KINDS[kind]
        return self.request("PATCH", object_path(api_version, plural, namespace, name), body=body,
                            content_type="application/merge-patch+json")

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete a child and, in the background, what it owns; False if it was already gone."""
        api_version, plural = KINDS[kind]
        try:
            self.request("DELETE", object_path(api_version, plural, namespace, name),
                         body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"})
            return True
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise

    def patch_status(self, resource: dict, status: dict) -> Optional[dict]:
        """Write the full new status as a merge patch against what was read; no request (None) if nothing
        changed, else the resource as the server left it."""
        patch = merge_patch_for(resource.get("status") or {}, status)
        if not patch:
            return None
        meta = resource["metadata"]
        reply = self.request("PATCH", object_path(api.API_VERSION, api.PLURAL, meta["namespace"], meta["name"],
                                                  "status"),
                             body={"status": patch}, content_type="application/merge-patch+json")
        return reply if isinstance(reply, dict) and reply else {"status": status}

    def post_event(self, resource: dict, event_type: str, reason: str, message: str, now: datetime) -> None:
        body = event_body(resource, event_type, reason, message, now, self.instance)
        namespace = resource["metadata"]["namespace"]
        if self.event_sink is not None:
            self.event_sink(namespace, body)
        else:
            self.post_event_body(namespace, body)

    def post_event_body(self, namespace: str, body: dict) -> None:
        self.request("POST", collection_path("v1", "events", namespace), body=body)


# -------------------------------------------------------------------- observe / apply


def observe(kube: Kube, resource: dict, now: datetime, read_storage: Callable[[dict], StorageView],
            children: Optional[dict[tuple[str, str], dict]] = None,
            admission: Optional[AdmissionScanner] = None) -> World:
    """Children from the watch-fed cache (`children`, see handlers) or else listed from the API; committed
    results from storage (`read_storage(resource)` -> StorageView); refused pods from the rollout Deployments'
    ReplicaFailure and from `admission`'s last sweep of Warning events (Pending jobs only)."""
    if children is None:
        children = kube.list_children(resource)
    jobs = tuple(j for (kind, _), obj in sorted(children.items()) if kind in BY_KIND
                 for j in [observed_job(obj, kind)] if j is not None)
    rejected = rejected_deployments(children.values())
    if admission is not None:
        meta = resource["metadata"]
        pending = [PendingJob(j.name, child["metadata"].get("uid") or j.name,
                              parse_time(child["metadata"].get("creationTimestamp")) or now)
                   for (kind, name), child in sorted(children.items()) if kind in BY_KIND
                   for j in jobs if j.name == name and j.phase == "Pending" and not j.suspended]
        rejected.update(admission.note(meta["namespace"], meta["name"], pending, [j.name for j in jobs]))
    view = read_storage(resource)
    observed = Observed(now=now, jobs=jobs, committed=view.committed, storage_error=view.error,
                        storage_reason=view.reason,
                        storage_conflict=view.conflict, damaged=view.damaged, rejected=tuple(sorted(rejected.items())))
    return World(resource=resource, children=children, observed=observed)



def _satisfied(obj: Any, patch: Any) -> bool:
    """Would this merge patch change nothing (so no request is needed)?"""
    if not isinstance(patch, dict):
        return obj == patch
    if not isinstance(obj, dict):
        return False
    return all((k not in obj) if v is None else (k in obj and _satisfied(obj[k], v)) for k, v in patch.items())


def apply(kube: Kube, world: World, changes: Changes, plan: Plan, now: datetime) -> Applied:
    """Make the world match: deletes, creates (existing = success), child patches, then the plan's status, events.

    Status goes before events: if the pass dies in between, the next pass sees the new status and does not
    post the same transitions again (events are best effort; a lost one is better than a repeated one).
    """
    resource = world.resource
    namespace = resource["metadata"]["namespace"]
    done = Applied()
    for ref in changes.delete:
        if kube.delete(ref.kind, namespace, ref.name):
            done.deleted.append(f"{ref.kind}/{ref.name}")
    for obj in changes.create:
        key = (obj["kind"], obj["metadata"]["name"])
        if key in world.children:
            continue
        try:
            reply = kube.create(obj, namespace)
        except ForeignObject as exc:
            _report_foreign(kube, resource, plan, exc, now)
            raise
        (done.created if reply is not None else done.existed).append("/".join(key))
        if reply is not None and key[0] in KINDS:
            done.replies.append(reply)
    for ref, body in changes.patch:
        child = world.children.get((ref.kind, ref.name))
        if child is not None and not _satisfied(child, body):
            reply = kube.patch(ref.kind, namespace, ref.name, body)
            done.patched.append(f"{ref.kind}/{ref.name}")
            if isinstance(reply, dict) and reply:
                done.replies.append(reply)
    done.status_reply = kube.patch_status(resource, plan.status)
    done.status_written = done.status_reply is not None
    for event in plan.events:
        try:
            kube.post_event(resource, event.type, event.reason, event.message, now)
            done.events += 1
        except ApiError as exc:
            log.warning("could not post event %s on %s/%s: %s", event.reason, namespace,
                        resource["metadata"]["name"], exc)
    return done


def _report_foreign(kube: Kube, resource: dict, plan: Plan, exc: ForeignObject, now: datetime) -> None:
    """The planner's status with Ready=False/ForeignObject and the message, and one Warning event per new
    message; the caller re-raises, so the pass is retried (after the foreign object is gone it goes on)."""
    status = dict(plan.status)
    old = {c.get("type"): c for c in (resource.get("status") or {}).get("conditions") or []}.get("Ready") or {}
    stamp = now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    same = old.get("reason") == exc.reason and old.get("message") == exc.message
    ready = {"type": "Ready", "status": "False", "reason": exc.reason, "message": exc.message,
             "lastTransitionTime": old.get("lastTransitionTime") if same else stamp,
             "observedGeneration": resource["metadata"].get("generation")}
    status["conditions"] = [ready if c.get("type") == "Ready" else c for c in status.get("conditions") or []]
    status["message"] = exc.message
    kube.patch_status(resource, status)
    if not same:
        kube.post_event(resource, "Warning", exc.reason, exc.message, now)

