"""The Stripe fake: localstripe in its own process, with idempotency, faults and webhooks that behave
like Stripe, exercised through the real stripe SDK."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, cast

import pytest
import pytest_asyncio
import stripe
from aiohttp import web
from stripe.params import PaymentIntentCreateParams, PaymentMethodCreateParams

from kubepay_sandbox.child import free_port
from kubepay_sandbox.stripe_fake import TEST_CARDS, StripeFake

DEADLINE = 10.0


@pytest_asyncio.fixture(scope="module")
async def fake() -> AsyncIterator[StripeFake]:
    async with StripeFake() as running:
        yield running


@pytest_asyncio.fixture(autouse=True)
async def clean(fake: StripeFake) -> AsyncIterator[None]:
    await fake.reset()
    yield


@pytest.fixture
def client(fake: StripeFake) -> stripe.StripeClient:
    return fake.client(max_network_retries=0)


async def eventually(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    """Poll ``check`` until it returns something truthy, failing after a deadline."""
    deadline = time.monotonic() + DEADLINE
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def params(**extra: Any) -> PaymentIntentCreateParams:
    return cast(
        PaymentIntentCreateParams, {"amount": 1200, "currency": "usd", "metadata": {"order_id": "1111"}, **extra}
    )


async def test_idempotency_key_replays_the_first_response(fake: StripeFake, client: stripe.StripeClient) -> None:
    first = await client.v1.payment_intents.create_async(params(), options={"idempotency_key": "pi-uid-1"})
    second = await client.v1.payment_intents.create_async(params(), options={"idempotency_key": "pi-uid-1"})

    assert second.id == first.id
    listed = await client.v1.payment_intents.list_async()
    assert [intent.id for intent in listed.data] == [first.id]
    log = [entry for entry in await fake.requests_log() if entry["idempotency_key"] == "pi-uid-1"]
    assert [entry["replayed"] for entry in log] == [False, True]


async def test_same_key_with_other_parameters_is_an_idempotency_error(client: stripe.StripeClient) -> None:
    await client.v1.payment_intents.create_async(params(), options={"idempotency_key": "pi-uid-2"})
    with pytest.raises(stripe.IdempotencyError) as info:
        await client.v1.payment_intents.create_async(params(amount=1300), options={"idempotency_key": "pi-uid-2"})
    assert info.value.http_status == 400
    assert "same parameters" in str(info.value)


async def test_errors_are_replayed_too(fake: StripeFake, client: stripe.StripeClient) -> None:
    for _ in range(2):
        with pytest.raises(stripe.InvalidRequestError):
            await client.v1.payment_intents.create_async(params(amount=0), options={"idempotency_key": "bad-1"})
    assert [entry["replayed"] for entry in await fake.requests_log()] == [False, True]


STRIPE_CURRENCIES = [
    "usd", "eur", "gbp", "jpy", "kwd", "bhd", "jod", "omr", "tnd", "chf", "cad", "aud", "nzd", "sek", "nok", "dkk",
    "pln", "czk", "huf", "ron", "bgn", "hkd", "sgd", "inr", "brl", "mxn", "zar", "krw", "clp", "vnd", "isk", "ugx",
    "xaf", "xof",
]  # fmt: skip


async def test_unsupported_currency_is_refused_like_stripe(fake: StripeFake, client: stripe.StripeClient) -> None:
    for _ in range(2):
        with pytest.raises(stripe.InvalidRequestError) as info:
            await client.v1.payment_intents.create_async(params(currency="xyz"), options={"idempotency_key": "cur-1"})
        error = info.value
        assert error.http_status == 400
        assert error.param == "currency"
        assert error.code is None  # Stripe sets no code for this one: branch on param (or on the 400)
        assert error.error is not None
        assert error.error.type == "invalid_request_error"
        message = error.user_message
        assert message is not None
        assert message == error.error.message
        prefix = "Invalid currency: xyz. Stripe currently supports these currencies: "
        assert message.startswith(prefix + "usd, aed, ")
        assert set(STRIPE_CURRENCIES) <= set(message.removeprefix(prefix).split(", "))

    assert (await client.v1.payment_intents.list_async()).data == []
    log = await fake.requests_log()
    assert [(entry["status"], entry["replayed"]) for entry in log if entry["method"] == "POST"] == [
        (400, False),
        (400, True),
    ]


@pytest.mark.parametrize(
    ("amount", "currency", "code", "message"),
    [
        (49, "usd", "amount_too_small", "Amount must be at least $0.50 usd"),
        ("10", "eur", "amount_too_small", "Amount must be at least €0.50 eur"),
        (29, "gbp", "amount_too_small", "Amount must be at least £0.30 gbp"),
        (49, "jpy", "amount_too_small", "Amount must be at least ¥50 jpy"),
        (49, "chf", "amount_too_small", "Amount must be at least CHF 0.50 chf"),
        (100_000_000, "usd", "amount_too_large", "Amount must be no more than $999,999.99"),
        (100_000_000, "jpy", "amount_too_large", "Amount must be no more than ¥99,999,999"),
        (0, "usd", "parameter_invalid_integer", "This value must be greater than or equal to 1."),
    ],
)
async def test_amount_outside_stripe_limits_is_refused(
    client: stripe.StripeClient, amount: int | str, currency: str, code: str, message: str
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as info:
        await client.v1.payment_intents.create_async(
            params(amount=amount, currency=currency, payment_method=TEST_CARDS["success"], confirm=True)
        )
    error = info.value
    assert (error.http_status, error.code, error.param, error.user_message) == (400, code, "amount", message)
    assert error.error is not None
    assert (error.error.type, error.error.message) == ("invalid_request_error", message)
    assert (await client.v1.payment_intents.list_async()).data == []  # nothing created, nothing charged


async def test_amounts_at_stripe_limits_are_accepted(client: stripe.StripeClient) -> None:
    smallest = await client.v1.payment_intents.create_async(params(amount=50, currency="USD"))
    assert (smallest.amount, smallest.currency) == (50, "usd")  # Stripe stores currencies lowercased
    largest = await client.v1.payment_intents.create_async(params(amount=99_999_999, currency="jpy"))
    assert largest.amount == 99_999_999
    three_decimals = await client.v1.payment_intents.create_async(params(amount=50, currency="kwd"))
    assert three_decimals.currency == "kwd"


async def test_refused_create_is_replayed_and_binds_its_key(fake: StripeFake, client: stripe.StripeClient) -> None:
    for _ in range(2):
        with pytest.raises(stripe.InvalidRequestError) as info:
            await client.v1.payment_intents.create_async(params(amount=10), options={"idempotency_key": "small-1"})
        assert info.value.code == "amount_too_small"
    assert [entry["replayed"] for entry in await fake.requests_log()] == [False, True]
    # As in Stripe, a corrected spec needs a new key: the old one stays bound to the refused parameters.
    with pytest.raises(stripe.IdempotencyError):
        await client.v1.payment_intents.create_async(params(amount=1000), options={"idempotency_key": "small-1"})
    assert (await client.v1.payment_intents.list_async()).data == []


async def test_update_to_an_amount_stripe_refuses_changes_nothing(client: stripe.StripeClient) -> None:
    intent = await client.v1.payment_intents.create_async(params())
    with pytest.raises(stripe.InvalidRequestError) as info:
        await client.v1.payment_intents.update_async(intent.id, {"amount": 10})
    assert info.value.code == "amount_too_small"
    with pytest.raises(stripe.InvalidRequestError) as info:
        await client.v1.payment_intents.update_async(intent.id, {"currency": "xyz"})
    assert info.value.param == "currency"
    unchanged = await client.v1.payment_intents.retrieve_async(intent.id)
    assert (unchanged.amount, unchanged.currency) == (1200, "usd")

    updated = await client.v1.payment_intents.update_async(intent.id, {"amount": 1300, "currency": "EUR"})
    assert (updated.amount, updated.currency) == (1300, "eur")


async def test_parameters_localstripe_lacks_are_accepted(client: stripe.StripeClient) -> None:
    created = await client.v1.payment_intents.create_async(
        params(
            description="Order 1111",
            automatic_payment_methods={"enabled": True, "allow_redirects": "never"},
            return_url="https://shop.example/return",
        )
    )
    assert created.description == "Order 1111"
    fetched = await client.v1.payment_intents.retrieve_async(created.id)
    assert fetched.description == "Order 1111"
    assert fetched.automatic_payment_methods is not None
    assert fetched.automatic_payment_methods.enabled is True
    assert fetched.metadata.to_dict() == {"order_id": "1111"}

    updated = await client.v1.payment_intents.update_async(created.id, {"description": "Order 1111 (gift)"})
    assert updated.description == "Order 1111 (gift)"

    canceled = await client.v1.payment_intents.cancel_async(
        created.id, {"cancellation_reason": "requested_by_customer"}
    )
    assert canceled.status == "canceled"
    assert canceled.cancellation_reason == "requested_by_customer"
    assert canceled.canceled_at is not None


async def test_confirm_success_then_refund_with_reason(client: stripe.StripeClient) -> None:
    intent = await client.v1.payment_intents.create_async(params())
    intent = await client.v1.payment_intents.confirm_async(intent.id, {"payment_method": TEST_CARDS["success"]})
    assert intent.status == "succeeded"
    assert intent.amount_received == 1200

    refund = await client.v1.refunds.create_async(
        {"payment_intent": intent.id, "amount": 200, "reason": "requested_by_customer"}
    )
    assert (refund.amount, refund.reason, refund.status) == (200, "requested_by_customer", "succeeded")
    with pytest.raises(stripe.InvalidRequestError, match="greater than unrefunded"):
        await client.v1.refunds.create_async({"payment_intent": intent.id, "amount": 1001})


async def test_confirm_with_declining_card_fails_like_stripe(client: stripe.StripeClient) -> None:
    intent = await client.v1.payment_intents.create_async(params())
    with pytest.raises(stripe.CardError) as info:
        await client.v1.payment_intents.confirm_async(intent.id, {"payment_method": TEST_CARDS["decline"]})
    assert info.value.code == "card_declined"
    assert info.value.error is not None
    assert info.value.error.decline_code == "generic_decline"

    intent = await client.v1.payment_intents.retrieve_async(intent.id)
    assert intent.status == "requires_payment_method"
    assert intent.last_payment_error is not None
    assert intent.last_payment_error.code == "card_declined"

    # Stripe lets the customer retry with another card.
    intent = await client.v1.payment_intents.confirm_async(intent.id, {"payment_method": TEST_CARDS["success"]})
    assert intent.status == "succeeded"


async def test_three_d_secure_card_requires_action(fake: StripeFake, client: stripe.StripeClient) -> None:
    card = {"number": TEST_CARDS["three_d_secure_number"], "exp_month": 12, "exp_year": 2034, "cvc": "123"}
    method = await client.v1.payment_methods.create_async(
        cast(PaymentMethodCreateParams, {"type": "card", "card": card})
    )
    intent = await client.v1.payment_intents.create_async(params(payment_method=method.id, confirm=True))
    assert intent.status == "requires_action"
    assert intent.client_secret is not None

    # What Stripe.js does after the customer passes the challenge: localstripe's own route.
    done = await client.raw_request_async(
        "post",
        f"/v1/payment_intents/{intent.id}/_authenticate",
        client_secret=intent.client_secret,
        success="true",
    )
    assert client.deserialize(done, api_mode="V1")["status"] == "succeeded"


async def test_hold_withholds_the_response_while_the_intent_exists(
    fake: StripeFake, client: stripe.StripeClient
) -> None:
    await fake.hold("POST", "/v1/payment_intents")
    pending = asyncio.ensure_future(
        client.v1.payment_intents.create_async(params(), options={"idempotency_key": "held-1"})
    )

    async def held() -> bool:
        return any(entry["held"] for entry in await fake.requests_log())

    await eventually(held, "the create to be held")
    existing = await client.v1.payment_intents.list_async()
    assert len(existing.data) == 1  # created in Stripe ...
    assert not pending.done()  # ... but the caller has no answer yet

    await fake.release()
    created = await asyncio.wait_for(pending, DEADLINE)
    assert created.id == existing.data[0].id

    # A caller that crashed meanwhile and retries with the same key gets the same intent.
    again = await client.v1.payment_intents.create_async(params(), options={"idempotency_key": "held-1"})
    assert again.id == created.id


async def test_same_key_while_in_flight_is_a_conflict(fake: StripeFake, client: stripe.StripeClient) -> None:
    await fake.hold("POST", "/v1/payment_intents", before_execution=True)
    first = asyncio.ensure_future(
        client.v1.payment_intents.create_async(params(), options={"idempotency_key": "slow-1"})
    )

    async def held() -> bool:
        return any(entry["held"] for entry in await fake.requests_log())

    await eventually(held, "the first create to be held")
    assert (await client.v1.payment_intents.list_async()).data == []  # not run yet
    with pytest.raises(stripe.StripeError) as info:
        await client.v1.payment_intents.create_async(params(), options={"idempotency_key": "slow-1"})
    assert info.value.http_status == 409
    assert info.value.error is not None
    assert info.value.error.type == "idempotency_error"

    await fake.release()
    created = await asyncio.wait_for(first, DEADLINE)
    again = await client.v1.payment_intents.create_async(params(), options={"idempotency_key": "slow-1"})
    assert again.id == created.id


async def test_fail_injects_errors_without_running_the_request(fake: StripeFake, client: stripe.StripeClient) -> None:
    await fake.fail("POST", "/v1/payment_intents", 500, count=2)
    for _ in range(2):
        with pytest.raises(stripe.APIError) as info:
            await client.v1.payment_intents.create_async(params(), options={"idempotency_key": "retry-1"})
        assert info.value.http_status == 500
    # 5xx are not stored: the retry with the same key runs for real.
    created = await client.v1.payment_intents.create_async(params(), options={"idempotency_key": "retry-1"})
    assert created.status == "requires_payment_method"
    assert len((await client.v1.payment_intents.list_async()).data) == 1
    log = [entry for entry in await fake.requests_log() if entry["method"] == "POST"]
    assert [(entry["fault"], entry["status"], entry["replayed"]) for entry in log] == [
        (True, 500, False),
        (True, 500, False),
        (False, 200, False),
    ]

    await fake.fail("GET", "/v1/payment_intents/", 429, retry_after=2)
    with pytest.raises(stripe.RateLimitError) as rate_limited:
        await client.v1.payment_intents.retrieve_async(created.id)
    assert rate_limited.value.headers is not None
    assert rate_limited.value.headers["Retry-After"] == "2"
    assert await fake.faults() == []


async def test_fault_list_and_clear(fake: StripeFake) -> None:
    await fake.fail("POST", "/v1/refunds", 503, count=3)
    await fake.hold("POST", "/v1/payment_intents")
    kinds = sorted(fault["kind"] for fault in await fake.faults())
    assert kinds == ["fail", "hold"]
    await fake.clear_faults()
    assert await fake.faults() == []


@contextlib.asynccontextmanager
async def webhook_receiver(
    port: int | None = None, answers: Sequence[int] = ()
) -> AsyncIterator[tuple[str, asyncio.Queue[tuple[bytes, str]]]]:
    """A local HTTP endpoint for the fake's webhooks: its URL, and a queue of (payload, Stripe-Signature).
    It answers the first deliveries with ``answers``, then 200."""
    received: asyncio.Queue[tuple[bytes, str]] = asyncio.Queue()
    statuses = iter(answers)

    async def receive(request: web.Request) -> web.Response:
        await received.put((await request.read(), request.headers.get("Stripe-Signature", "")))
        return web.Response(status=next(statuses, 200), text="ok")

    app = web.Application()
    app.router.add_post("/webhook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    port = port or free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/webhook", received
    finally:
        await runner.cleanup()


async def test_register_webhook_delivers_signed_events(fake: StripeFake, client: stripe.StripeClient) -> None:
    secret = "whsec_kubepay_test"
    async with webhook_receiver() as (url, received):
        await fake.register_webhook(url, secret, ["payment_intent.succeeded"])
        intent = await client.v1.payment_intents.create_async(params())
        await client.v1.payment_intents.confirm_async(intent.id, {"payment_method": TEST_CARDS["success"]})

        payload, signature = await asyncio.wait_for(received.get(), DEADLINE)
        event = stripe.Webhook.construct_event(payload, signature, secret)
        assert event.type == "payment_intent.succeeded"
        assert event.data.object["id"] == intent.id  # nothing from earlier tests leaks past a reset
        assert event.data.object["status"] == "succeeded"
        assert event.data.object["metadata"].to_dict() == {"order_id": "1111"}
        with pytest.raises(stripe.SignatureVerificationError):
            stripe.Webhook.construct_event(payload, signature, "whsec_wrong")


async def _delivered(fake: StripeFake, event_id: str) -> list[dict[str, Any]]:
    """The event's delivery attempts, once the last one is recorded as answered 200."""
    attempts = [d for d in await fake.deliveries() if d["event_id"] == event_id]
    return attempts if attempts and attempts[-1]["status"] == 200 else []


