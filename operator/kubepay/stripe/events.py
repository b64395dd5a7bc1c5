"""Apply a Stripe event to the resources it concerns: from a webhook delivery or from the Events API."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from kubepay import logs, metrics
from kubepay.kube.client import KubeClient, NotFound
from kubepay.kube.status_writer import apply_observation
from kubepay.model import identity
from kubepay.model.observations import Observation, observe_intent, observe_refund, observe_refunded_charge
from kubepay.model.resources import PAYMENT_INTENTS, PAYMENT_REFUNDS, Meta
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


async def _namespace_of(event: dict[str, Any], store: Store) -> str | None:
    """The namespace of the resource the event is about, as kubepay's metadata or its mirror row says."""
    obj = event["data"]["object"]
    if event["type"] in CHARGE_TYPES:
        found = await store.rows.find_resource_by_intent(str(obj.get("payment_intent")))
        return found[0] if found else None
    target = _target(obj.get("metadata") or {})
    return target.namespace if target else None


async def concerns(event: dict[str, Any], store: Store, namespace: str | None) -> bool:
    """Whether the event is about a resource this controller manages (Stripe accounts are shared)."""
    owner = await _namespace_of(event, store)
    return owner is not None and (namespace is None or owner == namespace)


async def handle(event: dict[str, Any], store: Store, kube: KubeClient, namespace: str | None = None) -> str:
    """Record in the ledger, then apply once. Returns the outcome; outages propagate (retry later).

    With `namespace`, an event about a resource in another namespace belongs to the release (shard) that
    watches there: it is answered `unknown_payment` and not ledgered, since shards may share one database
    and the ledger records an event once, for the shard that applies it.
    """
    if namespace is not None and (owner := await _namespace_of(event, store)) not in (None, namespace):
        log.info("Stripe event %s %s: for namespace %s, left to its release", event["id"], event["type"], owner,
                 extra={"stripe_event_id": event["id"]})
        return "unknown_refund" if event["type"] in REFUND_TYPES else "unknown_payment"
    new = await store.ledger.record(event, intent_id_of(event))
    if not new and await store.ledger.processed(event["id"]):
        return "duplicate"
    outcome, target = await _apply(event, store, kube, namespace)
    await store.ledger.mark_processed(event["id"], outcome)
    metrics.WEBHOOK_EVENTS.labels(event["type"] if event["type"] in HANDLED else "other", outcome).inc()
    kind = "PaymentRefund" if event["type"] in REFUND_TYPES else "PaymentIntent"
    log.info("Stripe event %s %s: %s", event["id"], event["type"], outcome,
             extra=logs.about(target.about(), kind, event["id"]) if target else {"stripe_event_id": event["id"]})
    return outcome


async def replay_failed(store: Store, kube: KubeClient, namespace: str | None,
                        event_ids: Sequence[str] = ()) -> list[tuple[str, str]]:
    """Apply again ledgered events that were invalid or left unprocessed; (event id, outcome) for each."""
    results: list[tuple[str, str]] = []
    for event_id, body in await store.ledger.unapplied(event_ids):
        try:
            event = event_shape.parse(body.encode())
        except (event_shape.NotAnEvent, event_shape.InvalidEvent) as exc:
            results.append((event_id, f"invalid: {exc}"))
            continue
        await store.ledger.reopen(event, intent_id_of(event))
        results.append((event_id, await handle(event, store, kube, namespace)))
    return results


async def record_invalid(exc: InvalidEvent, store: Store) -> None:
    """Ledger a signed event kubepay cannot apply, with the reason; `kubepay replay-events` retries it."""
    await store.ledger.record_invalid(exc.event_id, exc.event_type, exc.reason, exc.body)
    metrics.WEBHOOK_EVENTS.labels(exc.event_type if exc.event_type in HANDLED else "other", "invalid").inc()
    log.warning("Stripe event %s %s is invalid: %s", exc.event_id, exc.event_type, exc.reason,
                extra={"stripe_event_id": exc.event_id})


async def _apply(event: dict[str, Any], store: Store, kube: KubeClient,
                 namespace: str | None) -> tuple[str, Meta | None]:
    """Apply to the resource the event concerns; (outcome, the resource) with `applied` or `stale`."""
    event_type, obj = event["type"], event["data"]["object"]
    created = int(event.get("created") or 0)
    obs: Observation
    if event_type in INTENT_TYPES:
        target, plural = _target(obj.get("metadata") or {}), PAYMENT_INTENTS
        obs = observe_intent(obj, created, event["id"])
    elif event_type in CHARGE_TYPES:
        found = await store.rows.find_resource_by_intent(str(obj.get("payment_intent")))
        target = Meta.named(*found) if found else None
        plural, obs = PAYMENT_INTENTS, observe_refunded_charge(obj, created, event["id"])
    elif event_type in REFUND_TYPES:
        target, plural = _target(obj.get("metadata") or {}), PAYMENT_REFUNDS
        obs = observe_refund(obj, created, event["id"])
    else:
        return "unhandled", None
    unknown = "unknown_refund" if plural == PAYMENT_REFUNDS else "unknown_payment"
    if target is None or (namespace and target.namespace != namespace):
        return unknown, target
    try:
        applied = await apply_observation(kube, plural, target, obs)
    except NotFound:
        return "unknown_payment", target
    return ("applied" if applied else "stale"), target


def _target(metadata: dict[str, Any]) -> Meta | None:
    namespace, name = metadata.get(identity.METADATA_NAMESPACE), metadata.get(identity.METADATA_NAME)
    if not namespace or not name:
        return None
    return Meta.named(str(namespace), str(name), str(metadata.get(identity.METADATA_UID) or ""))
