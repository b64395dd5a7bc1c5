"""What Stripe said about an intent or a refund at one moment, and the status patch it makes: never backwards.

An observation comes from a webhook event, the Events API or a read of Stripe; every kind of observation
answers `patch(status, generation)`: the status merge patch that records it, or None when status already
holds something newer. `kube.status_writer.apply_observation` writes either kind the same way.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kubepay.model.conditions import now_iso, set_condition
from kubepay.model.phases import (
    LATE_REFUND_FAILURE,
    Phase,
    RefundPhase,
    intent_phase,
    refund_phase,
    refunded_phase,
)
from kubepay.model.resources import IntentStatus, RefundStatus

Patch = dict[str, Any]


def now() -> int:
    """The `created` of a read of Stripe: Stripe's object as it is at this moment."""
    return int(time.time())


class Observation(Protocol):
    @property
    def created(self) -> int: ...

    @property
    def event_id(self) -> str | None: ...

    def patch(self, status: Mapping[str, Any], generation: int | None) -> Patch | None: ...


def recorded_by(status: Mapping[str, Any], event_id: str | None) -> bool:
    """Whether status already holds what Stripe event `event_id` reported (it was applied before)."""
    return event_id is not None and (status.get("stripe") or {}).get("lastEventId") == event_id


@dataclass(frozen=True)
class IntentObservation:
    """What Stripe said about a PaymentIntent."""

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

    def supersedes(self, current: IntentStatus) -> bool:
        """Whether this may replace what `current` records without going backwards."""
        if current.phase is None or not current.stripe.payment_intent_id:
            return True
        if current.phase.final:
            # Only refunds move a final payment, and refunded amounts only grow.
            return (self.amount_refunded is not None and self.amount_refunded > (current.amount_refunded or 0)
                    and self.phase in (Phase.PARTIALLY_REFUNDED, Phase.REFUNDED))
        last = current.stripe.last_event_created
        if self.created != last:
            return self.created > last
        # Within one second a later state wins; a read of Stripe (no event id) also refreshes the same state,
        # since it shows Stripe as it is now (an amount change, a capturable amount).
        return self.phase.rank > current.phase.rank or (self.event_id is None and self.phase.rank == current.phase.rank)

    def patch(self, status: Mapping[str, Any], generation: int | None) -> Patch | None:
        current = IntentStatus.parse(status)
        if not self.supersedes(current):
            return None
        stripe_block: dict[str, Any] = {
            "paymentIntentId": self.payment_intent_id,
            "status": self.stripe_status,
            "livemode": self.livemode,
            "lastEventCreated": max(self.created, current.stripe.last_event_created),
            "lastSyncedAt": now_iso(),
        }
        if self.event_id:
            stripe_block["lastEventId"] = self.event_id
        if self.payment_method:
            stripe_block["paymentMethod"] = self.payment_method
        if self.amount is not None:
            stripe_block["amount"] = self.amount
        patch: Patch = {"phase": self.phase.value, "stripe": stripe_block, "amountReceived": self.amount_received,
                        "failure": self.failure}
        if self.amount_refunded is not None:
            patch["amountRefunded"] = self.amount_refunded
        elif current.amount_refunded is None:
            patch["amountRefunded"] = 0  # nothing known to be refunded yet: `kubectl get pi -o wide` shows 0
        if self.amount_capturable is not None:
            patch["amountCapturable"] = self.amount_capturable
        patch["conditions"] = self._conditions(current.conditions, generation)
        return patch

    def _conditions(self, conditions: list[dict[str, Any]] | None, generation: int | None) -> list[dict[str, Any]]:
        """Ready (it succeeded) and Failed (it can no longer succeed), from what Stripe reports.

        A declined payment (phase Failed) may still be paid with another card: only a canceled one has failed.
        """
        message = f"Stripe reports {self.stripe_status}."
        conditions = set_condition(conditions, "Ready", self.phase.paid, self.phase.value, message, generation)
        if self.phase is Phase.CANCELED:
            return set_condition(conditions, "Failed", True, "Canceled", "The payment was canceled in Stripe.",
                                 generation)
        if self.phase is Phase.FAILED:
            return set_condition(conditions, "Failed", False, "Retryable",
                                 "The last attempt failed; the customer may pay again.", generation)
        return set_condition(conditions, "Failed", False, self.phase.value, message, generation)