async def test_webhook_to_a_receiver_started_late_is_retried(fake: StripeFake, client: stripe.StripeClient) -> None:
    secret = "whsec_kubepay_late"
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhook"
    await fake.register_webhook(url, secret, ["payment_intent.succeeded"])
    intent = await _succeeded(client)

    async def refused() -> list[dict[str, Any]]:
        return [d for d in await fake.deliveries() if d["status"] is None]

    first = (await eventually(refused, "a delivery to the closed port"))[0]
    assert (first["type"], first["attempt"], first["error"], first["retry_in"]) == (
        "payment_intent.succeeded", 1, "connection refused", 1)
    async with webhook_receiver(port) as (_, received):
        payload, signature = await asyncio.wait_for(received.get(), DEADLINE)
    event = stripe.Webhook.construct_event(payload, signature, secret)
    assert (event.id, event.data.object["id"]) == (first["event_id"], intent.id)
    signed_at = int(dict(part.split("=", 1) for part in signature.split(","))["t"])
    assert signed_at > event.created  # signed when sent, so a late retry is inside the receiver's tolerance
    attempts = await eventually(lambda: _delivered(fake, event.id), "the delivery recorded as answered 200")
    assert [(d["attempt"], d["status"]) for d in attempts][-1] == (len(attempts), 200)


