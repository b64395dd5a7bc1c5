"""Phases of a PaymentIntent and the never-backwards rule shared by controller and receiver."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Phase(StrEnum):
    PENDING = "Pending"
    REQUIRES_ACTION = "RequiresAction"
    PROCESSING = "Processing"
    REQUIRES_CAPTURE = "RequiresCapture"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELED = "Canceled"
    PARTIALLY_REFUNDED = "PartiallyRefunded"
    REFUNDED = "Refunded"


# Within one Stripe timestamp, a later state in this order wins; equal ranks never replace each other.
RANK: dict[Phase, int] = {
    Phase.PENDING: 0,
    Phase.FAILED: 1,
    Phase.REQUIRES_ACTION: 2,
    Phase.PROCESSING: 3,
    Phase.REQUIRES_CAPTURE: 4,
    Phase.SUCCEEDED: 5,
    Phase.CANCELED: 5,
    Phase.PARTIALLY_REFUNDED: 6,
    Phase.REFUNDED: 7,
}

# Phases Stripe never leaves, except that a succeeded payment can still be refunded.
FINAL = frozenset({Phase.SUCCEEDED, Phase.CANCELED, Phase.PARTIALLY_REFUNDED, Phase.REFUNDED})

# The Go service's database status words.
DB_STATUS: dict[Phase, str] = {
    Phase.PENDING: "pending",
    Phase.REQUIRES_ACTION: "pending",
    Phase.PROCESSING: "pending",
    Phase.REQUIRES_CAPTURE: "pending",
    Phase.SUCCEEDED: "succeeded",
    Phase.FAILED: "failed",
    Phase.CANCELED: "canceled",
    Phase.PARTIALLY_REFUNDED: "partially_refunded",
    Phase.REFUNDED: "refunded",
}


def from_stripe(stripe_status: str, has_payment_error: bool) -> Phase:
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


@dataclass(frozen=True)
class Observation:
    """What Stripe said about an intent at one moment (a webhook event or an API read)."""

    phase: Phase
    stripe_status: str
    created: int
    payment_intent_id: str
    livemode: bool
    amount_received: int
    failure: dict[str, str] | None
    event_id: str | None = None
    payment_method: str | None = None
    amount_refunded: int | None = None
    amount_capturable: int | None = None
    amount: int | None = None


def supersedes(current: dict[str, Any], new: Observation) -> bool:
    """Whether `new` may replace the state recorded in `current` (a status dict) without going backwards."""
    phase_raw = current.get("phase")
    if not phase_raw or not (current.get("stripe") or {}).get("paymentIntentId"):
        return True
    phase = Phase(phase_raw)
    last_created = int((current.get("stripe") or {}).get("lastEventCreated") or 0)
    if phase in FINAL:
        # Only refunds move a final payment, and refunded amounts only grow.
        refunded = int(current.get("amountRefunded") or 0)
        return new.amount_refunded is not None and new.amount_refunded > refunded and new.phase in (
            Phase.PARTIALLY_REFUNDED, Phase.REFUNDED)
    if new.created > last_created:
        return True
    if new.created == last_created:
        # Within one second a later state wins; a read of Stripe (no event id) also refreshes the same state,
        # since it shows Stripe as it is now (an amount change, a capturable amount).
        return RANK[new.phase] > RANK[phase] or (new.event_id is None and RANK[new.phase] == RANK[phase])
    return False


def refund_phase(amount_refunded: int, amount_received: int) -> Phase:
    return Phase.REFUNDED if amount_received and amount_refunded >= amount_received else Phase.PARTIALLY_REFUNDED


def _failure(error: dict[str, Any] | None) -> dict[str, str] | None:
    if not error:
        return None
    failure = {
        "code": str(error.get("code") or ""),
        "declineCode": str(error.get("decline_code") or ""),
        "message": str(error.get("message") or ""),
    }
    return {key: value for key, value in failure.items() if value}


def observe_intent(intent: dict[str, Any], created: int, event_id: str | None = None) -> Observation:
    """Turn a Stripe PaymentIntent object (a plain dict) into an Observation at time `created`.

    With `latest_charge` expanded, refunds show: a succeeded intent with refunds is (Partially)Refunded.
    """
    error = intent.get("last_payment_error")
    payment_method = intent.get("payment_method")
    if isinstance(payment_method, dict):
        payment_method = payment_method.get("id")
    received = int(intent.get("amount_received") or 0)
    phase = from_stripe(str(intent.get("status")), bool(error))
    charge = intent.get("latest_charge")
    refunded = int(charge.get("amount_refunded") or 0) if isinstance(charge, dict) else None
    if phase is Phase.SUCCEEDED and refunded:
        phase = refund_phase(refunded, received)
    return Observation(
        phase=phase,
        stripe_status=str(intent.get("status")),
        created=created,
        payment_intent_id=str(intent["id"]),
        livemode=bool(intent.get("livemode", False)),
        amount_received=received,
        failure=_failure(error),
        event_id=event_id,
        payment_method=str(payment_method) if payment_method else None,
        amount_refunded=refunded,
        amount_capturable=int(intent["amount_capturable"]) if intent.get("amount_capturable") is not None else None,
        amount=int(intent["amount"]) if intent.get("amount") is not None else None,
    )


def observe_refunded_charge(charge: dict[str, Any], created: int, event_id: str | None) -> Observation:
    """A charge.refunded event: the intent succeeded, and this much of it went back."""
    received = int(charge.get("amount_captured") or charge.get("amount") or 0)
    refunded = int(charge.get("amount_refunded") or 0)
    return Observation(
        phase=refund_phase(refunded, received),
        stripe_status="succeeded",
        created=created,
        payment_intent_id=str(charge.get("payment_intent")),
        livemode=bool(charge.get("livemode", False)),
        amount_received=received,
        failure=None,
        event_id=event_id,
        amount_refunded=refunded,
    )