def _failure(error: Mapping[str, Any] | None) -> dict[str, str] | None:
    if not error:
        return None
    failure = {
        "code": str(error.get("code") or ""),
        "declineCode": str(error.get("decline_code") or ""),
        "message": str(error.get("message") or ""),
    }
    return {key: value for key, value in failure.items() if value}


def observe_intent(intent: Mapping[str, Any], created: int | None = None,
                   event_id: str | None = None) -> IntentObservation:
    """A Stripe PaymentIntent object at time `created` (now, for a read of Stripe).

    With `latest_charge` expanded, refunds show: a succeeded intent with refunds is (Partially)Refunded.
    """
    error = intent.get("last_payment_error")
    payment_method = intent.get("payment_method")
    if isinstance(payment_method, dict):
        payment_method = payment_method.get("id")
    received = int(intent.get("amount_received") or 0)
    phase = intent_phase(str(intent.get("status")), bool(error))
    charge = intent.get("latest_charge")
    refunded = int(charge.get("amount_refunded") or 0) if isinstance(charge, dict) else None
    if phase is Phase.SUCCEEDED and refunded:
        phase = refunded_phase(refunded, received)
    return IntentObservation(
        phase=phase,
        stripe_status=str(intent.get("status")),
        created=now() if created is None else created,
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


def observe_refunded_charge(charge: Mapping[str, Any], created: int, event_id: str | None) -> IntentObservation:
    """A charge.refunded event: the intent succeeded, and this much of it went back."""
    received = int(charge.get("amount_captured") or charge.get("amount") or 0)
    refunded = int(charge.get("amount_refunded") or 0)
    return IntentObservation(
        phase=refunded_phase(refunded, received),
        stripe_status="succeeded",
        created=created,
        payment_intent_id=str(charge.get("payment_intent")),
        livemode=bool(charge.get("livemode", False)),
        amount_received=received,
        failure=None,
        event_id=event_id,
        amount_refunded=refunded,
    )


@dataclass(frozen=True)
class RefundObservation:
    """What Stripe said about a refund."""

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
        return refund_phase(self.stripe_status)

    def supersedes(self, current: RefundStatus) -> bool:
        """A final refund stays (but for a late failure); an older or equal report changes nothing."""
        if current.phase is None or not current.stripe.refund_id:
            return True
        if self.created < current.stripe.last_event_created or self.phase == current.phase:
            return False
        return not current.phase.final or (current.phase, self.phase) == LATE_REFUND_FAILURE

    def patch(self, status: Mapping[str, Any], generation: int | None) -> Patch | None:
        current = RefundStatus.parse(status)
        if not self.supersedes(current):
            return None
        block: dict[str, Any] = {
            "refundId": self.refund_id,
            "paymentIntentId": self.payment_intent_id,
            "status": self.stripe_status,
            "lastEventCreated": self.created,
            "lastSyncedAt": now_iso(),
        }
        if self.event_id:
            block["lastEventId"] = self.event_id
        failure = {"code": "refund_failed", "message": self.failure_reason} if self.failure_reason else None
        message = f"Stripe reports {self.stripe_status}."
        conditions = set_condition(current.conditions, "Ready", self.phase is RefundPhase.SUCCEEDED,
                                   self.phase.value, message, generation)
        conditions = set_condition(conditions, "Failed", self.phase in (RefundPhase.FAILED, RefundPhase.CANCELED),
                                   self.phase.value, message, generation)
        return {"phase": self.phase.value, "stripe": block, "amount": self.amount, "currency": self.currency,
                "failure": failure, "conditions": conditions}


def observe_refund(refund: Mapping[str, Any], created: int | None = None,
                   event_id: str | None = None) -> RefundObservation:
    """A Stripe Refund object at time `created` (now, for a read of Stripe)."""
    return RefundObservation(
        refund_id=str(refund["id"]),
        payment_intent_id=str(refund.get("payment_intent") or ""),
        stripe_status=str(refund.get("status") or "pending"),
        amount=int(refund.get("amount") or 0),
        currency=str(refund.get("currency") or ""),
        created=now() if created is None else created,
        failure_reason=refund.get("failure_reason"),
        event_id=event_id,
    )
