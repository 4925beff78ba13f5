"""A pass's two ends around the pure planner: `observe` (what it reads -> the planner's `Observed`) and `apply`
(the planner's plan, rendered into child changes -> requests through the REST client, in a fixed order).

Every write is idempotent (rest.client), so a pass cut short anywhere is simply passed again.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from cpt_operator.kube import manifests
from cpt_operator.kube.children import Changes
from cpt_operator.kube.controller.admission import AdmissionScanner, PendingJob, rejected_deployments
from cpt_operator.kube.controller.storage_access import StorageView
from cpt_operator.kube.jobs import BY_KIND
from cpt_operator.kube.observe import KINDS, UNLISTED_KINDS, event_body, merge_patch_for, observed_job, parse_time
from cpt_operator.kube.rest.client import ApiError, ForeignObject, Kube
from cpt_operator.planner.intents import Plan
from cpt_operator.planner.observed import Observed

log = logging.getLogger(__name__)
REFS = {**KINDS, **UNLISTED_KINDS}  # kind -> (apiVersion, plural) of everything a pass may create
INSTANCE = os.environ.get("HOSTNAME") or socket.gethostname()  # the Events' reportingInstance
Post = Callable[[str, dict], None]  # (namespace, an Event): posted now (the REST client) or behind the passes


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


def observe(resource: dict, now: datetime, view: StorageView, children: dict[tuple[str, str], dict],
            admission: Optional[AdmissionScanner] = None) -> World:
    """The planner's view of one run: its stage jobs from `children` (the watch-fed cache, our replies over it),
    committed results from storage (`view`), refused pods from the rollout Deployments' ReplicaFailure and from
    `admission`'s last sweep of Warning events (Pending jobs only). No request: everything was read before."""
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
    observed = Observed(now=now, jobs=jobs, committed=view.committed, storage_error=view.error,
                        storage_reason=view.reason,
                        storage_conflict=view.conflict, damaged=view.damaged, resumed=view.resumed,
                        rejected=tuple(sorted(rejected.items())))
    return World(resource=resource, children=children, observed=observed)


def _satisfied(obj: Any, patch: Any) -> bool:
    """Would this merge patch change nothing (so no request is needed)?"""
    if not isinstance(patch, dict):
        return obj == patch
    if not isinstance(obj, dict):
        return False
    return all((k not in obj) if v is None else (k in obj and _satisfied(obj[k], v)) for k, v in patch.items())


def write_status(kube: Kube, resource: dict, status: dict) -> Optional[dict]:
    """Write the full new status as a merge patch against what was read; no request (None) if nothing changed,
    else the resource as the server left it."""
    patch = merge_patch_for(resource.get("status") or {}, status)
    if not patch:
        return None
    meta = resource["metadata"]
    reply = kube.patch_status(meta["namespace"], meta["name"], patch)
    return reply if reply is not None else {"status": status}


def post_event(post: Post, resource: dict, event_type: str, reason: str, message: str, now: datetime) -> None:
    post(resource["metadata"]["namespace"], event_body(resource, event_type, reason, message, now, INSTANCE))


def apply(kube: Kube, world: World, changes: Changes, plan: Plan, now: datetime,
          post: Optional[Post] = None) -> Applied:
    """Make the world match: deletes, creates (existing = success), child patches, then the plan's status, events.

    Status goes before events: if the pass dies in between, the next pass sees the new status and does not
    post the same transitions again (events are best effort; a lost one is better than a repeated one). Events
    go to `post` (the controller's event sender), else straight to the API server.
    """
    post = post or kube.post_event
    resource = world.resource
    namespace = resource["metadata"]["namespace"]
    done = Applied()
    for ref in changes.delete:
        if kube.delete(KINDS[ref.kind], namespace, ref.name):
            done.deleted.append(f"{ref.kind}/{ref.name}")
    for obj in changes.create:
        key = (obj["kind"], obj["metadata"]["name"])
        if key in world.children:
            continue
        try:
            reply = kube.create(REFS[obj["kind"]], namespace, manifests.with_key(obj))
        except ForeignObject as exc:
            _report_foreign(kube, post, resource, plan, exc, now)
            raise
        (done.created if reply is not None else done.existed).append("/".join(key))
        if reply is not None and key[0] in KINDS:
            done.replies.append(reply)
    for ref, body in changes.patch:
        child = world.children.get((ref.kind, ref.name))
        if child is not None and not _satisfied(child, body):
            reply = kube.patch(KINDS[ref.kind], namespace, ref.name, body)
            done.patched.append(f"{ref.kind}/{ref.name}")
            if isinstance(reply, dict) and reply:
                done.replies.append(reply)
    done.status_reply = write_status(kube, resource, plan.status)
    done.status_written = done.status_reply is not None
    for event in plan.events:
        try:
            post_event(post, resource, event.type, event.reason, event.message, now)
            done.events += 1
        except ApiError as exc:
            log.warning("could not post event %s on %s/%s: %s", event.reason, namespace,
                        resource["metadata"]["name"], exc)
    return done


def _report_foreign(kube: Kube, post: Post, resource: dict, plan: Plan, exc: ForeignObject, now: datetime) -> None:
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
    write_status(kube, resource, status)
    if not same:
        post_event(post, resource, "Warning", exc.reason, exc.message, now)
