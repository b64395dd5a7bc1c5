"""Apply a Stripe event to the resources it concerns: from a webhook delivery or from the Events API."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
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
from kubepay.stripe.seen_events import SeenEvents

log = logging.getLogger(__name__)

HANDLED = INTENT_TYPES | REFUND_TYPES | CHARGE_TYPES  # event_shape knows the fields of each


def intent_id_of(event: dict[str, Any]) -> str | None:
    obj = event["data"]["object"]
    if obj.get("object") == "payment_intent":
        return str(obj.get("id"))
    found = obj.get("payment_intent")
    return str(found) if isinstance(found, str) else None


@dataclass(frozen=True)
class Located:
    """What an event is about: the kind, the resource (None: no kubepay resource), and what it reports."""

    plural: str
    target: Meta | None
    observation: Observation

    @property
    def unknown(self) -> str:
        return "unknown_refund" if self.plural == PAYMENT_REFUNDS else "unknown_payment"


async def _locate(event: dict[str, Any], store: Store) -> Located | None:
    """Find the resource from kubepay's metadata on the Stripe object, or from the mirror row (charges).

    None for an event type kubepay does not handle.
    """
    event_type, obj = event["type"], event["data"]["object"]
    created = int(event.get("created") or 0)
    if event_type in INTENT_TYPES:
        return Located(PAYMENT_INTENTS, _target(obj.get("metadata") or {}), observe_intent(obj, created, event["id"]))
    if event_type in CHARGE_TYPES:
        found = await store.rows.find_resource_by_intent(str(obj.get("payment_intent")))
        return Located(PAYMENT_INTENTS, Meta.named(*found) if found else None,
                       observe_refunded_charge(obj, created, event["id"]))
    if event_type in REFUND_TYPES:
        return Located(PAYMENT_REFUNDS, _target(obj.get("metadata") or {}), observe_refund(obj, created, event["id"]))
    return None


async def concerns(event: dict[str, Any], store: Store, namespace: str | None) -> bool:
    """Whether the event is about a resource this controller manages (Stripe accounts are shared)."""
    located = await _locate(event, store)
    return located is not None and located.target is not None and namespace in (None, located.target.namespace)


async def handle(event: dict[str, Any], store: Store, kube: KubeClient, namespace: str | None = None,
                 seen: SeenEvents | None = None) -> str:
    """Record in the ledger, then apply once. Returns the outcome; outages propagate (retry later).

    With `namespace`, an event about a resource in another namespace belongs to the release (shard) that
    watches there: it is answered `unknown_payment` and not ledgered, since shards may share one database
    and the ledger records an event once, for the shard that applies it. With `seen` (the receiver's), an
    event this process sees for the first time reads its resource while the ledger records it.
    """
    located = await _locate(event, store)
    target = located.target if located else None
    if located and target and namespace not in (None, target.namespace):
        log.debug("Stripe event %s %s: for namespace %s, left to its release", event["id"], event["type"],
                 target.namespace, extra={"stripe_event_id": event["id"]})
        return located.unknown
    read = _read_ahead(located, kube) if seen is not None and seen.first_sight(event["id"]) else None
    try:
        if not await store.ledger.record(event, intent_id_of(event)):
            return "duplicate"
        outcome = await _apply(located, kube, read)
    finally:
        if read is not None and not read.cancel() and not read.cancelled():
            read.exception()  # retrieved: a read ahead of a duplicate or an outage has nobody to report to
    await store.ledger.mark_processed(event["id"], outcome)
    count(event["type"], outcome)
    kind = "PaymentRefund" if event["type"] in REFUND_TYPES else "PaymentIntent"
    log.debug("Stripe event %s %s: %s", event["id"], event["type"], outcome,
             extra=logs.about(target.about(), kind, event["id"]) if target else {"stripe_event_id": event["id"]})
    return outcome


def count(event_type: str, outcome: str) -> None:
    """One delivery in kubepay_webhook_events_total; types kubepay does not handle count as `other`."""
    metrics.WEBHOOK_EVENTS.labels(event_type if event_type in HANDLED else "other", outcome).inc()


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
    count(exc.event_type, "invalid")
    log.warning("Stripe event %s %s is invalid: %s", exc.event_id, exc.event_type, exc.reason,
                extra={"stripe_event_id": exc.event_id})


def _read_ahead(located: Located | None, kube: KubeClient) -> asyncio.Task[dict[str, Any]] | None:
    """Start reading the resource the event concerns, if any."""
    if located is None or located.target is None:
        return None
    return asyncio.ensure_future(kube.get_custom(located.plural, located.target.namespace, located.target.name))


async def _apply(located: Located | None, kube: KubeClient, read: asyncio.Task[dict[str, Any]] | None) -> str:
    """Apply to the resource the event concerns: `applied` or `stale`, else why not."""
    if located is None:
        return "unhandled"
    if located.target is None:
        return located.unknown
    try:
        applied = await apply_observation(kube, located.plural, located.target, located.observation, first_read=read)
    except NotFound:
        return "unknown_payment"
    return "applied" if applied else "stale"


def _target(metadata: dict[str, Any]) -> Meta | None:
    namespace, name = metadata.get(identity.METADATA_NAMESPACE), metadata.get(identity.METADATA_NAME)
    if not namespace or not name:
        return None
    return Meta.named(str(namespace), str(name), str(metadata.get(identity.METADATA_UID) or ""))
