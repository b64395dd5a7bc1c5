"""PaymentRefund rules: what may be refunded (admission and controller ask alike), and the Stripe request."""

from __future__ import annotations

from typing import Any

from kubepay.model import identity
from kubepay.model.money import MoneyError, check_amount
from kubepay.model.phases import Phase
from kubepay.model.resources import Meta, PaymentIntent, RefundSpec

REFUNDABLE_PHASES = frozenset({Phase.SUCCEEDED, Phase.PARTIALLY_REFUNDED})


class RefundRefused(Exception):
    """The refund must not reach Stripe; the message says why (admission and controller use it alike)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def refundable(payment: PaymentIntent | None, name: str) -> int:
    """What is left to refund on the PaymentIntent `payment`; raises RefundRefused if nothing may be."""
    if payment is None:
        raise RefundRefused("payment_not_found", f"PaymentIntent {name!r} does not exist in this namespace "
                            "(a finished payment deleted by retention can no longer be refunded through kubepay: "
                            "refund it in Stripe)")
    phase = payment.status.phase
    if phase not in REFUNDABLE_PHASES:
        raise RefundRefused(
            "payment_not_succeeded",
            f"PaymentIntent {name!r} has not succeeded (phase {phase or 'none'}); only a paid payment can be refunded",
        )
    left = payment.status.amount_received - (payment.status.amount_refunded or 0)
    if left <= 0:
        raise RefundRefused("fully_refunded", f"PaymentIntent {name!r} is already fully refunded")
    return left


def refund_amount(spec: RefundSpec, payment: PaymentIntent | None) -> int:
    left = refundable(payment, spec.payment_intent_name)
    assert payment is not None  # refundable() refused a missing payment
    amount = spec.amount or left
    if amount > left:
        raise RefundRefused(
            "exceeds_refundable_amount",
            f"refund of {amount} exceeds the {left} still refundable on PaymentIntent {spec.payment_intent_name!r}",
        )
    try:
        check_amount(amount, payment.spec.currency)
    except MoneyError as exc:
        raise RefundRefused("invalid_amount", f"spec.amount {amount} {exc}") from None
    return amount


def create_params(meta: Meta, spec: RefundSpec, intent_id: str, amount: int) -> dict[str, Any]:
    """The Stripe refund-create parameters for a PaymentRefund (its metadata is how webhooks find it)."""
    params: dict[str, Any] = {
        "payment_intent": intent_id,
        "amount": amount,
        "metadata": {identity.METADATA_NAMESPACE: meta.namespace, identity.METADATA_NAME: meta.name,
                     identity.METADATA_UID: meta.uid, identity.METADATA_KIND: "PaymentRefund",
                     "payment_intent_name": spec.payment_intent_name},
    }
    if spec.reason:
        params["reason"] = spec.reason
    return params
