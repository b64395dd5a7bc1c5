"""Input no client should send still gets a clear refusal, never an exception that takes a process down."""

from __future__ import annotations

import json

import pytest
from aiohttp.test_utils import make_mocked_request

from kubepay.orders import intake
from kubepay.orders.consumer import PoisonMessage, parse_order
from kubepay_webhook.api_auth import bearer_token

ORDER = {"order_id": "1111", "user_id": "u-1", "total": "19.99", "currency": "USD"}


def test_json_nested_deeper_than_the_parser_goes_is_not_json() -> None:
    with pytest.raises(ValueError, match="nested too deeply"):
        intake.loads(b"[" * 100_000 + b"]" * 100_000)


@pytest.mark.parametrize(("value", "reason"), [
    (b"[" * 100_000 + b"]" * 100_000, "value is not JSON: nested too deeply"),
    (json.dumps({**ORDER, "order_id": "11\x0011"}).encode(),
     "invalid OrderCreatedEvent: order_id: must not contain control characters"),
    (json.dumps({**ORDER, "user_id": "u\n1"}).encode(),
     "invalid OrderCreatedEvent: user_id: must not contain control characters"),
    (json.dumps({**ORDER, "total": "1E+1000000"}).encode(),
     "invalid OrderCreatedEvent: total: amount is too large: more than 18 digits in USD's minor units"),
])
def test_orders_that_would_crash_the_consumer_are_poison(value: bytes, reason: str) -> None:
    with pytest.raises(PoisonMessage) as caught:
        parse_order(value)
    assert str(caught.value) == reason


@pytest.mark.parametrize(("header", "token"), [
    ("Bearer abc.DEF-123_~+/=", "abc.DEF-123_~+/="), ("bearer  tok ", "tok"), ("Bearer café", None),
    ("Bearer a\x00b", None), ("Basic abc", None), ("Bearer ", None), ("", None),
])
def test_bearer_tokens_are_printable_ascii_or_none(header: str, token: str | None) -> None:
    request = make_mocked_request("GET", "/payments", headers={"Authorization": header} if header else {})
    assert bearer_token(request) == token
