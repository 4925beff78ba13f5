"""What the operator remembers of a run lives in one RunState, and one `Runs.forget` lets all of it go: the queue's
timer, a storage read in flight, the Secret values held for the scrubber, the exporter's series (kube/controller)."""

from __future__ import annotations

import asyncio

from cpt_operator.kube.controller.recent import Recent
from cpt_operator.kube.controller.apply import Applied
from cpt_operator.kube.controller.state import Runs
from cpt_operator.kube.controller.workqueue import WorkQueue


def _child(name: str, rv: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "resourceVersion": rv, "ownerReferences": [{"uid": "u"}]}}


def test_one_forget_drops_the_state_and_what_is_held_for_it_elsewhere():
    async def scenario():
        runs, queue = Runs(create_on_use=False), WorkQueue()
        released = []
        runs.on_forget(lambda state: queue.forget(state.key))
        runs.on_forget(lambda state: released.append((state.key, state.secret)))
        recent = Recent(runs=runs)
        key = ("ns", "run")
        state = runs.ensure(key)
        state.secret = ("ns", "s3")
        recent.remember(*key, Applied(replies=[_child("cm", "3")]))
        queue.add_after(key, 60)
        assert state.replies and queue.timer(key) is not None
        runs.forget(key)
        assert key not in runs and queue.timer(key) is None and released == [(key, ("ns", "s3"))]
        recent.remember(*key, Applied(replies=[_child("cm", "4")]))  # a late pass of the forgotten run
        assert key not in runs and recent.children(*key, {}) == {}
        runs.forget(key)  # twice: nothing more to let go
        assert len(released) == 1
        queue.close()

    asyncio.run(scenario())