async def test_webhook_answered_with_5xx_is_retried_until_2xx(fake: StripeFake, client: stripe.StripeClient) -> None:
    secret = "whsec_kubepay_503"
    async with webhook_receiver(answers=[503]) as (url, received):
        await fake.register_webhook(url, secret, ["payment_intent.succeeded"])
        await _succeeded(client)
        first = stripe.Webhook.construct_event(*await asyncio.wait_for(received.get(), DEADLINE), secret)
        second = stripe.Webhook.construct_event(*await asyncio.wait_for(received.get(), DEADLINE), secret)
    assert second.id == first.id
    # The fake records an answer just after the receiver has it; other tests' deliveries may still be retrying.
    attempts = await eventually(lambda: _delivered(fake, first.id), "the second delivery recorded as 200")
    assert [(d["attempt"], d["status"], d["retry_in"]) for d in attempts] == [(1, 503, 1), (2, 200, None)]


async def test_reset_forgets_objects_and_keys(fake: StripeFake, client: stripe.StripeClient) -> None:
    first = await client.v1.payment_intents.create_async(params(), options={"idempotency_key": "r-1"})
    await fake.reset()
    assert await fake.requests_log() == []
    assert (await client.v1.payment_intents.list_async()).data == []
    second = await client.v1.payment_intents.create_async(params(), options={"idempotency_key": "r-1"})
    assert second.id != first.id


