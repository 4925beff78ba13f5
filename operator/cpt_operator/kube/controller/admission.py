"""Pods the cluster refused to create (Pod Security admission, a quota, a webhook), found for a run's children.

A stage job (PyTorchJob, or the Jobs of a TrainJob's JobSet) whose pods admission rejects stays Pending with no
condition of its own: the only trace is the job controller's Warning event `FailedCreate`/`FailedCreatePod` on
the job, or on a child Job named `<job>-...`. A rollout Deployment says it in its own `ReplicaFailure` condition,
which the watch-fed cache already holds (see `observe.slim_child`).

Events are not watched: they are the busiest kind in a namespace, and a healthy run needs none of them. A job
that is still Pending `grace` seconds after its creation makes the pass list the namespace's Warning events,
then again after growing gaps (doubling up to MAX_GAP) while it stays Pending. The looks happen in a sweep apart
from the passes (one listing per namespace serves all its due jobs) and wake only the runs whose findings changed.
Running jobs, finished jobs and young jobs cost nothing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Iterable, Optional

from cpt_core.storage import scrub
from cpt_operator.kube.controller.state import Runs, RunState
from cpt_operator.kube.observe import parse_time

log = logging.getLogger(__name__)
REASONS = frozenset({"FailedCreate", "FailedCreatePod"})  # batch Job controller / Kubeflow's job controllers
MAX_GAP = 600.0  # seconds between two looks at a job that stays Pending
MIN_SPACING = 10.0  # seconds between two listings of one namespace's events (at most the grace)
MESSAGE_CHARS = 600


@dataclass(frozen=True)
class PendingJob:
    name: str
    uid: str
    created: datetime


@dataclass
class _Schedule:
    next_look: datetime
    gap: float
    message: str = ""


def rejected_deployments(children: Iterable[dict]) -> dict[str, str]:
    """Deployment name -> message of its ReplicaFailure=True condition (the ReplicaSet could not create pods)."""
    out = {}
    for obj in children:
        if obj.get("kind") != "Deployment":
            continue
        for cond in (obj.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
                out[obj["metadata"]["name"]] = shorten(cond.get("message") or cond.get("reason") or "")
    return out


def shorten(message: str) -> str:
    """Scrubbed (an admission message can quote a pod spec) and cut to what a condition can show."""
    message = scrub(" ".join(message.split()))
    return message if len(message) <= MESSAGE_CHARS else message[: MESSAGE_CHARS - 3] + "..."


def owner_job(event_object: str, jobs: Iterable[str]) -> Optional[str]:
    """The job an event's object belongs to: the job itself or a Job its JobSet made (`<job>-<rest>`); the longest
    name wins, so `run-1-train-r1`'s events never land on `run-1-train`."""
    best = None
    for job in jobs:
        if (event_object == job or event_object.startswith(job + "-")) and (best is None or len(job) > len(best)):
            best = job
    return best


def match_events(events: Iterable[dict], jobs: list[PendingJob], known: Iterable[str]) -> dict[str, str]:
    """job name -> newest rejection message among `events`, counting only events newer than the job itself (an
    earlier job of the same name left its events behind). `known`: every job name of the run, for owner_job."""
    by_name = {j.name: j for j in jobs}
    names = set(known) | set(by_name)
    newest: dict[str, tuple[datetime, str]] = {}
    for event in events:
        if event.get("type") != "Warning" or event.get("reason") not in REASONS:
            continue
        involved = event.get("involvedObject") or {}
        job = by_name.get(owner_job(involved.get("name") or "", names) or "")
        if job is None or (involved.get("name") == job.name and involved.get("uid") not in (None, "", job.uid)):
            continue
        when = (parse_time(event.get("lastTimestamp")) or parse_time(event.get("eventTime"))
                or parse_time((event.get("metadata") or {}).get("creationTimestamp")))
        if when is None or when < job.created:
            continue
        if job.name not in newest or when >= newest[job.name][0]:
            newest[job.name] = (when, shorten(event.get("message") or event.get("reason") or ""))
    return {name: message for name, (_, message) in newest.items()}


