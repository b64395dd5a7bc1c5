"""The loop each unfinished resource's daemon runs, for both kinds: one step per change, backoff on outages,
a Stripe read when idle; and the single step a finished resource gets when it changes.

A kind supplies only its step (`Kind.step`); the state steps share is a named structure (`LoopState`)
kept in the object's memo, so a finished resource needs no daemon (no task, no timer) at all and its
rare changes (a refund) are mirrored by one step from the watch-event handler. The retry policy is
`kubepay.retry`'s, and a write refused for good is reported once, not retried.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Generic, TypeVar

import kopf

from kubepay import logs
from kubepay.controller import refusals
from kubepay.controller.refusals import REFUSED, Refused
from kubepay.controller.runtime import Runtime
from kubepay.kube.status_writer import apply_observation
from kubepay.mirror import downstream
from kubepay.model.observations import Observation, observe_intent, observe_refund
from kubepay.model.phases import Phase, RefundPhase
from kubepay.model.resources import PaymentIntent, Resource
from kubepay.retry import RETRYABLE, backoff, jittered
from kubepay.stripe.gateway import StripeGateway, StripeRejected

Logger = logging.Logger | logging.LoggerAdapter  # type: ignore[type-arg]
log = logging.getLogger(__name__)

# A step does the work for the resource's current state and says how long it may then stay idle
# (None: until the next change).
Step = Callable[[], Awaitable[float | None]]
R = TypeVar("R", bound=Resource)


class Resync(Enum):
    """Why a step reads Stripe: catching up (at start, when idle) may wait and may skip a recently settled
    resource; a resume always reads; following a refund is urgent."""

    CATCH_UP = "catch-up"
    RESUME = "resume"
    REFUND = "refund"


@dataclass
class LoopState:
    """What the steps of one resource remember between them (in the object's memo)."""

    phase: str | None  # the last phase announced in a k8s event
    resync: Resync | None  # read Stripe at the next step: webhooks may have been lost
    paused: bool = False
    published: list[str] = field(default_factory=list)  # the watermark this process wrote, maybe not echoed yet
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one step at a time: daemon or event handler
    signal: asyncio.Event = field(default_factory=asyncio.Event)  # set on every change


@dataclass(frozen=True)
class Kind(Generic[R]):
    """What the loop needs of a kind: how to parse it, and its work in a step (False: leave it alone)."""

    parse: Callable[[Mapping[str, Any]], R]
    phases: type[Phase] | type[RefundPhase]
    plural: str
    step: Callable[[Runtime, kopf.Body, R, LoopState], Awaitable[bool]]
    resync_at_start: bool

    def unfinished(self, status: Mapping[str, Any], **_: Any) -> bool:
        """kopf's daemon filter: only an unfinished resource has a daemon. It runs on every watch event of
        every object, so it reads the phase alone instead of parsing the status."""
        phase = status.get("phase")
        return not (phase and self.phases(phase).final)


def runtime(memo: kopf.Memo) -> Runtime:
    rt: Runtime = memo["runtime"]
    return rt


def loop_state(kind: Kind[R], body: kopf.Body, memo: kopf.Memo) -> LoopState:
    """The object's LoopState, made at the first event this process sees for it."""
    state: LoopState | None = memo.get("loop")
    if state is None:
        state = memo["loop"] = LoopState(phase=(body.get("status") or {}).get("phase"),
                                         resync=Resync.CATCH_UP if kind.resync_at_start else None)
    return state


async def wake(kind: Kind[R], body: kopf.Body, memo: kopf.Memo, logger: Logger) -> None:
    """On every watch event: wake the daemon; a finished resource (no daemon) gets its one step here, and
    retention learns when it is due."""
    if kind.unfinished(body.get("status") or {}):
        loop_state(kind, body, memo).signal.set()
        return
    rt = runtime(memo)
    resource = kind.parse(body)
    rt.retention.note(resource)
    if "loop" not in memo and downstream.settled(resource):
        return  # finished and mirrored before (a restart lists it): nothing to do, nothing kept
    state = loop_state(kind, body, memo)

    async def step() -> None:
        await _step(kind, rt, body, state)

    async def refused(exc: Refused) -> None:
        await refusals.report(rt.kube, kind.plural, body, exc)

    # kopf does not retry watch-event handlers: an outage is waited out here (this object's later events
    # queue behind it, and kopf hands over only the newest).
    await reconcile(state.signal, step, lambda: None, refused, logger, once=True)


async def _step(kind: Kind[R], rt: Runtime, body: kopf.Body, state: LoopState) -> R | None:
    """One step on a snapshot of the body; the resource, or None when it is left alone (paused)."""
    async with state.lock:
        resource = kind.parse(copy.deepcopy(dict(body)))
        return resource if await kind.step(rt, body, resource, state) else None


async def follow(kind: Kind[R], body: kopf.Body, memo: kopf.Memo, logger: Logger) -> None:
    """Per unfinished resource, until it finishes: the kind's step after every change, Stripe read when idle."""
    rt = runtime(memo)
    state = loop_state(kind, body, memo)

    async def step() -> float | None:
        resource = await _step(kind, rt, body, state)
        return None if resource is None or resource.status.final else jittered(rt.settings.resync_seconds)

    async def refused(exc: Refused) -> None:
        await refusals.report(rt.kube, kind.plural, body, exc)

    await reconcile(state.signal, step, lambda: setattr(state, "resync", Resync.CATCH_UP), refused, logger)


async def reconcile(signal: asyncio.Event, step: Step, on_idle: Callable[[], None],
                    on_refused: Callable[[Refused], Awaitable[None]], logger: Logger, once: bool = False) -> None:
    """Run `step` after every change; retry outages with backoff; call `on_idle` when a timer expires.

    A write refused for good (refusals.REFUSED) is not retried: `on_refused` reports it (once per
    message) and the loop waits for the next change. kopf cancels the task when the resource goes away; a step
    interrupted there is simply repeated by the next process, since every step is idempotent. `once`: return
    after the first step that succeeds or is refused (a finished resource's single step).
    """
    reported: str | None = None

    async def attempt() -> float | None:
        nonlocal reported
        try:
            idle = await step()
        except REFUSED as exc:
            if str(exc) != reported:
                await on_refused(exc)
                reported = str(exc)
            return None
        reported = None
        return idle

    failures = 0
    while True:
        signal.clear()
        try:
            idle = await attempt()
            failures = 0
        except RETRYABLE as exc:
            failures += 1
            logger.warning("reconciling failed, retrying: %s", exc)
            await asyncio.sleep(backoff(failures))
            continue
        if once:
            return
        try:
            await asyncio.wait_for(signal.wait(), timeout=idle)
        except TimeoutError:
            on_idle()


async def read_stripe(gateway: StripeGateway, resource: Resource, stripe_id: str, background: bool) -> Observation:
    """Stripe's object for the resource, as it is now."""
    if isinstance(resource, PaymentIntent):
        return observe_intent(await gateway.retrieve_intent(stripe_id, background))
    return observe_refund(await gateway.retrieve_refund(stripe_id, background))


def recently_settled(rt: Runtime, resource: Resource) -> bool:
    """kubepay wrote what Stripe said (a webhook, a read) less than a resync period ago: no need to read."""
    synced = resource.last_synced_at
    return synced is not None and time.time() - synced < rt.settings.resync_seconds


async def resync(rt: Runtime, resource: Resource, why: Resync) -> bool:
    """Read Stripe and repair status (webhooks get lost); whether status changed. Outages propagate.

    Catching up reads in the background share of the Stripe budget (new work goes first) and skips
    resources a webhook settled recently; a resume reads in the background too; following a refund is urgent.
    """
    if not resource.stripe_id or (why is Resync.CATCH_UP and recently_settled(rt, resource)):
        return False
    about = logs.about(resource.meta.about(), resource.kind)
    try:
        obs = await read_stripe(rt.gateway, resource, resource.stripe_id, background=why is not Resync.REFUND)
    except StripeRejected as exc:
        log.warning("resync of %s failed: %s", resource.stripe_id, exc, extra=about)
        return False
    repaired = await apply_observation(rt.kube, resource.plural, resource.meta, obs)
    if repaired:
        log.info("resync read %s from Stripe", resource.stripe_id, extra=about)
    return repaired