async def test_stop_leaves_no_process() -> None:
    fake = StripeFake()
    await fake.start()
    pid = fake.pid
    assert pid is not None
    await fake.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def _succeeded(client: stripe.StripeClient, **extra: Any) -> stripe.PaymentIntent:
    intent = await client.v1.payment_intents.create_async(params(**extra))
    return await client.v1.payment_intents.confirm_async(intent.id, {"payment_method": TEST_CARDS["success"]})


async def test_amount_update_outside_updatable_statuses_is_refused(client: stripe.StripeClient) -> None:
    intent = await _succeeded(client)
    for change in ({"amount": 1500}, {"currency": "eur"}):
        with pytest.raises(stripe.InvalidRequestError) as info:
            await client.v1.payment_intents.update_async(intent.id, cast(Any, change))
        assert info.value.http_status == 400
        assert info.value.code == "payment_intent_unexpected_state"
        assert info.value.error is not None
        assert info.value.error.type == "invalid_request_error"
        assert "because it has a status of succeeded" in str(info.value)
    unchanged = await client.v1.payment_intents.retrieve_async(intent.id)
    assert (unchanged.amount, unchanged.currency, unchanged.amount_received) == (1200, "usd", 1200)

    # Metadata and description stay updatable in any status, as in Stripe.
    updated = await client.v1.payment_intents.update_async(
        intent.id, {"metadata": {"note": "shipped"}, "description": "Order 1111 (shipped)"}
    )
    assert updated.metadata.to_dict() == {"order_id": "1111", "note": "shipped"}
    assert updated.description == "Order 1111 (shipped)"

    # Refused for canceled and requires_capture intents too; allowed before confirmation.
    canceled = await client.v1.payment_intents.create_async(params())
    await client.v1.payment_intents.cancel_async(canceled.id)
    with pytest.raises(stripe.InvalidRequestError, match="status of canceled"):
        await client.v1.payment_intents.update_async(canceled.id, {"amount": 1500})
    manual = await _succeeded(client, capture_method="manual")
    assert manual.status == "requires_capture"
    with pytest.raises(stripe.InvalidRequestError, match="status of requires_capture"):
        await client.v1.payment_intents.update_async(manual.id, {"amount": 1500})
    fresh = await client.v1.payment_intents.create_async(params())
    assert (await client.v1.payment_intents.update_async(fresh.id, {"amount": 1500})).amount == 1500


