"""Which changes wake a run (queue its pass), and which are its own echo: the rules, in the event loop's thread.

A pass reads the whole world each time, so the rules only decide *when*. A resource wakes its run when a user
changed what the planner reads (first sight, generation: the spec, `cpt.dev/*` annotations), not on status (that
is ours); a resource being deleted is forgotten at once (its children go with it through ownerReferences).
A stage job wakes its run when its phase or suspension changed (not at its first sight while Pending: the pass
that created it knows it, and at scale that self-inflicted wake-up was a second full pass per run); a rollout
Deployment when its pods are refused, or no longer; any other child when it is deleted (re-created now, not at
the resync); a re-listing when it dropped a reply of ours. Timers (requeue_after, backoff, resync) are the
controller's, not rules of change.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable, Optional

from cpt_core import api
from cpt_operator.kube import jobs, manifests
from cpt_operator.kube.controller.admission import AdmissionScanner, PendingJob, rejected_deployments
from cpt_operator.kube.controller.recent import Recent
from cpt_operator.kube.controller.state import RunKey, Runs
from cpt_operator.kube.observe import parse_time

PREFIX = api.GROUP
# An annotation older versions had kopf write; not a user's change.
IGNORED_ANNOTATIONS = (f"{PREFIX}/last-handled-configuration",)


class Wakes:
    def __init__(self, runs: Runs, queue_add: Callable[[RunKey], None], recent: Recent,
                 admission: AdmissionScanner, backend: jobs.Backend) -> None:
        self.runs = runs
        self.queue_add = queue_add
        self.recent = recent
        self.admission = admission
        self.backend = backend

    def wake(self, namespace: str, name: str) -> None:
        """Queue a pass of a run the operator knows (a child's run that is gone wakes nothing)."""
        if (namespace, name) in self.runs:
            self.queue_add((namespace, name))

    def resource(self, event_type: Optional[str], namespace: str, name: str, body: dict) -> None:
        """The resource watch delivered `body`: keep it as the run's latest copy; queue a pass on what a user
        changed."""
        key = (namespace, name)
        meta = body.get("metadata") or {}
        if event_type == "DELETED" or meta.get("deletionTimestamp"):
            self.runs.forget(key)
            return
        state = self.runs.ensure(key)
        state.resource = body
        ours = {k: v for k, v in (meta.get("annotations") or {}).items()
                if k.startswith(f"{PREFIX}/") and k not in IGNORED_ANNOTATIONS}
        fingerprint = (meta.get("uid"), meta.get("generation"), tuple(sorted(ours.items())))
        if state.wakes != fingerprint:
            state.wakes = fingerprint
            self.queue_add(key)

    def child(self, kind: str, old: Optional[dict], new: Optional[dict]) -> None:
        """The children's cache saw a change (new None: the child is gone)."""
        child = new if new is not None else old
        meta = child["metadata"]
        namespace, name, run = meta.get("namespace", ""), meta.get("name", ""), meta["labels"][manifests.LABEL_RUN]
        self.recent.seen(namespace, run, child, gone=new is None)
        if old is not None and new is not None and old["metadata"]["labels"][manifests.LABEL_RUN] != run:
            self.wake(namespace, old["metadata"]["labels"][manifests.LABEL_RUN])  # relabelled: gone from that run
        state = self.runs.get((namespace, run))
        if kind in jobs.BY_KIND:
            self._job(namespace, name, run, new)
        elif new is None:
            if state is not None:
                state.refused.pop(name, None)
            self.wake(namespace, run)
        elif kind == "Deployment" and state is not None:
            refused = rejected_deployments([new]).get(name, "")
            if refused != state.refused.get(name, ""):  # pods refused, or no longer: the run says so
                state.refused[name] = refused
                self.wake(namespace, run)

    def listed(self, kind: str, namespace: Optional[str], present: set[tuple[str, str]]) -> None:
        """A stream (re-)listed its kind: a reply of ours that the listing does not hold (the object was created
        and deleted while the stream was down, its events never delivered) stops standing in for it, and its run
        looks again. At worst (a listing older than our write) the next pass's create gets a 409, which it takes
        as there."""
        for namespace_run in self.recent.listed(kind, namespace, present):
            self.wake(*namespace_run)

    def _job(self, namespace: str, name: str, run: str, job: Optional[dict]) -> None:
        state = self.runs.get((namespace, run))
        if job is None:
            if state is not None:
                state.jobs.pop(name, None)
            self.wake(namespace, run)
            return
        fingerprint = jobs.job_fingerprint(job, self.backend)
        previous = state.jobs.get(name) if state is not None else None
        if state is not None:
            state.jobs[name] = fingerprint
        if previous is None:
            if fingerprint[0] != "Pending" or fingerprint[-1]:
                self.wake(namespace, run)
            elif not fingerprint[1] and state is not None:  # Pending, not suspended: due for refused-pod looks
                meta = job["metadata"]
                self.admission.add(namespace, run, PendingJob(
                    name, meta.get("uid") or name,
                    parse_time(meta.get("creationTimestamp")) or datetime.now(timezone.utc)))
        elif previous != fingerprint:
            self.wake(namespace, run)
