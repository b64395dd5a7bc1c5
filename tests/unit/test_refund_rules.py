"""Refund amounts follow Stripe's currency rules too (checked by admission and by the controller alike)."""

from __future__ import annotations

import pytest

from kubepay.model.refunds import RefundRefused, refund_amount
from kubepay.model.resources import PaymentIntent, RefundSpec


def _paid(currency: str, received: int) -> PaymentIntent:
    return PaymentIntent.parse({"spec": {"currency": currency},
                                "status": {"phase": "Succeeded", "amountReceived": received}})


@pytest.mark.parametrize(("currency", "received", "amount"), [
    ("usd", 1000, 333), ("jpy", 1000, 333), ("kwd", 5120, 1230), ("isk", 50000, 1200), ("huf", 1045, 45),
])
def test_refunds_stripe_accepts(currency: str, received: int, amount: int) -> None:
    assert refund_amount(RefundSpec("p", amount), _paid(currency, received)) == amount
    assert refund_amount(RefundSpec("p"), _paid(currency, received)) == received


@pytest.mark.parametrize(("currency", "received", "amount", "rule"), [
    ("kwd", 5120, 1235, "must be a multiple of 10 for KWD"), ("isk", 50000, 1250, "must be a multiple of 100 for ISK"),
])
def test_refunds_stripe_would_refuse(currency: str, received: int, amount: int, rule: str) -> None:
    with pytest.raises(RefundRefused) as raised:
        refund_amount(RefundSpec("p", amount), _paid(currency, received))
    assert raised.value.code == "invalid_amount"
    assert str(raised.value).startswith(f"spec.amount {amount} {rule}")