async def test_partial_capture_receives_only_the_captured_amount(client: stripe.StripeClient) -> None:
    intent = await _succeeded(client, capture_method="manual")
    assert (intent.status, intent.amount_capturable, intent.amount_received) == ("requires_capture", 1200, 0)

    with pytest.raises(stripe.InvalidRequestError) as info:
        await client.v1.payment_intents.capture_async(intent.id, {"amount_to_capture": 1201})
    assert (info.value.http_status, info.value.code) == (400, "amount_too_large")
    assert (await client.v1.payment_intents.retrieve_async(intent.id)).status == "requires_capture"

    captured = await client.v1.payment_intents.capture_async(
        intent.id, {"amount_to_capture": 700, "expand": ["latest_charge"]}
    )
    assert (captured.status, captured.amount_received, captured.amount_capturable) == ("succeeded", 700, 0)
    charge = cast(Any, captured.latest_charge).to_dict()
    assert (charge["amount"], charge["amount_captured"], charge["amount_refunded"]) == (1200, 700, 0)
    assert (charge["captured"], charge["refunded"]) == (True, False)

    with pytest.raises(stripe.InvalidRequestError) as again:
        await client.v1.payment_intents.capture_async(intent.id)
    assert again.value.code == "payment_intent_unexpected_state"

    with pytest.raises(stripe.InvalidRequestError) as over:
        await client.v1.refunds.create_async({"payment_intent": intent.id, "amount": 701})
    assert "Refund amount (701) is greater than unrefunded amount on charge (700)" in str(over.value)
    refund = await client.v1.refunds.create_async({"payment_intent": intent.id})  # the rest: the captured amount
    assert refund.amount == 700
    after = await client.v1.payment_intents.retrieve_async(intent.id, {"expand": ["latest_charge"]})
    charge = cast(Any, after.latest_charge).to_dict()
    assert (charge["amount_refunded"], charge["refunded"]) == (700, True)


