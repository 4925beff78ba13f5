"""Pure translations between Kubernetes objects and the planner's world (no I/O; `kube` does the calls).

Kept apart from the controller so the mapping rules (a stage job's conditions -> a job phase, a full status -> a
merge patch) are unit-tested without any API server.
"""

from __future__ import annotations

from datetime import datetime, timezone
from collections.abc import Mapping
from typing import Any, Optional

from cpt_operator.kube import jobs, manifests, ownership
from cpt_operator.kube.ownership import owned_by  # noqa: F401  (where the informer and tests look for it)
from cpt_operator.planner.observed import ObservedJob

# kind -> (apiVersion, plural): every kind the operator creates, patches or deletes. Of the stage-job kinds
# only the configured backend's (and its AppWrappers, kube/wrapped) are ever listed (the others' CRDs may not
# exist on the cluster).
KINDS: dict[str, tuple[str, str]] = {
    **{b.kind: (b.api_version, b.plural) for b in jobs.BY_KIND.values()},
    "Deployment": ("apps/v1", "deployments"),
    "Service": ("v1", "services"),
    "ConfigMap": ("v1", "configmaps"),
    "NetworkPolicy": ("networking.k8s.io/v1", "networkpolicies"),
}
# Created but never listed or watched: that would need `list secrets` (every Secret of the namespace). The run's
# rollout key is sent only along with new rollout servers (kube/children), and a 409 on it is checked like any
# other.
UNLISTED_KINDS: dict[str, tuple[str, str]] = {
    "Secret": ("v1", "secrets"),
    # A stage's own runtime under a queue (kube/units): read by Trainer, garbage-collected with the run.
    "TrainingRuntime": ("trainer.kubeflow.org/v1alpha1", "trainingruntimes"),
}


def parse_time(value: Any) -> Optional[datetime]:
    if not value or not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def observed_job(obj: dict, kind: Optional[str] = None) -> Optional[ObservedJob]:
    """A stage job (either backend's kind) as the planner sees it, identified by its labels; None if the labels
    are not ours. A job suspended by someone else than this operator (Kueue, before admission) is `queued`."""
    backend = jobs.BY_KIND.get(kind or obj.get("kind") or jobs.PYTORCHJOB.kind)  # list items may omit `kind`
    if backend is None:
        return None
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    try:
        index = int(labels[manifests.LABEL_TASK])
        attempt = int(labels.get(manifests.LABEL_ATTEMPT, "0"))
        stage = labels[manifests.LABEL_STAGE]
    except (KeyError, ValueError):
        return None
    status = obj.get("status") or {}
    phase, condition = backend.phase(obj)
    finished = None
    message = ""
    if phase in ("Succeeded", "Failed"):
        finished = parse_time(status.get("completionTime")) or parse_time((condition or {}).get("lastTransitionTime"))
        message = (condition or {}).get("message") or (condition or {}).get("reason") or ""
    suspended = jobs.is_suspended(backend, obj)
    return ObservedJob(name=meta["name"], task_index=index, stage=stage, attempt=attempt, phase=phase,
                       finished_at=finished, message=message, suspended=suspended,
                       queued=suspended and not jobs.suspended_by_operator(obj), round=jobs.round_of(obj))


def merge_patch_for(old: Any, new: Any) -> Any:
    """The RFC 7386 merge patch that turns `old` into `new` (keys that disappeared become null); {} if equal."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            sub = merge_patch_for(old[key], value)
            patch[key] = sub if isinstance(value, dict) and isinstance(old[key], dict) else value
    return patch


def event_body(resource: dict, event_type: str, reason: str, message: str, now: datetime, instance: str) -> dict:
    """A core/v1 Event on the resource (what `kubectl describe` lists)."""
    meta = resource["metadata"]
    stamp = now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta.get("namespace", "default")},
        "involvedObject": {"apiVersion": resource.get("apiVersion"), "kind": resource.get("kind"),
                           "name": meta["name"], "namespace": meta.get("namespace", "default"),
                           "uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion")},
        "type": event_type,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": "cpt-operator"},
        "reportingComponent": "cpt-operator",
        "reportingInstance": instance,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def slim_child(obj: Any, kind: Optional[str] = None) -> dict:
    """What a pass reads of a child, copied out of a watch event or a write's reply: names, labels, annotations,
    owners, creation time and resourceVersion, the content digest its mark covers (kube.ownership); a job's
    suspension and status; a Deployment's replicas and
    ReplicaFailure condition. A ConfigMap's data and
    pod templates stay out, so 1,000 runs' children cost little memory in the cache."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    kind = kind or obj.get("kind") or ""
    out: dict = {"apiVersion": obj.get("apiVersion"), "kind": kind, "metadata": {
        key: _plain(meta[key]) for key in ("name", "namespace", "uid", "resourceVersion", "labels", "annotations",
                                           "creationTimestamp", "deletionTimestamp") if meta.get(key) is not None}}
    out["metadata"]["ownerReferences"] = [{"uid": ref.get("uid")} for ref in meta.get("ownerReferences") or []]
    out[ownership.DIGEST] = ownership.content_digest(dict(obj, kind=kind))  # its mark is checked against this
    if kind in jobs.BY_KIND:
        path = jobs.BY_KIND[kind].suspend_path
        node: Any = obj
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None  # kopf's views are Mappings, not dicts
        if node is not None:
            nested: dict = {path[-1]: node}
            for key in reversed(path[1:-1]):
                nested = {key: nested}
            out["spec"] = nested
        out["status"] = _plain(obj.get("status") or {})
    elif kind == "Deployment":
        if "replicas" in spec:
            out["spec"] = {"replicas": spec["replicas"]}
        failures = [_plain(c) for c in (obj.get("status") or {}).get("conditions") or []
                    if c.get("type") == "ReplicaFailure"]  # pods refused (admission, quota): see controller.admission
        if failures:
            out["status"] = {"conditions": failures}
    return out


def _plain(value: Any) -> Any:
    """A JSON-like deep copy (kopf hands out read-only views of its live bodies)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def newer(a: Optional[dict], b: Optional[dict]) -> bool:
    """Is object `a` a later version than `b`? resourceVersions are opaque strings to clients, but every
    server we know (etcd, the emulator) issues growing integers; anything else counts as not newer."""
    try:
        return int((a or {}).get("metadata", {}).get("resourceVersion")) > \
            int((b or {}).get("metadata", {}).get("resourceVersion"))
    except (TypeError, ValueError):
        return False
