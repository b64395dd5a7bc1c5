from typing import Any

import pytest

from kubepay.model.observations import IntentObservation as Observation
from kubepay.model.observations import observe_intent
from kubepay.model.phases import Phase, intent_phase
from kubepay.model.resources import IntentStatus


def _obs(phase: Phase, created: int) -> Observation:
    return Observation(phase, "x", created, "pi_1", False, 0, None)


def _event(phase: Phase, created: int) -> Observation:
    return Observation(phase, "x", created, "pi_1", False, 0, None, event_id="evt_1")


def _refund(phase: Phase, refunded: int) -> Observation:
    return Observation(phase, "succeeded", 5, "pi_1", False, 1000, None, amount_refunded=refunded)


def _status(phase: Phase, created: int) -> dict[str, Any]:
    return {"phase": phase.value, "stripe": {"paymentIntentId": "pi_1", "lastEventCreated": created}}


@pytest.mark.parametrize(("current", "new", "expected"), [
    (None, _obs(Phase.PENDING, 10), True),
    (_status(Phase.PENDING, 10), _obs(Phase.SUCCEEDED, 10), True),   # same second: higher rank wins
    (_status(Phase.SUCCEEDED, 10), _obs(Phase.PROCESSING, 10), False),
    (_status(Phase.PROCESSING, 10), _obs(Phase.PENDING, 9), False),   # older event
    (_status(Phase.FAILED, 10), _obs(Phase.PENDING, 11), True),       # customer retries after a decline
    (_status(Phase.SUCCEEDED, 10), _obs(Phase.FAILED, 20), False),    # succeeded is final
    (_status(Phase.CANCELED, 10), _obs(Phase.SUCCEEDED, 20), False),  # canceled is final
    (_status(Phase.SUCCEEDED, 10), _obs(Phase.CANCELED, 20), False),
    (_status(Phase.SUCCEEDED, 10), _refund(Phase.PARTIALLY_REFUNDED, 300), True),
    ({**_status(Phase.PARTIALLY_REFUNDED, 10), "amountRefunded": 300}, _refund(Phase.PARTIALLY_REFUNDED, 300), False),
    ({**_status(Phase.PARTIALLY_REFUNDED, 10), "amountRefunded": 300}, _refund(Phase.REFUNDED, 1000), True),
    ({**_status(Phase.REFUNDED, 10), "amountRefunded": 1000}, _refund(Phase.PARTIALLY_REFUNDED, 300), False),
    (_status(Phase.PROCESSING, 10), _event(Phase.PROCESSING, 10), False),  # a duplicate event changes nothing
    (_status(Phase.PENDING, 10), _obs(Phase.PENDING, 10), True),  # a read of Stripe refreshes the same state
    (_status(Phase.SUCCEEDED, 10), _obs(Phase.PENDING, 10), False),
])
def test_status_never_moves_backwards(current: dict[str, Any] | None, new: Observation, expected: bool) -> None:
    assert new.supersedes(IntentStatus.parse(current)) is expected


def test_stripe_statuses_map_to_phases() -> None:
    assert intent_phase("requires_payment_method", has_payment_error=False) is Phase.PENDING
    assert intent_phase("requires_payment_method", has_payment_error=True) is Phase.FAILED
    assert intent_phase("requires_capture", False) is Phase.REQUIRES_CAPTURE
    assert intent_phase("succeeded", False) is Phase.SUCCEEDED


def test_observing_an_intent_keeps_the_failure_and_payment_method() -> None:
    obs = observe_intent({"id": "pi_1", "status": "requires_payment_method", "amount_received": 0,
                          "payment_method": {"id": "pm_1"},
                          "last_payment_error": {"code": "card_declined", "decline_code": "insufficient_funds",
                                                 "message": "Your card has insufficient funds."}},
                         created=5, event_id="evt_1")
    assert obs.phase is Phase.FAILED
    assert obs.failure == {"code": "card_declined", "declineCode": "insufficient_funds",
                           "message": "Your card has insufficient funds."}
    assert obs.payment_method == "pm_1"