async def test_full_capture_without_amount(client: stripe.StripeClient) -> None:
    intent = await _succeeded(client, capture_method="manual")
    captured = await client.v1.payment_intents.capture_async(intent.id)
    assert (captured.status, captured.amount_received, captured.amount_capturable) == ("succeeded", 1200, 0)


async def test_refunds_show_on_the_expanded_latest_charge(client: stripe.StripeClient) -> None:
    intent = await _succeeded(client)
    plain = await client.v1.payment_intents.retrieve_async(intent.id)
    assert isinstance(plain.latest_charge, str)  # an id unless expanded, as in Stripe
    assert plain.latest_charge.startswith("ch_")

    await client.v1.refunds.create_async({"payment_intent": intent.id, "amount": 500})
    partly = await client.v1.payment_intents.retrieve_async(intent.id, {"expand": ["latest_charge"]})
    charge = cast(Any, partly.latest_charge).to_dict()
    assert (charge["id"], charge["amount_refunded"], charge["refunded"]) == (plain.latest_charge, 500, False)
    assert partly.status == "succeeded"

    await client.v1.refunds.create_async({"payment_intent": intent.id, "amount": 700})
    fully = await client.v1.payment_intents.retrieve_async(intent.id, {"expand": ["latest_charge"]})
    charge = cast(Any, fully.latest_charge).to_dict()
    assert (charge["amount_refunded"], charge["refunded"], charge["amount_captured"]) == (1200, True, 1200)
    with pytest.raises(stripe.InvalidRequestError, match="already been refunded"):
        await client.v1.refunds.create_async({"payment_intent": intent.id, "amount": 1})

    listed = await client.v1.payment_intents.list_async({"expand": ["data.latest_charge"]})
    assert cast(Any, listed.data[0].latest_charge).to_dict()["amount_refunded"] == 1200


