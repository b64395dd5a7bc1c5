"""Write what Stripe reported into a resource's status without ever moving it backwards.

Every write carries the resourceVersion it was computed from: if anyone wrote in between, the API
server answers 409 and the patch is recomputed from the fresh object.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kubepay import logs
from kubepay.kube.client import PAYMENT_INTENTS, Conflict, KubeClient
from kubepay.model.conditions import now_iso, observed, sentence, set_condition
from kubepay.model.phases import Observation, Phase, supersedes

log = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES = 10

# Computes a status merge patch from the current object; None means nothing to write.
PatchFn = Callable[[dict[str, Any]], dict[str, Any] | None]


async def write_status(kube: KubeClient, plural: str, namespace: str, name: str, uid: str | None,
                       compute: PatchFn) -> dict[str, Any] | None:
    """Read, compute, write with a precondition; retry on conflicts. Returns the patch written, if any."""
    for _ in range(MAX_CONFLICT_RETRIES):
        body = await kube.get_custom(plural, namespace, name)
        if uid is not None and body["metadata"].get("uid") != uid:
            log.info("update for a replaced %s ignored: %s/%s", plural, namespace, name,
                     extra=logs.about({"namespace": namespace, "name": name, "uid": uid}))
            return None
        patch = compute(body)
        if not patch:
            return None
        try:
            await kube.patch_status(plural, namespace, name, patch, body["metadata"].get("resourceVersion"))
        except Conflict:
            continue
        return patch
    raise Conflict(f"status of {namespace}/{name} kept changing; gave up after {MAX_CONFLICT_RETRIES} tries")


async def write_not_synced(kube: KubeClient, plural: str, body: dict[str, Any], reason: str, message: str,
                           extra: dict[str, Any] | None = None, failed: bool = False) -> None:
    """Synced=False and Ready=False with the reason, plus `extra` status fields (a refusal, a failure).

    `failed`: the object can no longer succeed, so Failed=True too (what `kubectl wait --for=condition=Failed`
    waits for). No precondition: only the controller writes these, before Stripe holds anything to report.
    """
    meta = body["metadata"]
    generation = meta.get("generation")
    message = sentence(message)
    conditions = set_condition((body.get("status") or {}).get("conditions"), "Synced", False, reason, message,
                               generation)
    conditions = set_condition(conditions, "Ready", False, "Failed" if failed else reason, message, generation)
    if failed:
        conditions = set_condition(conditions, "Failed", True, reason, message, generation)
    await kube.patch_status(plural, meta["namespace"], meta["name"],
                            {**(extra or {}), **observed(conditions, generation)}, None)


def recorded_by(status: dict[str, Any], event_id: str | None) -> bool:
    """Whether status already holds what Stripe event `event_id` reported (it was applied before)."""
    return event_id is not None and (status.get("stripe") or {}).get("lastEventId") == event_id


def ready_condition(status: dict[str, Any], phase: Phase, generation: int | None) -> list[dict[str, Any]]:
    """Ready (it succeeded) and Failed (it can no longer succeed), from what Stripe reports.

    A declined payment (phase Failed) may still be paid with another card: only a canceled one has failed.
    """
    message = f"Stripe reports {status.get('stripe', {}).get('status', 'unknown')}."
    ready = phase in (Phase.SUCCEEDED, Phase.PARTIALLY_REFUNDED, Phase.REFUNDED)
    conditions = set_condition(status.get("conditions"), "Ready", ready, phase.value, message, generation)
    if phase is Phase.CANCELED:
        return set_condition(conditions, "Failed", True, "Canceled", "The payment was canceled in Stripe.",
                             generation)
    if phase is Phase.FAILED:
        return set_condition(conditions, "Failed", False, "Retryable",
                             "The last attempt failed; the customer may pay again.", generation)
    return set_condition(conditions, "Failed", False, phase.value, message, generation)


def observation_status(current: dict[str, Any], obs: Observation, generation: int | None) -> dict[str, Any]:
    """The status fields an observation sets (a merge patch)."""
    stripe_block: dict[str, Any] = {
        "paymentIntentId": obs.payment_intent_id,
        "status": obs.stripe_status,
        "livemode": obs.livemode,
        "lastEventCreated": max(obs.created, int((current.get("stripe") or {}).get("lastEventCreated") or 0)),
        "lastSyncedAt": now_iso(),
    }
    if obs.event_id:
        stripe_block["lastEventId"] = obs.event_id
    if obs.payment_method:
        stripe_block["paymentMethod"] = obs.payment_method
    if obs.amount is not None:
        stripe_block["amount"] = obs.amount
    patch: dict[str, Any] = {
        "phase": obs.phase.value,
        "stripe": stripe_block,
        "amountReceived": obs.amount_received,
        "failure": obs.failure,
    }
    if obs.amount_refunded is not None:
        patch["amountRefunded"] = obs.amount_refunded
    elif current.get("amountRefunded") is None:
        patch["amountRefunded"] = 0  # nothing known to be refunded yet: `kubectl get pi -o wide` shows 0
    if obs.amount_capturable is not None:
        patch["amountCapturable"] = obs.amount_capturable
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
    """Apply `obs` to a PaymentIntent if it is newer than what status holds, plus the `always` fields.

    Returns whether the observation is in status: applied now, or applied before by the same Stripe event
    (a concurrent duplicate delivery, or a redelivery after a crash), so the ledger records `applied` for it.
    """
    applied = False

    def compute(body: dict[str, Any]) -> dict[str, Any] | None:
        nonlocal applied
        current: dict[str, Any] = body.get("status") or {}
        patch: dict[str, Any] = dict(always or {})
        if supersedes(current, obs):
            applied = True
            patch.update(observation_status({**current, **patch}, obs, body["metadata"].get("generation")))
        else:
            applied = recorded_by(current, obs.event_id)
        return patch or None

    await write_status(kube, PAYMENT_INTENTS, namespace, name, uid, compute)
    return applied
