"""One reconcile pass of one resource: observe -> plan -> apply. No kopf here (handlers only schedule passes).

Level-triggered: the pass reads the resource and its world fresh and rebuilds the status from scratch, so it can
run any number of times, be cut off at any point, or run in a freshly restarted operator. Passes over the same
resource are serialised by a process-wide lock: an operator restarted in the same process (tests) waits for
the previous instance's in-flight pass instead of racing it.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Optional

from cpt_core.results import run_stats
from cpt_core.storage import scrub
from cpt_operator import metrics, planner
from cpt_operator.kube.children import render
from cpt_operator.kube.client import Applied, Kube, apply, observe
from cpt_operator.kube.settings import Settings
from cpt_operator.kube.storage_access import CommittedReader
from cpt_operator.planner.conditions import set_condition
from cpt_operator.planner.events import condition

log = logging.getLogger(__name__)

_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock(namespace: str, name: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault((namespace, name), threading.Lock())


def effective_resource(resource: dict, settings: Settings) -> dict:
    """The resource with the operator's storage defaults filled in where the spec leaves them out.

    Applied before planning, so the operator reads storage where the stage jobs write it (their env and stage
    config come from the same spec). Never written back: the user's object stays as they wrote it.
    """
    storage = (resource.get("spec") or {}).get("storage")
    if not isinstance(storage, dict):
        return resource
    wanted = {"endpoint": settings.storage_endpoint, "region": settings.storage_region,
              "pathStyle": settings.storage_path_style or None}
    missing = {k: v for k, v in wanted.items() if v and not storage.get(k)}
    if not missing:
        return resource
    out = copy.deepcopy(resource)
    out["spec"]["storage"].update(missing)
    return out


@dataclass
class Outcome:
    exists: bool  # False: the resource is gone or being deleted; stop reconciling it
    requeue_after: Optional[float] = None  # the planner's wish (retry backoff); None = only on changes
    phase: Optional[str] = None
    applied: Optional[Applied] = None


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Reconciler:
    def __init__(self, kube: Kube, settings: Settings, clock: Callable[[], datetime] = _utcnow) -> None:
        self.kube = kube
        self.settings = settings
        self.clock = clock
        self.reader = CommittedReader(settings, kube.read_secret)

    def reconcile(self, namespace: str, name: str) -> Outcome:
        """One full pass; raises on API errors (the caller backs off and retries: every step is idempotent)."""
        started = time.monotonic()
        error = True
        try:
            with _lock(namespace, name):
                outcome = self._pass(namespace, name)
            error = False
            return outcome
        finally:
            metrics.observe_reconcile(time.monotonic() - started, error)

    def _pass(self, namespace: str, name: str) -> Outcome:
        resource = self.kube.get_resource(namespace, name)
        if resource is None or resource["metadata"].get("deletionTimestamp"):
            metrics.forget(namespace, name)
            return Outcome(exists=False)  # children go with it (ownerReferences); storage is left alone
        now = self.clock()
        resource = effective_resource(resource, self.settings)
        world = observe(self.kube, resource, now, self.reader)
        plan = planner.plan(resource, world.observed)
        changes = render(plan, resource, world.children, self.settings.plan_defaults)
        applied = apply(self.kube, world, changes, plan, now)
        if not plan.hold:  # storage unseen: the exporter keeps the last known figures (no flapping alerts)
            metrics.publish(namespace, name, resource.get("spec") or {}, plan.status,
                            run_stats(world.observed.committed))
        changes = applied.created + applied.deleted + applied.patched
        if changes or applied.status_written:
            log.info("%s/%s: phase=%s %s%s", namespace, name, plan.status.get("phase"),
                     " ".join(f"+{c}" for c in applied.created) + " ".join(f"-{d}" for d in applied.deleted),
                     " ".join(f"~{p}" for p in applied.patched))
        return Outcome(exists=True, requeue_after=plan.requeue_after, phase=plan.status.get("phase"),
                       applied=applied)

    def report_failure(self, namespace: str, name: str, exc: BaseException, retry_in: float) -> None:
        """Put a failed pass where `kubectl describe` shows it: condition Reconciled=False and, when the reason
        is new, a Warning event. Best effort (the API may be what failed); the next good pass drops the
        condition with the rest of the status it rebuilds."""
        message = scrub(f"{type(exc).__name__}: {exc}")[:1000] + f" (next attempt in {retry_in:.0f}s)"
        try:
            with _lock(namespace, name):
                resource = self.kube.get_resource(namespace, name)
                if resource is None or resource["metadata"].get("deletionTimestamp"):
                    return
                old = resource.get("status") or {}
                before = condition(old, "Reconciled") or {}
                same = before.get("status") == "False" and before.get("reason") == type(exc).__name__
                now = self.clock()
                status = dict(old, conditions=set_condition(
                    old.get("conditions") or [], now, resource["metadata"].get("generation"), "Reconciled",
                    False, type(exc).__name__, message))
                self.kube.patch_status(resource, status)
                if not same:
                    self.kube.post_event(resource, "Warning", "ReconcileFailed", message, now)
        except Exception as again:  # noqa: BLE001 - reporting must never raise
            log.warning("%s/%s: could not report the failed pass: %s", namespace, name, again)

    def close(self) -> None:
        self.reader.close()
        self.kube.close()
