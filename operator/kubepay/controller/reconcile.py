"""The loop every per-resource daemon runs: one step per change, backoff on outages, a timer when idle."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import NoReturn

import kopf

from kubepay.controller.refusals import REFUSED, Refused
from kubepay.kube.client import Conflict, KubeUnavailable
from kubepay.mirror.publisher import PublishFailed
from kubepay.store import StoreUnavailable
from kubepay.stripe.gateway import StripeUnavailable

Logger = logging.Logger | logging.LoggerAdapter  # type: ignore[type-arg]
RETRYABLE = (StripeUnavailable, KubeUnavailable, StoreUnavailable, PublishFailed, Conflict)
MAX_BACKOFF = 30.0  # after an outage, every resource catches up within this long of the return

# A step does the work for the resource's current state and says how long it may then stay idle
# (None: until the next change).
Step = Callable[[], Awaitable[float | None]]


def backoff(retry: int, base: float = 1.0) -> float:
    """Exponential, capped at MAX_BACKOFF, jittered so that resources failing together retry apart."""
    return float(min(MAX_BACKOFF, base * 2 ** min(retry, 10)) * random.uniform(0.8, 1.2))


def jittered(seconds: float) -> float:
    """Spread periodic work so resources created together do not all call Stripe together."""
    return seconds * random.uniform(0.9, 1.1)


def wake_event(memo: kopf.Memo) -> asyncio.Event:
    """One per resource: the watch-event handler sets it, the resource's daemon waits on it."""
    event: asyncio.Event | None = memo.get("wake")
    if event is None:
        event = memo["wake"] = asyncio.Event()
    return event


async def reconcile_forever(signal: asyncio.Event, step: Step, on_idle: Callable[[], None],
                            on_refused: Callable[[Refused], Awaitable[None]], logger: Logger) -> NoReturn:
    """Run `step` after every change; retry outages with backoff; call `on_idle` when a timer expires.

    A write refused for good (refused_writes.REFUSED) is not retried: `on_refused` reports it (once per
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
