"""Mirror a PaymentIntent's status into its payments row and announce each milestone on Kafka once."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from kubepay import logs
from kubepay.config import Settings
from kubepay.kube.client import PAYMENT_INTENTS, KubeClient
from kubepay.mirror import messages
from kubepay.mirror.publisher import Publisher, PublishRejected
from kubepay.model import refunds
from kubepay.model.identity import payment_id, refund_id
from kubepay.model.phases import DB_STATUS, Phase
from kubepay.store import PaymentRow, RefundRow, Store, StoreRejected

log = logging.getLogger(__name__)


def payment_of(body: dict[str, Any]) -> messages.Payment:
    meta, spec, status = body["metadata"], body["spec"], body.get("status") or {}
    failure = status.get("failure") or {}
    stripe_block = status.get("stripe") or {}
    return messages.Payment(
        uid=meta["uid"],
        namespace=meta["namespace"],
        name=meta["name"],
        payment_id=status.get("paymentId") or str(payment_id(meta["uid"])),
        order_id=spec["orderId"],
        user_id=spec.get("userId"),
        # What Stripe charges; the spec may ask for more than Stripe still allows (Synced=False says so).
        amount_minor=int(stripe_block.get("amount") or spec["amount"]),
        currency=spec["currency"],
        provider_id=stripe_block.get("paymentIntentId", ""),
        payment_method=stripe_block.get("paymentMethod"),
        failure_code=failure.get("declineCode") or failure.get("code"),
        failure_reason=failure.get("message"),
        observed_at=int(stripe_block.get("lastEventCreated") or 0),
    )


def row_of(body: dict[str, Any]) -> PaymentRow:
    payment = payment_of(body)
    status = body.get("status") or {}
    return PaymentRow(
        id=payment_id(payment.uid),
        order_id=payment.order_id,
        user_id=payment.user_id,
        amount=payment.amount_minor,
        currency=payment.currency,
        status=DB_STATUS[Phase(status["phase"])],
        payment_method=payment.payment_method,
        provider_payment_id=payment.provider_id or None,
        amount_received=int(status.get("amountReceived") or 0),
        amount_refunded=int(status.get("amountRefunded") or 0),
        failure_code=payment.failure_code,
        failure_reason=payment.failure_reason,
        resource_namespace=payment.namespace,
        resource_name=payment.name,
        resource_uid=payment.uid,
    )


def ready_for_downstream(body: dict[str, Any]) -> bool:
    """A Stripe intent exists, or Stripe refused to create one (the order still learns it failed)."""
    status = body.get("status") or {}
    has_intent = bool((status.get("stripe") or {}).get("paymentIntentId"))
    return bool(status.get("phase")) and (has_intent or status.get("phase") == Phase.FAILED.value)


def due(body: dict[str, Any], published: list[str]) -> list[str]:
    status = body["status"]
    milestones = messages.due(Phase(status["phase"]), published)
    if not (status.get("stripe") or {}).get("paymentIntentId"):
        milestones = [m for m in milestones if m != messages.INITIATED]
    return milestones


def _published(body: dict[str, Any], known: Sequence[str]) -> list[str]:
    """What status says was published, plus what this process published and may not see echoed yet."""
    return list(dict.fromkeys([*((body.get("status") or {}).get("published") or []), *known]))


async def _record_published(kube: KubeClient, plural: str, body: dict[str, Any], published: list[str],
                            new: list[str]) -> list[str]:
    """The watermark: only the controller writes `published`, one daemon per resource, so no precondition."""
    meta = body["metadata"]
    published = published + new
    await kube.patch_status(plural, meta["namespace"], meta["name"], {"published": published}, None)
    log.info("published %s for %s/%s", ",".join(new), meta["namespace"], meta["name"],
             extra=logs.about(meta, body.get("kind") or "PaymentIntent"))
    return published


async def sync(
    body: dict[str, Any],
    store: Store,
    publisher: Publisher,
    kube: KubeClient,
    settings: Settings,
    known_published: Sequence[str] = (),
) -> list[str]:
    """Upsert the row, publish what the phase implies and was not published, then record it.

    `known_published` is what this process recorded itself and may not have seen echoed back by the
    watch yet. Returns the full published list.
    """
    published = _published(body, known_published)
    if not ready_for_downstream(body):
        return published
    refused: list[Exception] = []  # a row or message refused for good does not hold back the others
    try:
        await store.upsert_payment(row_of(body))
    except StoreRejected as exc:
        refused.append(exc)
    payment = payment_of(body)
    sent: list[str] = []
    for milestone in due(body, published):
        try:
            await publisher.publish(messages.messages_for(milestone, payment, settings.topics, settings.source))
        except PublishRejected as exc:
            refused.append(exc)
            continue
        sent.append(milestone)
    if sent:
        published = await _record_published(kube, PAYMENT_INTENTS, body, published, sent)
    if refused:
        raise refused[0]
    return published


async def sync_refund(
    body: dict[str, Any],
    payment_body: dict[str, Any],
    store: Store,
    publisher: Publisher,
    kube: KubeClient,
    settings: Settings,
    known_published: Sequence[str] = (),
) -> list[str]:
    """Mirror a PaymentRefund that Stripe holds: its refunds row, and payments.refunded once it succeeded.

    A refund refused before reaching Stripe has no row (its status still shows the amount asked for).
    Returns published.
    """
    status = body.get("status") or {}
    published = _published(body, known_published)
    if not status.get("phase") or not (status.get("stripe") or {}).get("refundId"):
        return published
    meta = body["metadata"]
    phase = refunds.RefundPhase(status["phase"])
    failure = status.get("failure") or {}
    await store.upsert_refund(RefundRow(
        id=refund_id(meta["uid"]), payment_id=payment_id(payment_body["metadata"]["uid"]),
        amount=int(status["amount"]), currency=payment_body["spec"]["currency"], reason=body["spec"].get("reason"),
        status=refunds.DB_STATUS[phase], provider_refund_id=(status.get("stripe") or {}).get("refundId"),
        failure_reason=failure.get("message"), resource_namespace=meta["namespace"], resource_name=meta["name"],
        resource_uid=meta["uid"],
    ))
    if phase is not refunds.RefundPhase.SUCCEEDED or messages.REFUNDED in published:
        return published
    refund = messages.Refund(uid=meta["uid"], refund_id=str(refund_id(meta["uid"])),
                           provider_refund_id=status["stripe"]["refundId"], amount_minor=int(status["amount"]),
                           reason=body["spec"].get("reason"))
    await publisher.publish([messages.refund_message(payment_of(payment_body), refund, settings.topics,
                                                   settings.source)])
    return await _record_published(kube, refunds.PAYMENT_REFUNDS, body, published, [messages.REFUNDED])
