"""Apply a Stripe event to the resources it concerns: from a webhook delivery or from the Events API."""

from __future__ import annotations

import logging
from typing import Any

from kubepay import identity, logs, metrics
from kubepay.kube_client import KubeClient, NotFound
from kubepay.phases import Observation, observe_intent, observe_refunded_charge
from kubepay.refunds import PAYMENT_REFUNDS, RefundObservation, refund_status_patch
from kubepay.status_writer import apply_observation, recorded_by, write_status
from kubepay.store import Store

log = logging.getLogger(__name__)

# payment_intent.* events whose object is the intent itself, so its status is the news.
INTENT_EVENTS = frozenset({
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "payment_intent.processing",
    "payment_intent.requires_action",
    "payment_intent.amount_capturable_updated",
})
REFUND_EVENTS = frozenset({"refund.created", "refund.updated", "refund.failed", "charge.refund.updated"})
CHARGE_EVENTS = frozenset({"charge.refunded"})
HANDLED = INTENT_EVENTS | REFUND_EVENTS | CHARGE_EVENTS


def intent_id_of(event: dict[str, Any]) -> str | None:
    obj = event["data"]["object"]
    if obj.get("object") == "payment_intent":
        return str(obj.get("id"))
    found = obj.get("payment_intent")
    return str(found) if isinstance(found, str) else None


async def concerns(event: dict[str, Any], store: Store, namespace: str | None) -> bool:
    """Whether the event is about a resource this controller manages (Stripe accounts are shared)."""
    obj = event["data"]["object"]
    if event["type"] in CHARGE_EVENTS:
        found = await store.find_resource_by_intent(str(obj.get("payment_intent")))
        return found is not None and (namespace is None or found[0] == namespace)
    target = _target(obj.get("metadata") or {})
    return target is not None and (namespace is None or target[0] == namespace)


async def handle(event: dict[str, Any], store: Store, kube: KubeClient, namespace: str | None = None) -> str:
    """Record in the ledger, then apply once. Returns the outcome; outages propagate (retry later).

    With `namespace`, events for resources elsewhere are left for whoever watches there.
    """
    new = await store.record_event(event, intent_id_of(event))
    if not new and await store.event_processed(event["id"]):
        return "duplicate"
    outcome, target = await _apply(event, store, kube, namespace)
    await store.mark_processed(event["id"], outcome)
    metrics.WEBHOOK_EVENTS.labels(event["type"] if event["type"] in HANDLED else "other", outcome).inc()
    meta = {"namespace": target[0], "name": target[1], "uid": target[2]} if target else {}
    kind = "PaymentRefund" if event["type"] in REFUND_EVENTS else "PaymentIntent"
    log.info("Stripe event %s %s: %s", event["id"], event["type"], outcome,
             extra=logs.about(meta, kind, event["id"]) if target else {"stripe_event_id": event["id"]})
    return outcome


Target = tuple[str, str, str]  # namespace, name, uid of the resource an event is about


async def _apply(event: dict[str, Any], store: Store, kube: KubeClient,
                 namespace: str | None) -> tuple[str, Target | None]:
    event_type, obj = event["type"], event["data"]["object"]
    created = int(event.get("created") or 0)
    target: Target | None = None
    try:
        if event_type in INTENT_EVENTS:
            target = _target(obj.get("metadata") or {})
            return await _apply_intent(kube, target, observe_intent(obj, created, event["id"]), namespace), target
        if event_type in CHARGE_EVENTS:
            target = await store.find_resource_by_intent(str(obj.get("payment_intent")))
            charge = observe_refunded_charge(obj, created, event["id"])
            return await _apply_intent(kube, target, charge, namespace), target
        if event_type in REFUND_EVENTS:
            target = _target(obj.get("metadata") or {})
            if target is None or (namespace and target[0] != namespace):
                return "unknown_refund", target
            refund = RefundObservation.of(obj, created, event["id"])
            seen = False

            def compute(body: dict[str, Any]) -> dict[str, Any] | None:
                nonlocal seen
                seen = recorded_by(body.get("status") or {}, refund.event_id)
                return refund_status_patch(body, refund)

            written = await write_status(kube, PAYMENT_REFUNDS, target[0], target[1], target[2], compute)
            return ("applied" if written or seen else "stale"), target
    except NotFound:
        return "unknown_payment", target
    return "unhandled", None


def _target(metadata: dict[str, Any]) -> Target | None:
    namespace, name = metadata.get(identity.METADATA_NAMESPACE), metadata.get(identity.METADATA_NAME)
    if not namespace or not name:
        return None
    return str(namespace), str(name), str(metadata.get(identity.METADATA_UID) or "")


async def _apply_intent(kube: KubeClient, target: Target | None, obs: Observation,
                        namespace: str | None) -> str:
    if target is None or (namespace and target[0] != namespace):
        return "unknown_payment"
    applied = await apply_observation(kube, target[0], target[1], target[2] or None, obs)
    return "applied" if applied else "stale"
