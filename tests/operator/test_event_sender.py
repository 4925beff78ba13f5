"""Events posted behind the passes (kube/controller/event_sender.py), and kopf's diff-base left out (kube/kopf_adapter.py)."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from cpt_operator.kube.controller.event_sender import EventSender


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def body(reason: str) -> dict:
    return {"reason": reason, "involvedObject": {"name": "run"}}


async def settle(sender: EventSender, rounds: int = 20) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0.02)


@pytest.mark.asyncio
async def test_events_wait_while_the_queue_is_busy_and_go_out_in_order_when_it_is_idle():
    posted: list[tuple[str, str]] = []
    busy = {"v": True}
    clock = Clock()
    sender = EventSender(lambda ns, b: posted.append((ns, b["reason"])), lambda: busy["v"], clock=clock)
    task = asyncio.create_task(sender.run(poll=0.01))
    await asyncio.sleep(0)
    for i in range(3):
        sender.put("ns", body(f"E{i}"))
    await settle(sender)
    assert posted == [] and len(sender) == 3  # the queue is busy: nothing posted yet
    busy["v"] = False
    await settle(sender)
    assert posted == []  # idle, but not yet for IDLE_FOR (the queue empties briefly between bursts)
    clock.now = 1.5
    await settle(sender)
    assert posted == [("ns", "E0"), ("ns", "E1"), ("ns", "E2")] and len(sender) == 0
    task.cancel()


@pytest.mark.asyncio
async def test_an_event_that_waited_max_defer_is_posted_even_while_busy():
    posted: list[str] = []
    clock = Clock()
    sender = EventSender(lambda ns, b: posted.append(b["reason"]), lambda: True, max_defer=30, clock=clock)
    task = asyncio.create_task(sender.run(poll=0.01))
    sender.put("ns", body("Old"))
    clock.now = 29.0
    await settle(sender)
    assert posted == []
    clock.now = 30.5
    await settle(sender)
    assert posted == ["Old"]
    task.cancel()


@pytest.mark.asyncio
async def test_overdue_events_trickle_out_one_at_a_time_while_runs_wait():
    posted: list[str] = []
    clock = Clock()
    sender = EventSender(lambda ns, b: posted.append(b["reason"]), lambda: True, max_defer=60, trickle=2,
                         clock=clock)
    for i in range(3):
        sender.put("ns", body(f"E{i}"))
    clock.now = 61
    task = asyncio.create_task(sender.run(poll=0.01))
    await asyncio.sleep(0.3)
    assert posted == ["E0"]  # then a pause of 1/trickle s: the workers keep their turn
    await asyncio.sleep(1.0)
    assert posted == ["E0", "E1", "E2"]
    task.cancel()


@pytest.mark.asyncio
async def test_put_from_another_thread_wakes_the_sender_and_failures_do_not_stop_it():
    posted: list[str] = []

    def post(ns: str, b: dict) -> None:
        if b["reason"] == "Bad":
            raise RuntimeError("API down")
        posted.append(b["reason"])

    sender = EventSender(post, lambda: False, idle_for=0)
    task = asyncio.create_task(sender.run(poll=10))  # a long poll: only the wake-up can make it post in time
    await asyncio.sleep(0.05)
    thread = threading.Thread(target=lambda: [sender.put("ns", body(r)) for r in ("Bad", "Good")])
    thread.start()
    thread.join()
    await settle(sender)
    assert posted == ["Good"] and sender.failed == 1 and sender.posted == 1
    task.cancel()


def test_the_oldest_events_are_dropped_past_the_limit():
    sender = EventSender(lambda ns, b: None, lambda: True, limit=3)
    for i in range(5):
        sender.put("ns", body(f"E{i}"))
    assert len(sender) == 3 and sender.dropped == 2
    assert [json.loads(b)["reason"] for _, _, b in sender._take(10)] == ["E2", "E3", "E4"]


@pytest.mark.asyncio
async def test_flush_posts_what_is_held_at_shutdown():
    posted: list[str] = []
    sender = EventSender(lambda ns, b: posted.append(b["reason"]), lambda: True)
    for i in range(120):  # more than one batch
        sender.put("ns", body(f"E{i}"))
    await sender.flush(timeout=5)
    assert len(posted) == 120 and len(sender) == 0


def test_the_operator_registers_no_change_handlers_so_kopf_needs_no_diff_base():
    """handlers.NoDiffBase stops kopf from deep-copying every object on every event; that is only right while no
    change (create/update/delete/field/resume) or daemon/timer handler exists, which would need the diff."""
    import kopf

    from cpt_operator.kube import kopf_adapter as handlers

    registry = kopf.get_default_registry()
    assert list(registry._changing.get_all_handlers()) == []
    assert list(registry._spawning.get_all_handlers()) == []
    assert handlers.NoDiffBase(prefix=handlers.PREFIX).build(body=kopf.Body({"spec": {"a": 1}})) is None
