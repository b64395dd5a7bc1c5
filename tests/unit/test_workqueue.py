"""The controller's work queue: new work before catch-up, one worker per resource, timers."""

from __future__ import annotations

import asyncio

from kubepay.controller.workqueue import Priority, WorkQueue


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _drain(queue: WorkQueue[str]) -> list[str]:
    taken = []
    while (item := queue.poll()) is not None:
        taken.append(item[0])
    return taken


def test_a_change_goes_before_every_catch_up_queued_earlier() -> None:
    queue: WorkQueue[str] = WorkQueue(catch_up_slots=100)
    for n in range(5):
        queue.add(f"old-{n}", Priority.CATCH_UP, idle=True)
    queue.add("new")
    assert queue.poll() == ("new", Priority.CHANGE, False)
    assert queue.poll() == ("old-0", Priority.CATCH_UP, True)


def test_catch_up_takes_at_most_its_slots_and_a_change_still_gets_a_worker() -> None:
    queue: WorkQueue[str] = WorkQueue(catch_up_slots=2)
    for n in range(5):
        queue.add(f"old-{n}", Priority.CATCH_UP)
    assert _drain(queue) == ["old-0", "old-1"]  # both slots busy
    queue.add("new")
    assert _drain(queue) == ["new"]
    queue.done("old-0")
    assert _drain(queue) == ["old-2"]


def test_a_resource_is_queued_once_and_never_handled_by_two_workers() -> None:
    queue: WorkQueue[str] = WorkQueue(catch_up_slots=1)
    queue.add("a")
    queue.add("a")
    assert _drain(queue) == ["a"]
    queue.add("a")  # a change while it is being handled: handled again afterwards, not meanwhile
    assert _drain(queue) == []
    assert "a" in queue
    queue.done("a")
    assert _drain(queue) == ["a"]
    queue.done("a")
    assert len(queue) == 0


def test_a_timer_is_due_at_its_time_and_an_earlier_change_replaces_it() -> None:
    clock = Clock()
    queue: WorkQueue[str] = WorkQueue(catch_up_slots=1, clock=clock)
    queue.add("a", Priority.CATCH_UP, delay=600, idle=True)
    assert queue.poll() is None
    queue.add("a", Priority.CHANGE, delay=5)  # a change first: no idle moment (its step sets a new timer)
    queue.add("a", Priority.CATCH_UP, delay=700, idle=True)  # a later timer changes nothing
    clock.now += 5
    assert queue.poll() == ("a", Priority.CHANGE, False)
    queue.done("a")
    queue.add("b", Priority.CATCH_UP, delay=600)
    clock.now += 599
    assert queue.poll() is None
    clock.now += 1
    assert queue.poll() == ("b", Priority.CATCH_UP, False)


def test_a_discarded_resource_is_not_handled() -> None:
    queue: WorkQueue[str] = WorkQueue(catch_up_slots=1)
    queue.add("gone")
    queue.discard("gone")
    assert queue.poll() is None


async def test_take_waits_for_work() -> None:
    queue: WorkQueue[str] = WorkQueue(catch_up_slots=1)
    taking = asyncio.create_task(queue.take())
    await asyncio.sleep(0)
    assert not taking.done()
    queue.add("a")
    async with asyncio.timeout(5):
        assert await taking == ("a", Priority.CHANGE, False)
