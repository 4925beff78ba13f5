"""One pass of one run: observe -> the pure planner -> apply. Run in a worker thread (the clients block).

Level-triggered: the pass rebuilds the status from scratch out of what it is given (the resource and its
children as the watches last delivered them, see controller) and what storage holds, so it can run any number
of times, be cut off at any point, or run in a freshly restarted operator. It never LISTs or GETs; it sends a
request only to change something. The watches lag our own writes by a moment, so the server's replies to this
operator's writes are kept for a short while (`recent.Recent`) and win over an older cached copy: the next pass
does not redo a create (a 409 would be harmless: names are deterministic) or decide from a status it already
replaced. Passes over the same resource are serialised by a process-wide lock: an operator restarted in the
same process (tests) waits for the previous instance's in-flight pass instead of racing it.
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
from cpt_operator.kube import ownership
from cpt_operator.kube.children import render
from cpt_operator.kube.controller.admission import AdmissionScanner
from cpt_operator.kube.controller.apply import Applied, Post, apply, observe, post_event, write_status
from cpt_operator.kube.controller.recent import Recent
from cpt_operator.kube.controller.state import Runs
from cpt_operator.kube.controller.storage_access import CommittedReader
from cpt_operator.kube.controller.storage_reads import Pending, StorageReads
from cpt_operator.kube.observe import owned_by
from cpt_operator.kube.rest.client import Kube
from cpt_operator.kube.settings import Settings
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
    storage_unread: bool = False  # storage did not answer: look again soon, not only at the resync


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Reconciler:
    """The pass and what it needs: the REST client, storage reads, our writes' replies, the refused-pod scanner;
    all keep what they remember of a run in `runs` (controller.state)."""

    def __init__(self, kube: Kube, settings: Settings, clock: Callable[[], datetime] = _utcnow,
                 runs: Optional[Runs] = None) -> None:
        self.kube = kube
        self.kube.mark_key = settings.plan_defaults.child_key  # the one key names and marks are derived from
        self.settings = settings
        self.clock = clock
        self.runs = runs if runs is not None else Runs()
        self.reader = CommittedReader(settings, kube.read_secret, get_resource=kube.get_resource, runs=self.runs)
        # Storage is read off the pass workers, bounded per endpoint and in time (storage_reads); the controller
        # sets `reads.wake` so that a read that outlives its pass queues the run's next one.
        self.reads = StorageReads(self.reader, allowed=settings.storage_endpoints)
        self.recent = Recent(runs=self.runs)
        self.admission = AdmissionScanner(kube.list_warning_events, settings.admission_grace, runs=self.runs)
        # Where a pass's Events go: straight to the API server, or (the controller) an EventSender's `put`.
        self.post_event: Post = kube.post_event

    def reconcile(self, namespace: str, name: str, resource: dict, children: dict[tuple[str, str], dict]) -> Outcome:
        """One full pass over what the watches last delivered (`resource`, `children`); raises on API errors
        (the caller backs off and retries: every step is idempotent)."""
        started = time.monotonic()
        error = True
        try:
            with _lock(namespace, name):
                outcome = self._pass(namespace, name, resource, children)
            error = False
            return outcome
        finally:
            metrics.observe_reconcile(time.monotonic() - started, error)

    def _children(self, namespace: str, name: str, resource: dict, cached: dict) -> dict:
        """The cached children with our newer replies over them, those owned by this uid and carrying its mark
        (an object planted with the run's label and uid is not a child), not being deleted."""
        uid = resource["metadata"].get("uid")
        key = self.kube.mark_key
        return {k: obj for k, obj in self.recent.children(namespace, name, cached).items()
                if owned_by(obj, uid) and ownership.proven(key, obj, uid)
                and not (obj.get("metadata") or {}).get("deletionTimestamp")}

    def _pass(self, namespace: str, name: str, resource: dict, children: dict[tuple[str, str], dict]) -> Outcome:
        if resource["metadata"].get("deletionTimestamp"):
            return Outcome(exists=False)  # children go with it (ownerReferences); storage is left alone
        now = self.clock()
        resource = effective_resource(self.recent.resource(namespace, name, resource), self.settings)
        children = self._children(namespace, name, resource, children)
        view = self.reads.view(namespace, name, resource)
        if isinstance(view, Pending):  # still reading, off this worker: its end wakes the run, else the deadline
            return Outcome(exists=True, requeue_after=view.retry_in)
        state = self.runs.of((namespace, name))
        inputs = (resource["metadata"].get("uid"), resource["metadata"].get("resourceVersion"),
                  tuple(sorted((key, (obj.get("metadata") or {}).get("resourceVersion"))
                               for key, obj in children.items())),
                  self.admission.version(namespace, name))
        last = state.steady
        if last is not None and last[0] == inputs and last[1] is view:
            return last[2]  # nothing the planner reads changed, and time does not matter: same outcome
        world = observe(resource, now, view, children, self.admission)
        plan = planner.plan(resource, world.observed)
        changes = render(plan, resource, world.children, self.settings.plan_defaults)
        applied = apply(self.kube, world, changes, plan, now, self.post_event)
        self.recent.remember(namespace, name, applied)
        if not plan.hold:  # storage unseen: the exporter keeps the last known figures (no flapping alerts)
            metrics.publish(namespace, name, resource.get("spec") or {}, plan.status,
                            run_stats(world.observed.committed))
        self._log_decisions(namespace, name, plan, applied)
        outcome = Outcome(exists=True, requeue_after=plan.requeue_after, phase=plan.status.get("phase"),
                          applied=applied, storage_unread=view.error is not None)
        quiet = not (applied.created or applied.existed or applied.deleted or applied.patched
                     or applied.status_written or plan.events)
        steady = quiet and plan.requeue_after is None and view.error is None
        state.steady = (inputs, view, Outcome(exists=True, phase=outcome.phase)) if steady else None
        return outcome

    @staticmethod
    def _log_decisions(namespace: str, name: str, plan: planner.Plan, applied: Applied) -> None:
        """One line per decision, with the planner's reason: a person reads these, not a parser."""
        why = plan.status.get("message") or plan.status.get("phase") or ""
        for verb, items in (("created", applied.created), ("deleted", applied.deleted),
                            ("patched", applied.patched)):
            if items:
                log.info("%s/%s: %s %s (%s)", namespace, name, verb, ", ".join(items), why)
        for event in plan.events:
            if event.reason == "StageStarted" and applied.created:
                continue  # the "created ..." line above says it (the stage's ConfigMap and job)
            log.info("%s/%s: %s: %s", namespace, name, event.reason, event.message)

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
                write_status(self.kube, resource, status)
                if not same:
                    post_event(self.post_event, resource, "Warning", "ReconcileFailed", message, now)
        except Exception as again:  # noqa: BLE001 - reporting must never raise
            log.warning("%s/%s: could not report the failed pass: %s", namespace, name, again)

    def close(self) -> None:
        self.reads.close()
        self.reader.close()
        self.kube.close()
