"""PaymentRefund rules: what may be refunded, and how Stripe's refund maps onto the resource's status."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from kubepay.model import identity
from kubepay.model.conditions import now_iso, set_condition
from kubepay.model.money import MoneyError, check_amount
from kubepay.model.phases import Phase

PAYMENT_REFUNDS = "paymentrefunds"
REFUNDABLE_PHASES = frozenset({Phase.SUCCEEDED, Phase.PARTIALLY_REFUNDED})


class RefundPhase(StrEnum):
    PENDING = "Pending"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELED = "Canceled"


FINAL = frozenset({RefundPhase.SUCCEEDED, RefundPhase.FAILED, RefundPhase.CANCELED})
# Stripe: "in rare instances, a refund might fail after it has been marked succeeded".
LATE_FAILURE = (RefundPhase.SUCCEEDED, RefundPhase.FAILED)
DB_STATUS = {RefundPhase.PENDING: "pending", RefundPhase.SUCCEEDED: "succeeded", RefundPhase.FAILED: "failed",
             RefundPhase.CANCELED: "canceled"}


class RefundRefused(Exception):
    """The refund must not reach Stripe; the message says why (admission and controller use it alike)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def refundable(payment: dict[str, Any] | None, name: str) -> int:
    """What is left to refund on the PaymentIntent `payment`; raises RefundRefused if nothing may be."""
    if payment is None:
        raise RefundRefused("payment_not_found", f"PaymentIntent {name!r} does not exist in this namespace")
    status = payment.get("status") or {}
    phase = status.get("phase")
    if phase not in REFUNDABLE_PHASES:
        raise RefundRefused(
            "payment_not_succeeded",
            f"PaymentIntent {name!r} has not succeeded (phase {phase or 'none'}); only a paid payment can be refunded",
        )
    left = int(status.get("amountReceived") or 0) - int(status.get("amountRefunded") or 0)
    if left <= 0:
        raise RefundRefused("fully_refunded", f"PaymentIntent {name!r} is already fully refunded")
    return left


def refund_amount(spec: dict[str, Any], payment: dict[str, Any] | None) -> int:
    left = refundable(payment, spec["paymentIntentName"])
    amount = int(spec.get("amount") or left)
    if amount > left:
        raise RefundRefused(
            "exceeds_refundable_amount",
            f"refund of {amount} exceeds the {left} still refundable on PaymentIntent {spec['paymentIntentName']!r}",
        )
    assert payment is not None  # refundable() refused a missing payment
    try:
        check_amount(amount, payment["spec"]["currency"])
    except MoneyError as exc:
        raise RefundRefused("invalid_amount", f"spec.amount {amount} {exc}") from None
    return amount


def create_params(meta: dict[str, Any], spec: dict[str, Any], intent_id: str, amount: int) -> dict[str, Any]:
    """The Stripe refund-create parameters for a PaymentRefund (its metadata is how webhooks find it)."""
    params: dict[str, Any] = {
        "payment_intent": intent_id,
        "amount": amount,
        "metadata": {identity.METADATA_NAMESPACE: meta["namespace"], identity.METADATA_NAME: meta["name"],
                     identity.METADATA_UID: meta["uid"], identity.METADATA_KIND: "PaymentRefund",
                     "payment_intent_name": spec["paymentIntentName"]},
    }
    if spec.get("reason"):
        params["reason"] = spec["reason"]
    return params


def phase_of(stripe_status: str) -> RefundPhase:
    return {
        "succeeded": RefundPhase.SUCCEEDED,
        "failed": RefundPhase.FAILED,
        "canceled": RefundPhase.CANCELED,
    }.get(stripe_status, RefundPhase.PENDING)


@dataclass(frozen=True)
class RefundObservation:
    refund_id: str
    payment_intent_id: str
    stripe_status: str
    amount: int
    currency: str
    created: int
    failure_reason: str | None = None
    event_id: str | None = None

    @property
    def phase(self) -> RefundPhase:
        return phase_of(self.stripe_status)

    @classmethod
    def of(cls, refund: dict[str, Any], created: int, event_id: str | None = None) -> RefundObservation:
        return cls(
            refund_id=str(refund["id"]),
            payment_intent_id=str(refund.get("payment_intent") or ""),
            stripe_status=str(refund.get("status") or "pending"),
            amount=int(refund.get("amount") or 0),
            currency=str(refund.get("currency") or ""),
            created=created,
            failure_reason=refund.get("failure_reason"),
            event_id=event_id,
        )


def refund_status_patch(body: dict[str, Any], obs: RefundObservation) -> dict[str, Any] | None:
    """Never backwards: a final refund stays; an older report changes nothing."""
    current = body.get("status") or {}
    phase_raw = current.get("phase")
    stripe_block = current.get("stripe") or {}
    if phase_raw and stripe_block.get("refundId"):
        current_phase = RefundPhase(phase_raw)
        if obs.created < int(stripe_block.get("lastEventCreated") or 0) or obs.phase == current_phase:
            return None
        if current_phase in FINAL and (current_phase, obs.phase) != LATE_FAILURE:
            return None
    generation = body["metadata"].get("generation")
    block: dict[str, Any] = {
        "refundId": obs.refund_id,
        "paymentIntentId": obs.payment_intent_id,
        "status": obs.stripe_status,
        "lastEventCreated": obs.created,
        "lastSyncedAt": now_iso(),
    }
    if obs.event_id:
        block["lastEventId"] = obs.event_id
    failure = {"code": "refund_failed", "message": obs.failure_reason} if obs.failure_reason else None
    message = f"Stripe reports {obs.stripe_status}."
    conditions = set_condition(current.get("conditions"), "Ready", obs.phase is RefundPhase.SUCCEEDED,
                               obs.phase.value, message, generation)
    conditions = set_condition(conditions, "Failed", obs.phase in (RefundPhase.FAILED, RefundPhase.CANCELED),
                               obs.phase.value, message, generation)
    return {"phase": obs.phase.value, "stripe": block, "amount": obs.amount, "currency": obs.currency,
            "failure": failure, "conditions": conditions}
