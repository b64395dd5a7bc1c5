"""Stripe's own contract: every call kubepay's gateway makes, with the parameters kubepay really builds, is
accepted by stripe-mock, which checks each request against Stripe's OpenAPI spec (unknown or misspelt
parameters, wrong types and missing required ones are refused). stripe-mock is stateless and answers from
fixtures, so these tests prove request shapes only; behaviour is the Stripe fake's business."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from stripe import AIOHTTPClient, StripeClient

from kubepay.controller import intents
from kubepay.model import identity, refunds
from kubepay.model.resources import PaymentIntent, PaymentRefund
from kubepay.stripe import events as stripe_events
from kubepay.stripe.api_version import STRIPE_API_VERSION
from kubepay.stripe.gateway import StripeGateway, StripeRejected
from kubepay_sandbox.stripe_mock import StripeMock

UID = "6f1d2c3b-0000-4000-8000-000000000001"
BODY = PaymentIntent.parse({  # a PaymentIntent resource using every spec field that reaches Stripe
    "metadata": {"namespace": "shop", "name": "order-1111", "uid": UID, "generation": 2},
    "spec": {"orderId": "1111", "amount": 1200, "currency": "usd", "captureMethod": "manual",
             "description": "Order 1111", "userId": "user-7", "metadata": {"cart": "c-9"}},
})
REFUND = PaymentRefund.parse({
    "metadata": {"namespace": "shop", "name": "order-1111-refund", "uid": "6f1d2c3b-0000-4000-8000-000000000002"},
    "spec": {"paymentIntentName": "order-1111", "amount": 500, "reason": "requested_by_customer"},
})


@pytest_asyncio.fixture(scope="module")
async def mock() -> AsyncIterator[StripeMock]:
    async with StripeMock() as server:
        yield server


@pytest_asyncio.fixture()
async def gateway(mock: StripeMock) -> AsyncIterator[StripeGateway]:
    gw = StripeGateway(mock.api_key, api_base=mock.url)
    yield gw
    await gw.close()


async def test_payment_intent_calls(gateway: StripeGateway) -> None:
    created = await gateway.create_intent(intents.create_params(BODY), identity.intent_idempotency_key(UID))
    assert created["object"] == "payment_intent"
    intent_id = created["id"]
    assert (await gateway.retrieve_intent(intent_id))["object"] == "payment_intent"  # expands latest_charge
    adopted = await gateway.update_intent(intent_id, {"metadata": intents.kubepay_metadata(BODY)},
                                          identity.update_idempotency_key(UID, 2, "adopt"))
    assert adopted["object"] == "payment_intent"
    changed = await gateway.update_intent(intent_id, {"amount": 1500},
                                          identity.update_idempotency_key(UID, 2, "amount"))
    assert changed["object"] == "payment_intent"
    for amount in (700, None):  # spec.amountToCapture, or the whole amount
        captured = await gateway.capture_intent(intent_id, amount, identity.capture_idempotency_key(UID))
        assert captured["object"] == "payment_intent"
    assert (await gateway.cancel_intent(intent_id, identity.cancel_idempotency_key(UID)))["object"] == "payment_intent"


async def test_customer_confirm_as_the_readme_and_tests_do(mock: StripeMock) -> None:
    """Not the gateway's call but the customer's (README walk-through, tests/helpers.confirm_and_notify)."""
    http = AIOHTTPClient()
    stripe_client = StripeClient(mock.api_key, base_addresses={"api": mock.url}, stripe_version=STRIPE_API_VERSION,
                                 http_client=http)
    try:
        confirmed = await stripe_client.v1.payment_intents.confirm_async(
            "pi_123", {"payment_method": "pm_card_visa", "return_url": "https://shop.example/return"})
    finally:
        await http.close_async()  # type: ignore[no-untyped-call]
    assert confirmed.object == "payment_intent"


async def test_refund_calls(gateway: StripeGateway) -> None:
    params = refunds.create_params(REFUND.meta, REFUND.spec, "pi_123", 500)
    refund = await gateway.create_refund(params, identity.refund_idempotency_key(REFUND.meta.uid))
    assert refund["object"] == "refund"
    assert (await gateway.retrieve_refund(refund["id"]))["object"] == "refund"


async def test_events_list(gateway: StripeGateway) -> None:
    """The backfill's listing (created[gte], limit) is accepted and parsed. stripe-mock's fixture is one
    plan.created event (not a type kubepay handles), so the backfill's own filter would drop it."""
    since = int(time.time()) - 3600
    assert [event async for event in gateway.events_since(since, stripe_events.HANDLED)] == []
    listed = [event async for event in gateway.events_since(since, frozenset({"plan.created"}))]
    assert [(event["object"], event["type"]) for event in listed] == [("event", "plan.created")]


async def test_misspelt_parameter_is_refused(gateway: StripeGateway) -> None:
    """The check has teeth: what the spec does not know is a 400, which the gateway reports as a rejection."""
    with pytest.raises(StripeRejected) as refused:
        await gateway.create_intent({**intents.create_params(BODY), "amount_cents": 1200}, "kubepay-test-misspelt")
    assert "additional properties are not allowed" in refused.value.message
