"""Apply a Stripe event to the resources it concerns: from a webhook delivery or from the Events API."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from kubepay import logs, metrics
from kubepay.kube.client import KubeClient, NotFound
from kubepay.kube.status_writer import apply_observation, recorded_by, write_status
from kubepay.model import identity
from kubepay.model.phases import Observation, observe_intent, observe_refunded_charge
from kubepay.model.refunds import PAYMENT_REFUNDS, RefundObservation, refund_status_patch
from kubepay.store import Store
from kubepay.stripe import event_shape
from kubepay.stripe.event_shape import CHARGE_TYPES, INTENT_TYPES, REFUND_TYPES, InvalidEvent

log = logging.getLogger(__name__)

HANDLED = INTENT_TYPES | REFUND_TYPES | CHARGE_TYPES  # event_shape knows the fields of each


def intent_id_of(event: dict[str, Any]) -> str | None:
    obj = event["data"]["object"]
    if obj.get("object") == "payment_intent":
        return str(obj.get("id"))
    found = obj.get("payment_intent")
    return str(found) if isinstance(found, str) else None


async def concerns(event: dict[str, Any], store: Store, namespace: str | None) -> bool:
    """Whether the event is about a resource this controller manages (Stripe accounts are shared)."""
    obj = event["data"]["object"]
    if event["type"] in CHARGE_TYPES:
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
    kind = "PaymentRefund" if event["type"] in REFUND_TYPES else "PaymentIntent"
    log.info("Stripe event %s %s: %s", event["id"], event["type"], outcome,
             extra=logs.about(meta, kind, event["id"]) if target else {"stripe_event_id": event["id"]})
    return outcome


async def replay_failed(store: Store, kube: KubeClient, namespace: str | None,
                        event_ids: Sequence[str] = ()) -> list[tuple[str, str]]:
    """Apply again ledgered events that were invalid or left unprocessed; (event id, outcome) for each."""
    results: list[tuple[str, str]] = []
    for event_id, body in await store.failed_events(event_ids):
        try:
            event = event_shape.parse(body.encode())
        except (event_shape.NotAnEvent, event_shape.InvalidEvent) as exc:
            results.append((event_id, f"invalid: {exc}"))
            continue
        await store.reopen_event(event, intent_id_of(event))
        results.append((event_id, await handle(event, store, kube, namespace)))
    return results


async def record_invalid(exc: InvalidEvent, store: Store) -> None:
    """Ledger a signed event kubepay cannot apply, with the reason; `kubepay replay-events` retries it."""
    await store.record_invalid_event(exc.event_id, exc.event_type, exc.reason, exc.body)
    metrics.WEBHOOK_EVENTS.labels(exc.event_type if exc.event_type in HANDLED else "other", "invalid").inc()
    log.warning("Stripe event %s %s is invalid: %s", exc.event_id, exc.event_type, exc.reason,
                extra={"stripe_event_id": exc.event_id})


Target = tuple[str, str, str]  # namespace, name, uid of the resource an event is about


async def _apply(event: dict[str, Any], store: Store, kube: KubeClient,
                 namespace: str | None) -> tuple[str, Target | None]:
    event_type, obj = event["type"], event["data"]["object"]
    created = int(event.get("created") or 0)
    target: Target | None = None
    try:
        if event_type in INTENT_TYPES:
            target = _target(obj.get("metadata") or {})
            return await _apply_intent(kube, target, observe_intent(obj, created, event["id"]), namespace), target
        if event_type in CHARGE_TYPES:
            target = await store.find_resource_by_intent(str(obj.get("payment_intent")))
            charge = observe_refunded_charge(obj, created, event["id"])
            return await _apply_intent(kube, target, charge, namespace), target
        if event_type in REFUND_TYPES:
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
