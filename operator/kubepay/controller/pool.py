"""The controller: one watch per kind feeding one work queue, drained by a pool of workers.

Only resources with work or state are kept: an unfinished one's newest body and its `LoopState`, and a
finished one's until its row and messages are out. A finished, mirrored resource costs one short entry (its
phase, so that a later refund's phase change is announced as a change). New and changed resources go
before catch-up reads, which take at most half the workers (`KUBEPAY_WORKERS`, `WorkQueue`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

from kubepay import logs, metrics
from kubepay.controller import handling
from kubepay.controller.handling import Tracked
from kubepay.controller.reconcile import Kind, LoopState, Resync
from kubepay.controller.runtime import Runtime
from kubepay.controller.standby import Standby
from kubepay.controller.workqueue import Priority, WorkQueue
from kubepay.kube.watch import Change, Seen, changes
from kubepay.mirror.downstream import settled
from kubepay.model.resources import PaymentIntent, PaymentRefund, Resource

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # plural, namespace, name
KIND_NAMES = {kind.plural: kind.kind for kind in (PaymentIntent, PaymentRefund)}


class Controller:
    def __init__(self, rt: Runtime, kinds: list[Kind[Any]], standby: Standby) -> None:
        self._rt = rt
        self._kinds = {kind.plural: kind for kind in kinds}
        self._standby = standby
        self._workers = workers = rt.settings.workers
        self._queue: WorkQueue[Key] = WorkQueue(catch_up_slots=max(1, workers // 2))
        self._tracked: dict[Key, Tracked] = {}
        self._phases: dict[Key, str] = {}  # finished and mirrored: the phase last seen
        self._listing: dict[str, set[Key]] = {}
        self._started = {plural: False for plural in self._kinds}

    @property
    def tracked(self) -> int:
        return len(self._tracked)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._standby.run())
            for plural in self._kinds:
                tasks.create_task(self._watch(plural))
            for _ in range(self._workers):
                tasks.create_task(self._work())

    async def _watch(self, plural: str) -> None:
        async for change in changes(self._rt.kube, plural, self._rt.settings.namespace):
            self.seen(plural, change)

    def seen(self, plural: str, change: Change) -> None:
        """One watch event: keep the newest body of a resource with work, queue it."""
        if change.seen is Seen.RELISTING:
            self._listing[plural] = set()
            return
        if change.seen is Seen.SYNCED:
            self._forget_unlisted(plural)
            return
        kind, body = self._kinds[plural], change.body
        meta = body["metadata"]
        key = (plural, meta["namespace"], meta["name"])
        if change.seen is Seen.DELETED:
            self._forget(key, meta.get("uid"))
            return
        listed = change.seen is Seen.LISTED
        if listed:
            self._listing[plural].add(key)
        tracked = self._tracked.get(key)
        if tracked is not None and tracked.body["metadata"]["uid"] != meta["uid"]:
            self._forget(key, tracked.body["metadata"]["uid"])  # deleted and created again under the name
            tracked = None
        status = body.get("status") or {}
        deleting = bool(meta.get("deletionTimestamp"))
        if kind.final(status) and not deleting:
            resource = kind.parse(body)
            self._rt.retention.note(resource)  # when it is due, if it is mirrored
            if tracked is None and self._done(key, resource):
                return
        if tracked is None:
            tracked = self._tracked[key] = Tracked(body, self._new_state(kind, key, status, listed))
        else:
            tracked.body = body
        if listed and not self._started[plural] and not deleting and not kind.needs_creation(status):
            # After a (re)start: catch up with Stripe behind new work, as the idle timer would.
            self._queue.add(key, Priority.CATCH_UP, idle=kind.resync_at_start and not kind.final(status))
        else:
            self._queue.add(key)

    def _done(self, key: Key, resource: Resource) -> bool:
        """A finished resource whose row and messages are out, and whose spec was taken note of, needs nothing:
        remember its phase only."""
        if not settled(resource) or (isinstance(resource, PaymentIntent)
                                     and resource.status.observed_generation != resource.meta.generation):
            return False
        if resource.status.phase is not None:
            self._phases[key] = resource.status.phase.value
        return True

    def _new_state(self, kind: Kind[Any], key: Key, status: dict[str, Any], listed: bool) -> LoopState:
        phase = self._phases.pop(key, None) or status.get("phase")
        resync = Resync.CATCH_UP if listed and kind.resync_at_start else None
        return LoopState(phase=phase, resync=resync)

    def _forget(self, key: Key, uid: str | None) -> None:
        tracked = self._tracked.get(key)
        if tracked is None or tracked.body["metadata"]["uid"] == uid:
            self._tracked.pop(key, None)
            self._queue.discard(key)
        self._phases.pop(key, None)

    def _forget_unlisted(self, plural: str) -> None:
        """A (re)list is complete: what it did not list was deleted meanwhile."""
        listed = self._listing.pop(plural, set())
        for key in [k for k in [*self._tracked, *self._phases] if k[0] == plural and k not in listed]:
            self._forget(key, None)
        if not self._started[plural]:
            self._started[plural] = True
            log.info("listed %d %s, %d with work", len(listed), plural,
                     sum(1 for k in self._tracked if k[0] == plural))

    async def _work(self) -> None:
        while True:
            await self._standby.active()
            key, priority, idle = await self._queue.take()
            if not self._standby.is_active:  # paused while this worker waited for work: leave it queued
                self._queue.add(key, priority, idle=idle)
                self._queue.done(key)
                continue
            await self._handle(key, priority, idle)

    async def handle_due(self) -> None:
        """Handle every resource due now, one after another, in this task."""
        while (taken := self._queue.poll()) is not None:
            await self._handle(*taken)

    async def _handle(self, key: Key, _: Priority, idle: bool) -> None:
        started = time.monotonic()
        outcome: str | None = "error"
        try:
            outcome = await self._handle_tracked(key, idle)
        except Exception:
            log.exception("handling %s/%s failed unexpectedly; retrying in 30s", key[1], key[2],
                          extra=logs.about({"namespace": key[1], "name": key[2]}, KIND_NAMES[key[0]]))
            self._queue.add(key, delay=30)
        finally:
            self._queue.done(key)
            if outcome is not None:
                metrics.RECONCILE_DURATION.labels(KIND_NAMES[key[0]], outcome).observe(time.monotonic() - started)

    async def _handle_tracked(self, key: Key, idle: bool) -> str | None:
        """The outcome (done, requeued or retry), or None when there was nothing to handle."""
        tracked = self._tracked.get(key)
        if tracked is None:
            return None
        kind = self._kinds[key[0]]
        again = await handling.handle(self._rt, kind, tracked, idle)
        if again is not None:
            self._queue.add(key, Priority.CATCH_UP if again.idle else Priority.CHANGE, again.after, again.idle)
            return "requeued" if again.idle else "retry"
        self._drop_if_done(key, kind, tracked)
        return "done"

    def bodies(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(plural, newest body) of every resource with work; consume it before the next await."""
        return ((key[0], tracked.body) for key, tracked in self._tracked.items())

    def _drop_if_done(self, key: Key, kind: Kind[Any], tracked: Tracked) -> None:
        """A finished resource's state goes once its newest body shows it mirrored."""
        body = tracked.body
        if self._tracked.get(key) is not tracked or body["metadata"].get("deletionTimestamp") or key in self._queue:
            return
        if kind.final(body.get("status") or {}) and self._done(key, kind.parse(body)):
            del self._tracked[key]

