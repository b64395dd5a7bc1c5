"""The reconcile step both kinds share, and what it remembers between steps (`LoopState`).

A kind supplies its parts (`Kind`): how to parse it, how to create its Stripe object, its step and, for a
payment, its finalizer. `controller.handling` runs them for each resource a worker takes; a finished
resource keeps no state at all once its row and messages are out.
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

from kubepay import logs
from kubepay.controller.runtime import Runtime
from kubepay.kube.status_writer import apply_observation
from kubepay.model.observations import Observation, observe_intent, observe_refund
from kubepay.model.phases import Phase, RefundPhase
from kubepay.model.resources import PaymentIntent, Resource
from kubepay.stripe.gateway import StripeGateway, StripeRejected

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Resource)


class Resync(Enum):
    """Why a step reads Stripe: catching up (at start, when idle) may wait and may skip a recently settled
    resource; a resume always reads; following a refund is urgent."""

    CATCH_UP = "catch-up"
    RESUME = "resume"
    REFUND = "refund"


@dataclass
class LoopState:
    """What the steps of one resource remember between them."""

    phase: str | None  # the last phase announced in a k8s event
    resync: Resync | None  # read Stripe at the next step: webhooks may have been lost
    paused: bool = False
    published: list[str] = field(default_factory=list)  # the watermark this process wrote, maybe not echoed yet
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one step at a time: reconcile or finalizer
    reported: str | None = None  # the refusal last reported (each is reported once)


@dataclass(frozen=True)
class Kind(Generic[R]):
    """What the controller needs of a kind: how to parse it, create its Stripe object, step and finalize it."""

    parse: Callable[[Mapping[str, Any]], R]
    phases: type[Phase] | type[RefundPhase]
    plural: str
    needs_creation: Callable[[Mapping[str, Any]], bool]  # reads the status alone: it runs on every change
    create: Callable[[Runtime, Mapping[str, Any], R, int], Awaitable[None]]
    step: Callable[[Runtime, Mapping[str, Any], R, LoopState], Awaitable[bool]]
    finalize: Callable[[Runtime, Mapping[str, Any], R, int, LoopState], Awaitable[None]] | None
    resync_at_start: bool

    def final(self, status: Mapping[str, Any]) -> bool:
        """Whether the phase is final, read without parsing the status."""
        phase = status.get("phase")
        return bool(phase and self.phases(phase).final)


async def step(kind: Kind[R], rt: Runtime, body: Mapping[str, Any], state: LoopState) -> R | None:
    """One step on a snapshot of the body; the resource, or None when it is left alone (paused)."""
    async with state.lock:
        resource = kind.parse(copy.deepcopy(dict(body)))
        return resource if await kind.step(rt, body, resource, state) else None


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
        log.debug("resync read %s from Stripe", resource.stripe_id, extra=about)
    return repaired
