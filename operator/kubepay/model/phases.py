"""Phases of both kinds, Stripe's words for them, and the Go service's database words: each defined once."""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    """A PaymentIntent's phase."""

    PENDING = "Pending"
    REQUIRES_ACTION = "RequiresAction"
    PROCESSING = "Processing"
    REQUIRES_CAPTURE = "RequiresCapture"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELED = "Canceled"
    PARTIALLY_REFUNDED = "PartiallyRefunded"
    REFUNDED = "Refunded"

    @property
    def rank(self) -> int:
        """Within one Stripe timestamp, a later state in this order wins; equal ranks never replace each other."""
        return _RANK[self]

    @property
    def final(self) -> bool:
        """Stripe never leaves these, except that a succeeded payment can still be refunded."""
        return self in _FINAL

    @property
    def db_status(self) -> str:
        """The Go service's status word in the payments table."""
        return _DB_STATUS[self]

    @property
    def paid(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.PARTIALLY_REFUNDED, Phase.REFUNDED)


_RANK = {
    Phase.PENDING: 0, Phase.FAILED: 1, Phase.REQUIRES_ACTION: 2, Phase.PROCESSING: 3, Phase.REQUIRES_CAPTURE: 4,
    Phase.SUCCEEDED: 5, Phase.CANCELED: 5, Phase.PARTIALLY_REFUNDED: 6, Phase.REFUNDED: 7,
}
_FINAL = frozenset({Phase.SUCCEEDED, Phase.CANCELED, Phase.PARTIALLY_REFUNDED, Phase.REFUNDED})
_DB_STATUS = {
    Phase.PENDING: "pending", Phase.REQUIRES_ACTION: "pending", Phase.PROCESSING: "pending",
    Phase.REQUIRES_CAPTURE: "pending", Phase.SUCCEEDED: "succeeded", Phase.FAILED: "failed",
    Phase.CANCELED: "canceled", Phase.PARTIALLY_REFUNDED: "partially_refunded", Phase.REFUNDED: "refunded",
}


class RefundPhase(StrEnum):
    """A PaymentRefund's phase; its database word is the phase in lower case."""

    PENDING = "Pending"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELED = "Canceled"

    @property
    def final(self) -> bool:
        return self is not RefundPhase.PENDING

    @property
    def db_status(self) -> str:
        return self.value.lower()


# Stripe: "in rare instances, a refund might fail after it has been marked succeeded".
LATE_REFUND_FAILURE = (RefundPhase.SUCCEEDED, RefundPhase.FAILED)


def intent_phase(stripe_status: str, has_payment_error: bool) -> Phase:
    """Map Stripe's PaymentIntent status to a phase; a payment error on a returned intent is Failed."""
    if stripe_status == "requires_payment_method":
        return Phase.FAILED if has_payment_error else Phase.PENDING
    return {
        "requires_confirmation": Phase.PENDING,
        "requires_action": Phase.REQUIRES_ACTION,
        "processing": Phase.PROCESSING,
        "requires_capture": Phase.REQUIRES_CAPTURE,
        "succeeded": Phase.SUCCEEDED,
        "canceled": Phase.CANCELED,
    }.get(stripe_status, Phase.PENDING)


def refunded_phase(amount_refunded: int, amount_received: int) -> Phase:
    return Phase.REFUNDED if amount_received and amount_refunded >= amount_received else Phase.PARTIALLY_REFUNDED


def refund_phase(stripe_status: str) -> RefundPhase:
    return {
        "succeeded": RefundPhase.SUCCEEDED,
        "failed": RefundPhase.FAILED,
        "canceled": RefundPhase.CANCELED,
    }.get(stripe_status, RefundPhase.PENDING)
