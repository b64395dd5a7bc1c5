import pytest

from kubepay.model.conditions import sentence


@pytest.mark.parametrize(("text", "expected"), [
    ("stripe refused the PaymentIntent: amount too small", "Stripe refused the PaymentIntent: amount too small."),
    ("Created Stripe PaymentIntent pi_1 for 1200 usd", "Created Stripe PaymentIntent pi_1 for 1200 usd."),
    ("Your card was declined.", "Your card was declined."),
    ("  kubepay.io/paused is true  ", "Kubepay.io/paused is true."),
    ("", ""),
])
def test_messages_read_as_sentences(text: str, expected: str) -> None:
    assert sentence(text) == expected
