"""Retention: a finished resource is deleted once it is mirrored and published and its time has passed.

Kubernetes is not a ledger: at a million payments a month etcd must not keep every one. Retention is opt-in,
per resource (`spec.ttlSecondsAfterFinished`, like a Job's) or for all (`KUBEPAY_RETAIN_FINISHED`), and
counts from `status.mirroredAt`. The watch shows every finished resource (all of them at start-up), so
`Retention.note` keeps one small entry per resource that will be due and one task deletes each when due:
no listing, no timer per object. The row, the ledger and the Kafka history stay; the finalizer leaves a
finished payment's Stripe object alone, so the deletion has Orphan semantics. A payment is kept while one
of its refunds is unfinished or not yet mirrored.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from kubepay import logs, metrics
from kubepay.kube.client import Conflict, Forbidden, KubeClient, NotFound
from kubepay.mirror.downstream import settled
from kubepay.model.resources import PAYMENT_INTENTS, PAYMENT_REFUNDS, PaymentIntent, PaymentRefund, Resource
from kubepay.retry import RETRYABLE, backoff

log = logging.getLogger(__name__)

# How long a payment that still has an unfinished refund waits before it is looked at again.
REFUND_WAIT = 10.0


@dataclass(frozen=True, order=True)
class Due:
    at: float
    plural: str
    namespace: str
    name: str
    uid: str


def _parse(plural: str, body: dict[str, object]) -> Resource:
    return PaymentIntent.parse(body) if plural == PAYMENT_INTENTS else PaymentRefund.parse(body)


class Retention:
    """When each finished resource is due, and the one task that deletes them."""

    def __init__(self, kube: KubeClient, default_ttl: float | None, clock: Callable[[], float] = time.time) -> None:
        self._kube = kube
        self._default_ttl = default_ttl
        self._clock = clock
        self._heap: list[Due] = []
        self._due: dict[str, float] = {}  # uid -> the latest due time (older heap entries are stale)
        self._sooner = asyncio.Event()

    def due_at(self, resource: Resource, known: float | None = None) -> float | None:
        """When the resource may go: None while it is unfinished, unmirrored, or kept (no retention).

        A resource mirrored before `mirroredAt` existed counts from when it was first seen (`known`: the due
        time noted then).
        """
        own = resource.spec.ttl_seconds_after_finished
        ttl = self._default_ttl if own is None else float(own)
        if ttl is None or resource.meta.deleting or not resource.status.final or not settled(resource):
            return None
        if resource.status.mirrored_at is None:
            return known if known is not None else self._clock() + ttl
        return resource.status.mirrored_at + ttl

    def note(self, resource: Resource) -> None:
        """A watch event of a finished resource: remember when it is due (nothing when it is kept)."""
        uid = resource.meta.uid
        at = self.due_at(resource, self._due.get(uid))
        if at is None or self._due.get(uid) == at:
            return
        self._push(Due(at, resource.plural, resource.meta.namespace, resource.meta.name, uid))

    def _push(self, due: Due) -> None:
        self._due[due.uid] = due.at
        heapq.heappush(self._heap, due)
        if self._heap[0] is due:
            self._sooner.set()

    @property
    def pending(self) -> int:
        """How many resources wait for their time."""
        return len(self._due)

    async def run(self) -> None:
        """Delete what is due, sleeping until the next one; outages are waited out with backoff."""
        failures = 0
        while True:
            try:
                await self.sweep()
                failures = 0
            except RETRYABLE as exc:
                failures += 1
                delay = backoff(failures)
                log.warning("retention waits %.1fs: %s", delay, str(exc) or type(exc).__name__)
                await asyncio.sleep(delay)
                continue
            except Exception:  # a bug or an unexpected answer must not end retention for the process's life
                failures += 1
                log.exception("retention failed; trying again")
                await asyncio.sleep(backoff(failures))
                continue
            self._sooner.clear()
            wait = self._heap[0].at - self._clock() if self._heap else None
            if wait is None or wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._sooner.wait(), timeout=wait)

    async def sweep(self) -> None:
        """Delete each resource that is due now; on an outage what was due stays due (and the outage propagates)."""
        batch = self._take_due()
        try:
            await self._retire(batch)
        except BaseException:
            for due in batch:
                if due.uid not in self._due:
                    self._push(due)
            raise

    def _take_due(self) -> list[Due]:
        now, batch = self._clock(), []
        while self._heap and self._heap[0].at <= now:
            due = heapq.heappop(self._heap)
            if self._due.get(due.uid) == due.at:  # not superseded by a later note
                del self._due[due.uid]
                batch.append(due)
        return batch

    async def _retire(self, batch: list[Due]) -> None:
        """Delete each resource that is still due; a payment's refunds are listed once per namespace."""
        refunds_in: dict[str, list[PaymentRefund]] = {}
        for due in sorted(batch, key=lambda d: d.plural != PAYMENT_REFUNDS):  # refunds first: they free payments
            try:
                body = await self._kube.get_custom(due.plural, due.namespace, due.name)
            except NotFound:
                continue
            resource = _parse(due.plural, body)
            at = self.due_at(resource, due.at)
            if resource.meta.uid != due.uid or at is None:
                continue  # replaced, or changed since: its next watch event notes it again when it is due
            if at > self._clock():
                self._push(Due(at, *_where(due)))
                continue
            if isinstance(resource, PaymentIntent):
                if due.namespace not in refunds_in:
                    refunds_in[due.namespace] = await self._refunds(due.namespace)
                if any(r.spec.payment_intent_name == due.name and not (r.status.final and settled(r))
                       for r in refunds_in[due.namespace]):
                    self._push(Due(self._clock() + REFUND_WAIT, *_where(due)))
                    continue
            await self._delete(resource, str(body["metadata"]["resourceVersion"]))  # type: ignore[index]

    async def _refunds(self, namespace: str) -> list[PaymentRefund]:
        return [PaymentRefund.parse(body) for body in await self._kube.list_custom(PAYMENT_REFUNDS, namespace)]

    async def _delete(self, resource: Resource, resource_version: str) -> None:
        meta = resource.meta
        try:
            await self._kube.delete_custom(resource.plural, meta.namespace, meta.name, meta.uid, resource_version)
        except (NotFound, Conflict):
            return  # gone already, or changed: a changed resource is noted again by its watch event
        except Forbidden as exc:
            log.warning("retention may not delete %s %s/%s (turn on the chart's controller.retention.enabled): %s",
                        resource.kind, meta.namespace, meta.name, exc, extra=logs.about(meta.about(), resource.kind))
            return
        metrics.RETAINED_AWAY.labels(resource.kind).inc()
        log.info("retention deleted finished %s %s/%s; its row and history stay", resource.kind, meta.namespace,
                 meta.name, extra=logs.about(meta.about(), resource.kind))


def _where(due: Due) -> tuple[str, str, str, str]:
    return due.plural, due.namespace, due.name, due.uid