async def _events(client: stripe.StripeClient, **query: Any) -> list[stripe.Event]:
    listed = await client.v1.events.list_async(cast(Any, query))
    return list(listed.data)


async def test_payment_intent_transitions_are_events(client: stripe.StripeClient) -> None:
    since = int(time.time())
    succeeded = await _succeeded(client)
    failed = await client.v1.payment_intents.create_async(params())
    with pytest.raises(stripe.CardError):
        await client.v1.payment_intents.confirm_async(failed.id, {"payment_method": TEST_CARDS["decline"]})
    canceled = await client.v1.payment_intents.create_async(params())
    await client.v1.payment_intents.cancel_async(canceled.id, {"cancellation_reason": "abandoned"})
    manual = await _succeeded(client, capture_method="manual")

    expected = {
        "payment_intent.succeeded": (succeeded.id, "succeeded"),
        "payment_intent.payment_failed": (failed.id, "requires_payment_method"),
        "payment_intent.canceled": (canceled.id, "canceled"),
        "payment_intent.amount_capturable_updated": (manual.id, "requires_capture"),
    }
    for event_type, (intent_id, status) in expected.items():
        events = await _events(client, type=event_type, created={"gte": since})
        assert [e.data.object["id"] for e in events] == [intent_id], event_type
        event = events[0]
        assert (event.object, event.type, event.data.object["status"]) == ("event", event_type, status)
        assert event.data.object["object"] == "payment_intent"
        assert event.created >= since
        assert (await client.v1.events.retrieve_async(event.id)).type == event_type
    failure = (await _events(client, type="payment_intent.payment_failed"))[0].data.object
    assert failure["last_payment_error"]["code"] == "card_declined"
    capturable = (await _events(client, type="payment_intent.amount_capturable_updated"))[0].data.object
    assert capturable["amount_capturable"] == 1200
    assert capturable["metadata"].to_dict() == {"order_id": "1111"}

    captured = await client.v1.payment_intents.capture_async(manual.id, {"amount_to_capture": 1000})
    latest = (await _events(client, type="payment_intent.succeeded"))[0].data.object
    assert (latest["id"], latest["amount_received"]) == (captured.id, 1000)
    assert await _events(client, created={"gte": int(time.time()) + 60}) == []


