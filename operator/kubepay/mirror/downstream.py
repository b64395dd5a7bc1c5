"""Mirror a resource's status downstream, for both kinds: its row, and each milestone's Kafka messages once.

A row or message refused for good does not hold back the others; the watermark (`status.published`)
records what was sent, so a restart republishes at most, never loses.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from kubepay import logs
from kubepay.config import Settings
from kubepay.kube.client import KubeClient
from kubepay.mirror import messages
from kubepay.mirror.publisher import Publisher, PublishRejected
from kubepay.mirror.rows import PaymentRow, RefundRow
from kubepay.model.conditions import now_iso
from kubepay.model.identity import payment_id, refund_id
from kubepay.model.phases import Phase, RefundPhase
from kubepay.model.resources import PaymentIntent, PaymentRefund, Resource
from kubepay.postgres import StoreRejected
from kubepay.store import Store

log = logging.getLogger(__name__)


def payment_of(pi: PaymentIntent) -> messages.Payment:
    status, stripe_block = pi.status, pi.status.stripe
    failure = status.failure
    return messages.Payment(
        uid=pi.meta.uid,
        namespace=pi.meta.namespace,
        name=pi.meta.name,
        payment_id=status.payment_id or str(payment_id(pi.meta.uid)),
        order_id=pi.spec.order_id,
        user_id=pi.spec.user_id,
        # What Stripe charges; the spec may ask for more than Stripe still allows (Synced=False says so).
        amount_minor=stripe_block.amount or pi.spec.amount,
        currency=pi.spec.currency,
        provider_id=stripe_block.payment_intent_id or "",
        payment_method=stripe_block.payment_method,
        failure_code=(failure.decline_code or failure.code) if failure else None,
        failure_reason=failure.message if failure else None,
        observed_at=stripe_block.last_event_created,
    )


def row_of(pi: PaymentIntent, phase: Phase) -> PaymentRow:
    payment = payment_of(pi)
    return PaymentRow(
        id=payment_id(payment.uid),
        order_id=payment.order_id,
        user_id=payment.user_id,
        amount=payment.amount_minor,
        currency=payment.currency,
        status=phase.db_status,
        payment_method=payment.payment_method,
        provider_payment_id=payment.provider_id or None,
        amount_received=pi.status.amount_received,
        amount_refunded=pi.status.amount_refunded or 0,
        failure_code=payment.failure_code,
        failure_reason=payment.failure_reason,
        resource_namespace=payment.namespace,
        resource_name=payment.name,
        resource_uid=payment.uid,
    )


@dataclass(frozen=True)
class Plan:
    """What a resource's status implies downstream: its row, and the messages of each milestone."""

    row: PaymentRow | RefundRow
    milestones: dict[str, list[messages.Message]] = field(default_factory=dict)


def _intent_plan(pi: PaymentIntent, published: Sequence[str], settings: Settings) -> Plan | None:
    """A Stripe intent exists, or Stripe refused to create one (the order still learns it failed)."""
    phase = pi.status.phase
    if phase is None or not (pi.stripe_id or phase is Phase.FAILED):
        return None
    due = [m for m in messages.due(phase, published) if pi.stripe_id or m != messages.INITIATED]
    payment = payment_of(pi)
    return Plan(row_of(pi, phase), {m: messages.messages_for(m, payment, settings.topics, settings.source)
                                    for m in due})


