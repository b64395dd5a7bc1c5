"""The loop each resource's daemon runs, for both kinds: one step per change, backoff on outages, a timer when idle.

A kind supplies only its step (`Follower.step`); the loop's state is a named structure (`LoopState`),
the retry policy is `kubepay.retry`'s, and a write refused for good is reported once, not retried.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, NoReturn, TypeVar

import kopf

from kubepay import logs
from kubepay.controller import refusals
from kubepay.controller.refusals import REFUSED, Refused
from kubepay.controller.runtime import Runtime
from kubepay.kube.status_writer import apply_observation
from kubepay.model.observations import Observation, observe_intent, observe_refund
from kubepay.model.resources import PaymentIntent, Resource
from kubepay.retry import RETRYABLE, backoff, jittered
from kubepay.stripe.gateway import StripeGateway, StripeRejected

Logger = logging.Logger | logging.LoggerAdapter  # type: ignore[type-arg]
log = logging.getLogger(__name__)

# A step does the work for the resource's current state and says how long it may then stay idle
# (None: until the next change).
Step = Callable[[], Awaitable[float | None]]
R = TypeVar("R", bound=Resource)


@dataclass
class LoopState:
    """What a resource's daemon remembers between steps."""

    phase: str | None  # the last phase announced in a k8s event
    resync: bool  # read Stripe at the next step: webhooks may have been lost
    paused: bool = False
    published: list[str] = field(default_factory=list)  # the watermark this process wrote, maybe not echoed yet


@dataclass(frozen=True)
class Kind(Generic[R]):
    """What the loop needs of a kind: how to parse it, and its work in a step (False: leave it alone)."""

    parse: Callable[[Mapping[str, Any]], R]
    plural: str
    step: Callable[[Runtime, kopf.Body, R, LoopState], Awaitable[bool]]
    resync_at_start: bool


def runtime(memo: kopf.Memo) -> Runtime:
    rt: Runtime = memo["runtime"]
    return rt


def wake_event(memo: kopf.Memo) -> asyncio.Event:
    """One per resource: the watch-event handler sets it, the resource's daemon waits on it."""
    event: asyncio.Event | None = memo.get("wake")
    if event is None:
        event = memo["wake"] = asyncio.Event()
    return event


async def follow(kind: Kind[R], body: kopf.Body, memo: kopf.Memo, logger: Logger) -> NoReturn:
    """Per resource, for its lifetime: run the kind's step after every change, resync Stripe when idle."""
    rt = runtime(memo)
    state = LoopState(phase=(body.get("status") or {}).get("phase"), resync=kind.resync_at_start)

    async def step() -> float | None:
        resource = kind.parse(copy.deepcopy(dict(body)))
        if not await kind.step(rt, body, resource, state):
            return None
        return None if resource.status.final else jittered(rt.settings.resync_seconds)

    async def refused(exc: Refused) -> None:
        await refusals.report(rt.kube, kind.plural, body, exc)

    await reconcile_forever(wake_event(memo), step, lambda: setattr(state, "resync", True), refused, logger)


async def reconcile_forever(signal: asyncio.Event, step: Step, on_idle: Callable[[], None],
                            on_refused: Callable[[Refused], Awaitable[None]], logger: Logger) -> NoReturn:
    """Run `step` after every change; retry outages with backoff; call `on_idle` when a timer expires.

    A write refused for good (refusals.REFUSED) is not retried: `on_refused` reports it (once per
    message) and the loop waits for the next change. kopf cancels the task when the resource goes away; a step
    interrupted there is simply repeated by the next process, since every step is idempotent.
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
        try:
            await asyncio.wait_for(signal.wait(), timeout=idle)
        except TimeoutError:
            on_idle()


async def read_stripe(gateway: StripeGateway, resource: Resource, stripe_id: str) -> Observation:
    """Stripe's object for the resource, as it is now."""
    if isinstance(resource, PaymentIntent):
        return observe_intent(await gateway.retrieve_intent(stripe_id))
    return observe_refund(await gateway.retrieve_refund(stripe_id))


async def resync(rt: Runtime, resource: Resource) -> bool:
    """Read Stripe and repair status (webhooks get lost); whether status changed. Outages propagate."""
    if not resource.stripe_id:
        return False
    about = logs.about(resource.meta.about(), resource.kind)
    try:
        obs = await read_stripe(rt.gateway, resource, resource.stripe_id)
    except StripeRejected as exc:
        log.warning("resync of %s failed: %s", resource.stripe_id, exc, extra=about)
        return False
    repaired = await apply_observation(rt.kube, resource.plural, resource.meta, obs)
    if repaired:
        log.info("resync read %s from Stripe", resource.stripe_id, extra=about)
    return repaired