async def test_refunds_are_events(client: stripe.StripeClient) -> None:
    intent = await _succeeded(client)
    first = await client.v1.refunds.create_async(
        {"payment_intent": intent.id, "amount": 200, "metadata": {"refund_uid": "r-1"}}
    )
    await client.v1.refunds.create_async({"payment_intent": intent.id, "reason": "requested_by_customer"})

    charges = [e.data.object for e in await _events(client, type="charge.refunded")]
    assert [(c["payment_intent"], c["amount_refunded"], c["refunded"]) for c in charges] == [
        (intent.id, 1200, True),  # newest first, cumulative
        (intent.id, 200, False),
    ]
    assert all(c["object"] == "charge" for c in charges)
    refunds = [e.data.object for e in await _events(client, type="refund.created")]
    assert [(r["amount"], r["payment_intent"], r["status"]) for r in refunds] == [
        (1000, intent.id, "succeeded"),
        (200, intent.id, "succeeded"),
    ]
    assert refunds[1]["id"] == first.id
    assert refunds[1]["metadata"].to_dict() == {"refund_uid": "r-1"}
    assert refunds[0]["reason"] == "requested_by_customer"

    # A refund made by charge id carries the intent too.
    other = await _succeeded(client)
    assert isinstance(other.latest_charge, str)
    by_charge = await client.v1.refunds.create_async({"charge": other.latest_charge, "amount": 100})
    assert by_charge.payment_intent == other.id


async def test_events_paginate_newest_first(client: stripe.StripeClient) -> None:
    intents = [await _succeeded(client) for _ in range(3)]
    seen: list[str] = []
    starting_after: str | None = None
    pages = 0
    while True:
        query: dict[str, Any] = {"type": "payment_intent.succeeded", "limit": 2}
        if starting_after is not None:
            query["starting_after"] = starting_after
        page = await client.v1.events.list_async(cast(Any, query))
        pages += 1
        seen += [e.data.object["id"] for e in page.data]
        if not page.has_more:
            break
        starting_after = page.data[-1].id
    assert pages == 2
    assert seen == [intent.id for intent in reversed(intents)]

    everything = await _events(client, limit=100)
    assert [e.created for e in everything] == sorted((e.created for e in everything), reverse=True)
    wildcard = {e.type for e in await _events(client, type="payment_intent.*", limit=100)}
    assert wildcard == {"payment_intent.created", "payment_intent.succeeded"}
    iterated = [e.id async for e in (await client.v1.events.list_async({"limit": 1})).auto_paging_iter()]
    assert iterated == [e.id for e in everything]
    with pytest.raises(stripe.InvalidRequestError):
        await client.v1.events.list_async({"limit": 101})


async def test_new_events_reach_registered_webhooks(fake: StripeFake, client: stripe.StripeClient) -> None:
    secret = "whsec_kubepay_refunds"
    async with webhook_receiver() as (url, received):
        wanted = ["charge.refunded", "refund.created", "payment_intent.canceled"]
        await fake.register_webhook(url, secret, wanted)
        intent = await _succeeded(client)
        await client.v1.refunds.create_async({"payment_intent": intent.id})
        other = await client.v1.payment_intents.create_async(params())
        await client.v1.payment_intents.cancel_async(other.id)
        types = set()
        for _ in wanted:
            payload, signature = await asyncio.wait_for(received.get(), DEADLINE)
            types.add(stripe.Webhook.construct_event(payload, signature, secret).type)
        assert types == set(wanted)


async def test_failed_three_d_secure_authentication_is_a_payment_failed_event(client: stripe.StripeClient) -> None:
    card = {"number": TEST_CARDS["three_d_secure_number"], "exp_month": 12, "exp_year": 2034, "cvc": "123"}
    method = await client.v1.payment_methods.create_async(
        cast(PaymentMethodCreateParams, {"type": "card", "card": card})
    )
    intent = await client.v1.payment_intents.create_async(params(payment_method=method.id, confirm=True))
    assert intent.client_secret is not None
    await client.raw_request_async(
        "post",
        f"/v1/payment_intents/{intent.id}/_authenticate",
        client_secret=intent.client_secret,
        success="false",
    )
    events = await _events(client, type="payment_intent.payment_failed")
    assert [e.data.object["id"] for e in events] == [intent.id]
    failed = events[0].data.object
    assert failed["status"] == "requires_payment_method"
    assert failed["last_payment_error"]["code"] == "payment_intent_authentication_failure"