class AdmissionScanner:
    """Which Pending stage jobs were refused pods, looked up in sweeps apart from the passes.

    A pass tells the scanner its run's Pending jobs (`note`, no I/O) and reads back what the last sweep found.
    `sweep` (the controller runs it in a loop) lists a namespace's Warning events only when one of its Pending
    jobs is due for a look, and returns the runs whose findings changed, to be woken. What it knows of a run is
    kept in the run's state (RunState.pending, .known, .schedules, .admission_version), under this scanner's
    lock: passes run in threads.
    """

    def __init__(self, list_warnings: Callable[[str], list[dict]], grace: float, runs: Optional[Runs] = None) -> None:
        self.list_warnings = list_warnings
        self.grace = grace
        self.spacing = timedelta(seconds=min(MIN_SPACING, grace))
        self.runs = runs if runs is not None else Runs()
        self._listed: dict[str, datetime] = {}  # namespace -> its last listing
        self._lock = threading.Lock()

    def _schedule(self, job: PendingJob) -> _Schedule:
        return _Schedule(job.created + timedelta(seconds=self.grace), self.grace)

    def note(self, namespace: str, run: str, pending: list[PendingJob], known: Iterable[str]) -> dict[str, str]:
        """Record the run's Pending jobs (all its job names: `known`); return job name -> rejection message."""
        state = self.runs.of((namespace, run))
        with self._lock:
            for job in state.pending:
                if job not in pending:
                    state.schedules.pop(job.uid, None)
            state.pending, state.known = list(pending), frozenset(known) if pending else frozenset()
            found = {}
            for job in pending:
                sched = state.schedules.setdefault(job.uid, self._schedule(job))
                if sched.message:
                    found[job.name] = sched.message
            return found

    def add(self, namespace: str, run: str, job: PendingJob) -> None:
        """A job seen Pending for the first time (its watch event, before any pass has observed it: the pass
        that created it does not see it, and a refused job sends no further event)."""
        state = self.runs.of((namespace, run))
        with self._lock:
            if job not in state.pending:
                state.pending, state.known = [*state.pending, job], state.known | {job.name}
            state.schedules.setdefault(job.uid, self._schedule(job))

    def version(self, namespace: str, run: str) -> int:
        """Changes with every finding a sweep changes for the run: part of what a pass reads (see passes)."""
        state = self.runs.get((namespace, run))
        return state.admission_version if state is not None else 0

    def next_look(self) -> Optional[datetime]:
        """When the next listing is due: a namespace's earliest due job, but not sooner than `spacing` after
        that namespace's last listing."""
        with self._lock:
            due: dict[str, datetime] = {}
            for state in self.runs.states():
                namespace = state.key[0]
                for sched in state.schedules.values():
                    if namespace not in due or sched.next_look < due[namespace]:
                        due[namespace] = sched.next_look
            return min((max(when, self._listed.get(namespace, when - self.spacing) + self.spacing)
                        for namespace, when in due.items()), default=None)

    def _ripe(self, now: datetime) -> dict[str, list[tuple[RunState, PendingJob]]]:
        """Per namespace with a job due (and no listing in the last `spacing`): every job past the grace."""
        due: set[str] = set()
        ripe: dict[str, list[tuple[RunState, PendingJob]]] = {}
        for state in self.runs.states():
            namespace = state.key[0]
            if now - self._listed.get(namespace, now - self.spacing) < self.spacing:
                continue
            for job in state.pending:
                sched = state.schedules.get(job.uid)
                if sched is None or job.created + timedelta(seconds=self.grace) > now:
                    continue
                ripe.setdefault(namespace, []).append((state, job))
                if sched.next_look <= now:
                    due.add(namespace)
        return {namespace: ripe[namespace] for namespace in due}

    def sweep(self, now: datetime) -> set[tuple[str, str]]:
        """A namespace with a job due (and no listing in the last `spacing`) is listed once, and that listing
        is a look for every one of its jobs past the grace, due or not, so looks line up instead of spreading
        over time. The runs whose findings changed are returned. Raises what the listing raises (the due jobs
        stay due: nothing is concluded from a failed read)."""
        with self._lock:
            due = self._ripe(now)
        changed: set[tuple[str, str]] = set()
        for namespace, items in due.items():
            events = self.list_warnings(namespace)
            with self._lock:
                self._listed[namespace] = now
                for state, job in items:
                    sched = state.schedules.get(job.uid)
                    if sched is None:  # left Pending while the listing was in flight
                        continue
                    message = match_events(events, [job], state.known).get(job.name, "")
                    if message != sched.message:
                        sched.message = message
                        changed.add(state.key)
                        state.admission_version += 1
                    sched.gap = min(sched.gap * 2, MAX_GAP)
                    sched.next_look = now + timedelta(seconds=sched.gap)
        return changed


async def sweep_forever(scanner: AdmissionScanner, clock: Callable[[], datetime],
                        wake: Callable[[str, str], None], closed: Callable[[], bool],
                        backoff: Callable[[int], float]) -> None:
    """The operator's sweep loop (the controller starts it): sleep until the next look is due (at most `grace`), sweep in
    a thread, wake the runs whose findings changed; a failed listing is retried after `backoff(failures)`."""
    failures = 0
    while not closed():
        due = scanner.next_look()
        wait = scanner.grace if due is None else (due - clock()).total_seconds()
        await asyncio.sleep(min(max(wait, 0.05), scanner.grace))
        if closed():
            return
        try:
            changed = await asyncio.to_thread(scanner.sweep, clock())
        except Exception as exc:  # noqa: BLE001 - the due jobs stay due; the next sweep tries again
            failures += 1
            log.warning("listing Warning events for refused pods failed, retrying in %.1fs: %s: %s",
                        backoff(failures), type(exc).__name__, exc)
            await asyncio.sleep(backoff(failures))
            continue
        failures = 0
        for namespace, run in changed:
            wake(namespace, run)
