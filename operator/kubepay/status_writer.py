"""Write what Stripe reported into a PaymentIntent's status without ever moving it backwards."""

from __future__ import annotations

import logging
from typing import Any

from kubepay.conditions import now_iso, set_condition
from kubepay.kube_client import PAYMENT_INTENTS, Conflict, KubeClient
from kubepay.phases import Observation, Phase, supersedes

log = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES = 10


def ready_condition(status: dict[str, Any], phase: Phase, generation: int | None) -> list[dict[str, Any]]:
    ready = phase in (Phase.SUCCEEDED, Phase.PARTIALLY_REFUNDED, Phase.REFUNDED)
    message = f"Stripe reports {status.get('stripe', {}).get('status', 'unknown')}"
    conditions: list[dict[str, Any]] = status.get("conditions") or []
    return set_condition(conditions, "Ready", ready, phase.value, message, generation)


def observation_status(current: dict[str, Any], obs: Observation, generation: int | None) -> dict[str, Any]:
    """The status fields an observation sets (a merge patch)."""
    stripe_block: dict[str, Any] = {
        "paymentIntentId": obs.payment_intent_id,
        "status": obs.stripe_status,
        "livemode": obs.livemode,
        "lastEventCreated": obs.created,
        "lastSyncedAt": now_iso(),
    }
    if obs.event_id:
        stripe_block["lastEventId"] = obs.event_id
    if obs.payment_method:
        stripe_block["paymentMethod"] = obs.payment_method
    patch: dict[str, Any] = {
        "phase": obs.phase.value,
        "stripe": stripe_block,
        "amountReceived": obs.amount_received,
        "failure": obs.failure,
    }
    merged = {**current, **patch, "stripe": {**(current.get("stripe") or {}), **stripe_block}}
    patch["conditions"] = ready_condition(merged, obs.phase, generation)
    return patch


async def apply_observation(
    kube: KubeClient,
    namespace: str,
    name: str,
    uid: str | None,
    obs: Observation,
    always: dict[str, Any] | None = None,
) -> bool:
    """Apply `obs` if it is newer than what status holds, plus the `always` fields; retry on conflicts.

    Returns whether the observation itself was applied.
    """
    for _ in range(MAX_CONFLICT_RETRIES):
        body = await kube.get_custom(PAYMENT_INTENTS, namespace, name)
        if uid is not None and body["metadata"].get("uid") != uid:
            log.info("observation for a replaced resource ignored: %s/%s", namespace, name)
            return False
        current: dict[str, Any] = body.get("status") or {}
        applies = supersedes(current, obs)
        patch: dict[str, Any] = dict(always or {})
        if applies:
            patch.update(observation_status({**current, **patch}, obs, body["metadata"].get("generation")))
        if not patch:
            return False
        try:
            await kube.patch_status(
                PAYMENT_INTENTS, namespace, name, patch, body["metadata"].get("resourceVersion")
            )
        except Conflict:
            continue
        return applies
    raise Conflict(f"status of {namespace}/{name} kept changing; gave up after {MAX_CONFLICT_RETRIES} tries")
