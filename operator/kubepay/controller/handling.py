"""What a worker does with one resource: its finalizer, its Stripe object's creation, then a reconcile step.

Each call works on the newest body the watch delivered. The return value says what happens next: handle it
again after a delay (a retry, or an unfinished resource's idle timer, which reads Stripe), or wait for the
next change. Every step is idempotent, so a step interrupted by a crash is simply repeated.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from kubepay import logs
from kubepay.controller import reconcile, refusals
from kubepay.controller.outcomes import GiveUp, Retry
from kubepay.controller.reconcile import Kind, LoopState, R, Resync
from kubepay.controller.refusals import REFUSED
from kubepay.controller.runtime import Runtime
from kubepay.kube.client import NotFound
from kubepay.retry import RETRYABLE, backoff, jittered

log = logging.getLogger(__name__)

FINALIZER = "kubepay.io/finalizer"


@dataclass
class Tracked:
    """A resource the controller has work or state for: its newest body and what its steps remember."""

    body: dict[str, Any]
    state: LoopState
    tries: int = 0  # failed attempts in a row of the work at hand
    # Its creation succeeded or failed for good: not tried again by this process (a watch event from before
    # the creation's status write may still come, without the Stripe object's id).
    created: bool = False


@dataclass(frozen=True)
class Again:
    after: float
    idle: bool = False  # the idle timer: read Stripe in case a webhook was lost


def _about(body: dict[str, Any]) -> dict[str, Any]:
    return logs.about(body["metadata"], str(body.get("kind")))


async def handle(rt: Runtime, kind: Kind[R], tracked: Tracked, idle: bool) -> Again | None:
    if idle and tracked.state.resync is None:
        tracked.state.resync = Resync.CATCH_UP
    try:
        if tracked.body["metadata"].get("deletionTimestamp"):
            return await _finalize(rt, kind, tracked)
        if kind.finalize is not None:
            await _add_finalizer(rt, kind, tracked)
        if not tracked.created and kind.needs_creation(tracked.body.get("status") or {}):
            return await _create(rt, kind, tracked)
        return await _reconcile(rt, kind, tracked)
    except RETRYABLE as exc:
        tracked.tries += 1
        delay = backoff(tracked.tries)
        log.warning("handling failed, retrying in %.1fs: %s", delay, exc, extra=_about(tracked.body))
        return Again(delay)
    except NotFound:
        return None  # deleted meanwhile: its DELETED event follows


async def _add_finalizer(rt: Runtime, kind: Kind[R], tracked: Tracked) -> None:
    """A payment's finalizer lets its deletion cancel the Stripe intent first."""
    meta = tracked.body["metadata"]
    finalizers = list(meta.get("finalizers") or ())
    if FINALIZER not in finalizers:
        tracked.body = await rt.kube.set_finalizers(kind.plural, meta["namespace"], meta["name"],
                                                    [*finalizers, FINALIZER], meta["resourceVersion"])


async def _one_off(kind: Kind[R], tracked: Tracked, work: Awaitable[None], rt: Runtime, what: str) -> Again | None:
    """A one-off handler (creation, finalizer) under the error policy: Again when it asks to be retried, else
    None, whether it finished or gave up for good (status and a Warning event then say why)."""
    try:
        await refusals.guarded(work, rt.kube, kind.plural, tracked.body, tracked.tries)
    except Retry as exc:
        tracked.tries += 1
        log.warning("%s is retried in %.1fs: %s", what, exc.delay, exc, extra=_about(tracked.body))
        return Again(exc.delay)
    except GiveUp:
        pass
    tracked.tries = 0
    return None


async def _create(rt: Runtime, kind: Kind[R], tracked: Tracked) -> Again | None:
    body = tracked.body
    again = await _one_off(kind, tracked, kind.create(rt, body, kind.parse(body), tracked.tries), rt,
                           "creating the Stripe object")
    if again is None:
        tracked.created = True  # its status write is the next change
    return again


async def _reconcile(rt: Runtime, kind: Kind[R], tracked: Tracked) -> Again | None:
    """One step; a write refused for good is reported once and waits for the next change."""
    state = tracked.state
    try:
        resource = await reconcile.step(kind, rt, tracked.body, state)
    except REFUSED as exc:
        if str(exc) != state.reported:
            await refusals.report(rt.kube, kind.plural, tracked.body, exc)
            state.reported = str(exc)
        return None
    state.reported = None
    tracked.tries = 0
    if resource is None or resource.status.final:
        return None
    return Again(jittered(rt.settings.resync_seconds), idle=True)


async def _finalize(rt: Runtime, kind: Kind[R], tracked: Tracked) -> Again | None:
    """The finalizer's work (for a payment: cancel it in Stripe), then the finalizer goes, given up or not."""
    body = tracked.body
    meta = body["metadata"]
    finalizers = list(meta.get("finalizers") or ())
    if FINALIZER not in finalizers:
        return None
    if kind.finalize is not None:  # given up or not, deletion is not blocked forever
        work = kind.finalize(rt, body, kind.parse(body), tracked.tries, tracked.state)
        if (again := await _one_off(kind, tracked, work, rt, "the finalizer")) is not None:
            return again
    # The finalizer's work wrote status: release it on the newest version (other finalizers stay as they are).
    meta = (await rt.kube.get_custom(kind.plural, meta["namespace"], meta["name"]))["metadata"]
    await rt.kube.set_finalizers(kind.plural, meta["namespace"], meta["name"],
                                 [f for f in meta.get("finalizers") or () if f != FINALIZER], meta["resourceVersion"])
    return None