def _refund_plan(refund: PaymentRefund, parent: PaymentIntent | None, published: Sequence[str],
                 settings: Settings) -> Plan | None:
    """A refund Stripe holds: its row, and payments.refunded once it succeeded.

    A refund refused before reaching Stripe has no row (its status still shows the amount asked for).
    """
    phase, meta = refund.status.phase, refund.meta
    if phase is None or not refund.stripe_id or parent is None:
        return None
    amount = refund.status.amount or 0
    failure = refund.status.failure
    row = RefundRow(
        id=refund_id(meta.uid), payment_id=payment_id(parent.meta.uid), amount=amount,
        currency=parent.spec.currency, reason=refund.spec.reason, status=phase.db_status,
        provider_refund_id=refund.stripe_id, failure_reason=failure.message if failure else None,
        resource_namespace=meta.namespace, resource_name=meta.name, resource_uid=meta.uid,
    )
    if phase is not RefundPhase.SUCCEEDED or messages.REFUNDED in published:
        return Plan(row)
    about = messages.Refund(uid=meta.uid, refund_id=str(refund_id(meta.uid)), provider_refund_id=refund.stripe_id,
                            amount_minor=amount, reason=refund.spec.reason)
    return Plan(row, {messages.REFUNDED: [messages.refund_message(payment_of(parent), about, settings.topics,
                                                                  settings.source)]})


def digest(resource: Resource) -> str:
    """What the resource's row is made of, as a short digest: the row is written again only when it changes.

    A refund's row takes its other fields from the parent's identity and currency, which never change.
    """
    if isinstance(resource, PaymentIntent):
        phase = resource.status.phase
        made_of: object = row_of(resource, phase) if phase else None
    else:
        made_of = (resource.status.phase, resource.status.amount, resource.stripe_id, resource.status.failure,
                   resource.spec.reason)
    return hashlib.sha256(repr(made_of).encode()).hexdigest()[:16]


def settled(resource: Resource) -> bool:
    """The row holds what status says and every milestone it implies is published: nothing to do."""
    if resource.status.mirrored != digest(resource):
        return False
    if isinstance(resource, PaymentRefund):
        return resource.status.phase is not RefundPhase.SUCCEEDED or messages.REFUNDED in resource.status.published
    phase = resource.status.phase
    return phase is None or not messages.due(phase, resource.status.published)


async def _record(kube: KubeClient, resource: Resource, published: list[str], new: list[str],
                  mirrored: str | None) -> None:
    """The watermark and the row's digest: only the controller writes them, one step at a time per resource,
    so no precondition."""
    meta = resource.meta
    patch: dict[str, object] = {}
    if new:
        patch["published"] = published
    if mirrored:
        patch["mirrored"] = mirrored
        patch["mirroredAt"] = now_iso()
    await kube.patch_status(resource.plural, meta.namespace, meta.name, patch, None)
    if new:
        log.debug("published %s for %s/%s", ",".join(new), meta.namespace, meta.name,
                 extra=logs.about(meta.about(), resource.kind))


async def sync(
    resource: Resource,
    store: Store,
    publisher: Publisher,
    kube: KubeClient,
    settings: Settings,
    known: list[str],
    parent: PaymentIntent | None = None,
) -> None:
    """Upsert the row, publish what the phase implies and was not published, then record it.

    `known` is what this process published for the resource and may not have seen echoed back by the watch
    yet: each milestone joins it as soon as its messages are out, so a refusal or a cancellation after that
    cannot make the next step publish it again. `parent` is a refund's PaymentIntent.
    """
    known[:] = dict.fromkeys([*resource.status.published, *known])
    plan = (_intent_plan(resource, known, settings) if isinstance(resource, PaymentIntent)
            else _refund_plan(resource, parent, known, settings))
    if plan is None:
        return
    refused: list[Exception] = []  # a row or message refused for good does not hold back the others
    mirrored: str | None = digest(resource)
    if mirrored == resource.status.mirrored:
        mirrored = None  # the row holds this already
    else:
        try:
            await store.rows.upsert(plan.row)
        except StoreRejected as exc:
            refused.append(exc)
            mirrored = None
    sent: list[str] = []
    for milestone, batch in plan.milestones.items():
        try:
            await publisher.publish(batch)
        except PublishRejected as exc:
            refused.append(exc)
            continue
        sent.append(milestone)
        known.append(milestone)
    if sent or mirrored:
        await _record(kube, resource, known, sent, mirrored)
    if refused:
        raise refused[0]
