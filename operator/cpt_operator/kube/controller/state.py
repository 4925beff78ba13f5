"""What the operator remembers about each run between passes: one `RunState` per run key, one `Runs.forget`.

Level-triggered passes rebuild a run's status from observation, so nothing here is needed for correctness after a
restart; it is what makes the passes cheap and quiet: the resource's last copy and what of it woke a pass, the
stage jobs' last fingerprints, our own writes' replies until the watch catches up, the read of its storage, the
refused pods found for it, its failed passes in a row. Each part is written by one component, under that
component's lock where threads share it (named beside each field); the registry only creates, finds and forgets.

`Runs.forget(key)` is the only way a run is forgotten (its resource deleted, or being deleted): the state goes,
and the components that hold something outside it for the run (the work queue's timer, a read in flight, the
Secret values the log scrubber holds, the exporter's series) let it go through the hooks they registered.
A pass still running for a forgotten run writes into its orphaned state, which nothing reads again.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

RunKey = tuple[str, str]  # (namespace, name) of a ContinualPostTraining
ChildKey = tuple[str, str]  # (kind, name) of one of its children


@dataclass(eq=False)
class RunState:
    key: RunKey
    # The resource watch and the wake rules (controller.wake; the event loop's thread only).
    resource: Optional[dict] = None  # the last copy the resource watch delivered
    wakes: Optional[tuple] = None  # what of the resource wakes a pass, as last seen
    jobs: dict[str, tuple] = field(default_factory=dict)  # stage job name -> jobs.job_fingerprint
    refused: dict[str, str] = field(default_factory=dict)  # rollout Deployment -> its ReplicaFailure message
    failures: int = 0  # failed passes in a row (the worker, in the loop)
    # The pass (controller.passes; one pass of a run at a time).
    steady: Optional[tuple] = None  # (inputs, storage view, outcome) of its last quiet pass
    # Our writes' replies, until the watch delivers as new a copy (controller.recent, under its lock).
    replies: dict[ChildKey, tuple[float, dict]] = field(default_factory=dict)  # child -> (until, slim copy)
    gone: dict[ChildKey, tuple[float, dict]] = field(default_factory=dict)  # deletions the watch delivered
    status_reply: Optional[tuple[float, dict]] = None  # (until, identity + status) of our last status write
    # Its storage (controller.storage_reads and storage_access, under their locks).
    read: Any = None  # the read in flight, or the last one finished (storage_reads._Read)
    secret: Optional[tuple[str, str]] = None  # (namespace, Secret) its reads sign with
    # Pods the cluster refused (controller.admission, under its lock).
    pending: list = field(default_factory=list)  # its stage jobs Pending and not suspended (PendingJob)
    known: frozenset = frozenset()  # every stage job name of the run (to tell whose events are whose)
    schedules: dict[str, Any] = field(default_factory=dict)  # Pending job uid -> when to look, what was found
    admission_version: int = 0  # bumped whenever a sweep changed its findings


class Runs:
    """The registry of RunStates. `create_on_use`: a component asking for an unknown run (`of`) registers it
    (components used on their own, in tools and tests); the operator registers runs only when their resource is
    seen, so a late write for a forgotten run goes to a state that is not kept."""

    def __init__(self, create_on_use: bool = True) -> None:
        self.create_on_use = create_on_use
        self._states: dict[RunKey, RunState] = {}
        self._lock = threading.Lock()
        self._on_forget: list[Callable[[RunState], None]] = []

    def __contains__(self, key: object) -> bool:
        return key in self._states

    def __len__(self) -> int:
        return len(self._states)

    def get(self, key: RunKey) -> Optional[RunState]:
        return self._states.get(key)

    def ensure(self, key: RunKey) -> RunState:
        """The run's state, registered now if it was not."""
        state = self._states.get(key)
        if state is None:
            with self._lock:
                state = self._states.setdefault(key, RunState(key))
        return state

    def of(self, key: RunKey) -> RunState:
        """The run's state; for a run not registered, a new one (kept only with `create_on_use`)."""
        state = self._states.get(key)
        if state is not None:
            return state
        return self.ensure(key) if self.create_on_use else RunState(key)

    def states(self) -> list[RunState]:
        """A snapshot, safe to iterate while other threads register or forget runs."""
        with self._lock:
            return list(self._states.values())

    def __iter__(self) -> Iterator[RunState]:
        return iter(self.states())

    def on_forget(self, hook: Callable[[RunState], None]) -> None:
        """`hook(state)` when a run is forgotten: for what a component holds outside the state."""
        self._on_forget.append(hook)

    def forget(self, key: RunKey) -> None:
        """The run is gone: drop everything remembered about it, and let go what is held for it elsewhere."""
        with self._lock:
            state = self._states.pop(key, None)
        if state is None:
            return
        for hook in self._on_forget:
            hook(state)
