"""The operator's work queue (kube/controller/workqueue.py): a key queued once, never passed twice at once, re-passed when
woken during its pass, timers where the earliest wins, and forgotten runs gone from queue and timers."""

from __future__ import annotations

import asyncio

from cpt_operator.kube.controller.workqueue import WorkQueue


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 5))


def test_a_key_woken_many_times_is_queued_once_in_order():
    async def main():
        q: WorkQueue = WorkQueue()
        for key in ("a", "b", "a", "a", "c", "b"):
            q.add(key)
        assert len(q) == 3
        assert [await q.get(), await q.get(), await q.get()] == ["a", "b", "c"]
    run(main())


def test_a_key_added_during_its_pass_is_passed_again_after_it_not_beside_it():
    async def main():
        q: WorkQueue = WorkQueue()
        q.add("a")
        key = await q.get()
        q.add("a")  # woken while its pass runs
        q.add("a")
        assert len(q) == 0 and q.active == 1  # no second worker may take it now
        q.done(key)
        assert len(q) == 1 and await q.get() == "a"
        q.done("a")
        assert len(q) == 0 and q.active == 0
    run(main())


def test_timers_the_earliest_wins_and_a_waiting_worker_gets_the_key():
    async def main():
        q: WorkQueue = WorkQueue()
        loop = asyncio.get_running_loop()
        start = loop.time()
        q.add_after("a", 5.0)
        q.add_after("a", 0.05)  # sooner: replaces
        q.add_after("a", 1.0)  # later: ignored
        assert abs(q.timer("a") - (start + 0.05)) < 0.02
        assert await q.get() == "a"
        assert loop.time() - start < 0.5
        assert q.timer("a") is None
    run(main())


def test_a_forgotten_key_leaves_queue_and_timers():
    async def main():
        q: WorkQueue = WorkQueue()
        q.add("a")
        q.add("b")
        q.add_after("c", 0.01)
        q.forget("a")
        q.forget("c")
        await asyncio.sleep(0.05)
        assert len(q) == 1 and await q.get() == "b"
        q.close()
        q.add("d")
        q.add_after("d", 0)
        assert len(q) == 0
    run(main())
