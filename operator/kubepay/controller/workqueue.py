"""The controller's work queue: which resource to handle next, new work before catch-up.

A resource is in the queue at most once and handled by one worker at a time; a change that arrives while
it is being handled queues it again for afterwards. Catch-up (the start-up and periodic Stripe reads) takes
at most `catch_up_slots` workers, so a new payment always finds a free one.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import IntEnum
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Priority(IntEnum):
    CHANGE = 0  # a new or changed resource, or a retry
    CATCH_UP = 1  # a quiet resource whose Stripe object is read in case a webhook was lost


@dataclass
class _Entry:
    priority: Priority
    due: float
    idle: bool  # queued by its idle timer: read Stripe when handled
    seq: int


class WorkQueue(Generic[K]):
    def __init__(self, catch_up_slots: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._slots = catch_up_slots
        self._clock = clock
        self._entries: dict[K, _Entry] = {}
        # One heap per priority, of (due, seq, key); rows whose entry changed or went are skipped.
        self._heaps: dict[Priority, list[tuple[float, int, K]]] = {p: [] for p in Priority}
        self._busy: dict[K, Priority] = {}
        self._catching_up = 0
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def add(self, key: K, priority: Priority = Priority.CHANGE, delay: float = 0.0, idle: bool = False) -> None:
        """Queue `key`, merged with its queued entry: the earlier time wins, with its idle flag (a change before
        the idle timer is no idle moment; its step sets the timer again), and the higher priority."""
        due = self._clock() + delay
        entry = self._entries.get(key)
        if entry is not None:
            idle = entry.idle if entry.due < due else idle if due < entry.due else idle or entry.idle
            due, priority = min(due, entry.due), min(priority, entry.priority)
            if (due, priority, idle) == (entry.due, entry.priority, entry.idle):
                return
        entry = self._entries[key] = _Entry(priority, due, idle, next(self._seq))
        if key not in self._busy:
            self._push(key, entry)

    def _push(self, key: K, entry: _Entry) -> None:
        heapq.heappush(self._heaps[entry.priority], (entry.due, entry.seq, key))
        self._wakeup.set()

    def discard(self, key: K) -> None:
        self._entries.pop(key, None)

    async def take(self) -> tuple[K, Priority, bool]:
        """The next resource due (changes first); the caller must call `done` with it."""
        while True:
            self._wakeup.clear()
            taken = self._due()
            if isinstance(taken, tuple):
                return taken
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=taken)

    def poll(self) -> tuple[K, Priority, bool] | None:
        """The next resource due now, if any (as `take`, without waiting)."""
        taken = self._due()
        return taken if isinstance(taken, tuple) else None

    def _due(self) -> tuple[K, Priority, bool] | float | None:
        """A due entry, or how long until the next one may be (None: nothing to wait for)."""
        now = self._clock()
        wait: float | None = None
        for priority in Priority:
            if priority is Priority.CATCH_UP and self._catching_up >= self._slots:
                continue  # `done` wakes the waiters when a slot frees
            heap = self._heaps[priority]
            while heap:
                due, seq, key = heap[0]
                entry = self._entries.get(key)
                if entry is None or entry.seq != seq or key in self._busy:
                    heapq.heappop(heap)
                    continue
                if due > now:
                    wait = due - now if wait is None else min(wait, due - now)
                    break
                heapq.heappop(heap)
                del self._entries[key]
                self._busy[key] = priority
                self._catching_up += priority is Priority.CATCH_UP
                return key, priority, entry.idle
        return wait

    def done(self, key: K) -> None:
        """The worker is finished with `key`: a change that arrived meanwhile queues it again."""
        self._catching_up -= self._busy.pop(key) is Priority.CATCH_UP
        entry = self._entries.get(key)
        if entry is not None:
            self._push(key, entry)
        self._wakeup.set()
