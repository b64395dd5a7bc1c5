"""Stripe webhook handling: verify, record in the ledger, apply to the resource's status."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import stripe

from kubepay import identity, metrics
from kubepay.kube_client import KubeClient, NotFound
from kubepay.phases import observe_intent
from kubepay.status_writer import apply_observation
from kubepay.store import Store

log = logging.getLogger(__name__)

SIGNATURE_TOLERANCE = 300

# payment_intent.* events whose object is the intent itself, so its status is the news.
INTENT_EVENTS = frozenset({
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "payment_intent.processing",
    "payment_intent.requires_action",
    "payment_intent.amount_capturable_updated",
})


class BadRequest(Exception):
    """The delivery is not a valid, signed Stripe event (answered 400)."""


@dataclass(frozen=True)
class Outcome:
    outcome: str
    status: int = 200


def verify(payload: bytes, signature: str | None, secret: str) -> dict[str, Any]:
    """Check `Stripe-Signature` over the raw body with the SDK; return the event as a plain dict."""
    if not signature:
        raise BadRequest("missing Stripe-Signature header")
    try:
        stripe.WebhookSignature.verify_header(payload.decode("utf-8"), signature, secret, SIGNATURE_TOLERANCE)
    except stripe.SignatureVerificationError as exc:
        raise BadRequest(f"signature verification failed: {exc.user_message or 'invalid signature'}") from None
    except UnicodeDecodeError:
        raise BadRequest("body is not UTF-8") from None
    try:
        event = json.loads(payload)
    except json.JSONDecodeError:
        raise BadRequest("body is not JSON") from None
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not isinstance(
        event.get("type"), str
    ) or not isinstance((event.get("data") or {}).get("object"), dict):
        raise BadRequest("body is not a Stripe event (id, type and data.object are required)")
    return event


def _intent_id(event: dict[str, Any]) -> str | None:
    obj = event["data"]["object"]
    if obj.get("object") == "payment_intent":
        return str(obj.get("id"))
    found = obj.get("payment_intent")
    return str(found) if isinstance(found, str) else None


async def handle(event: dict[str, Any], store: Store, kube: KubeClient) -> Outcome:
    """Record, then apply once. StoreUnavailable/KubeUnavailable propagate (503: Stripe retries)."""
    event_type = event["type"]
    new = await store.record_event(event, _intent_id(event))
    if not new and await store.event_processed(event["id"]):
        return Outcome("duplicate")
    outcome = await _apply(event, kube)
    await store.mark_processed(event["id"], outcome)
    metrics.WEBHOOK_EVENTS.labels(event_type if event_type in INTENT_EVENTS else "other", outcome).inc()
    return Outcome(outcome)


async def _apply(event: dict[str, Any], kube: KubeClient) -> str:
    if event["type"] not in INTENT_EVENTS:
        return "unhandled"
    intent = event["data"]["object"]
    metadata = intent.get("metadata") or {}
    namespace, name = metadata.get(identity.METADATA_NAMESPACE), metadata.get(identity.METADATA_NAME)
    if not namespace or not name:
        return "unknown_payment"
    obs = observe_intent(intent, created=int(event.get("created") or 0), event_id=event["id"])
    try:
        applied = await apply_observation(kube, namespace, name, metadata.get(identity.METADATA_UID), obs)
    except NotFound:
        return "unknown_payment"
    return "applied" if applied else "stale"
