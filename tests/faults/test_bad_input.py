"""Hostile and broken input to the receiver, the payments API and the orders consumer: each class gets its exact
answer (status and body, or the dead-letter reason), the processes stay up, and a burst of 10,000 such requests
to each HTTP process leaves its memory where it was after warming up."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from kubepay.model.identity import payment_id
from kubepay.orders.intake import resource_name
from kubepay_sandbox.processes import KubepayProcess
from kubepay_sandbox.stack import Sandbox, Tenant
from tests.conftest import Running
from tests.faults.harness import Faults, Figure, handler_crashes, intent_id, pay, phase, wait_all
from tests.helpers import Kube, deliver, sign, stripe_event, wait_for

pytestmark = [pytest.mark.needs_emulator, pytest.mark.needs_fake_stripe]

BURST = 10_000
WARM_UP = 2_000
RSS_GROWTH_MIB = 8.0  # after warming up, a burst may not grow a process by more than this
ANY = "…"  # an expected string ending in this matches any text that starts with the rest
EXISTING_ORDER = "existing-order"
TOO_LARGE = "amount is too large: more than 18 digits in USD's minor units"


@dataclass
class Case:
    """One class of bad input: the request, and the answer it must get."""

    name: str
    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str | bytes] = field(default_factory=dict)  # bytes: sent as they are, not as UTF-8
    status: int = 400
    answer: dict[str, Any] | None = None  # JSON fields that must be in the answer (None: not JSON, or any)
    burst: bool = True  # part of the memory burst (not the megabyte bodies)


def _matches(actual: Any, expected: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and _matches(actual[k], v) for k, v in expected.items())
    if isinstance(expected, str) and expected.endswith(ANY):
        return isinstance(actual, str) and actual.startswith(expected[:-1])
    return bool(actual == expected)


async def _send(session: aiohttp.ClientSession, base: str, case: Case) -> tuple[int, Any]:
    if any(isinstance(value, bytes) for value in case.headers.values()):
        status, text = await _send_raw(base, case)
    else:
        async with session.request(case.method, base + case.path, data=case.body,
                                   headers=case.headers) as response:  # type: ignore[arg-type]
            status, text = response.status, await response.text(errors="replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


async def _send_raw(base: str, case: Case) -> tuple[int, str]:
    """HTTP/1.1 by hand, for header bytes no HTTP client would send."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    headers = {"Host": host, "Content-Length": str(len(case.body)), "Connection": "close", **case.headers}
    head = b"".join(name.encode() + b": " + (value if isinstance(value, bytes) else value.encode()) + b"\r\n"
                    for name, value in headers.items())
    writer.write(f"{case.method} {case.path} HTTP/1.1\r\n".encode() + head + b"\r\n" + case.body)
    response = await reader.read()
    writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2].decode(errors="replace")


# -- the receiver -------------------------------------------------------------------------------------------


def _signed(body: bytes, secret: str, timestamp: int | None = None) -> dict[str, str]:
    return {"Content-Type": "application/json", "Stripe-Signature": sign(body, secret, timestamp)}


def _event(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


def _invalid(reason: str) -> dict[str, Any]:
    return {"received": True, "outcome": "invalid", "error": reason}


def _nested(event_id: str, depth: int) -> bytes:
    return (f'{{"id": "{event_id}", "object": "event", "type": "payment_intent.succeeded", "created": 1, '
            f'"data": {{"object": {{"id": "pi_1", "status": "succeeded", "x": {"[" * depth + "]" * depth}}}}}}}'
            ).encode()


def receiver_cases(secret: str, applied: dict[str, Any]) -> list[Case]:
    """`applied` is the payment_intent.succeeded event that moved a payment; the cases are about that payment."""
    path, now = "/payments/webhook", int(time.time())
    paid = applied["data"]["object"]
    good = {**paid, "status": "succeeded"}
    foreign_meta = {**paid["metadata"], "kubepay_namespace": "somebody-else"}
    replaced_meta = {**paid["metadata"], "kubepay_uid": str(uuid.uuid4())}

    def signed(name: str, event: dict[str, Any] | bytes, status: int, answer: dict[str, Any] | None,
               **options: Any) -> Case:
        body = event if isinstance(event, bytes) else _event(event)
        return Case(name, "POST", path, body, _signed(body, secret), status, answer, **options)

    def invalid(name: str, event: dict[str, Any] | bytes, reason: str) -> Case:
        return signed(name, event, 200, _invalid(reason))

    ev = stripe_event
    body = _event(ev("payment_intent.succeeded", good))
    return [
        Case("receiver: no Stripe-Signature header", "POST", path, body, {}, 400,
             {"error": "missing Stripe-Signature header"}),
        Case("receiver: a Stripe-Signature that is not one", "POST", path, body, {"Stripe-Signature": "nonsense"},
             400, {"error": "signature verification failed: Unable to extract timestamp and signatures from header"}),
        Case("receiver: signed with another secret", "POST", path, body, _signed(body, "whsec_another"), 400,
             {"error": "signature verification failed: No signatures found matching the expected signature for "
                       "payload"}),
        Case("receiver: signature 10 minutes old", "POST", path, body, _signed(body, secret, now - 600), 400,
             {"error": "signature verification failed: Timestamp outside the tolerance zone" + ANY}),
        Case("receiver: signature an hour in the future", "POST", path, body, _signed(body, secret, now + 3600), 400,
             {"error": "signature verification failed: timestamp more than 30s in the future"}),
        Case("receiver: body changed after signing", "POST", path, body.replace(b"succeeded", b"canceled", 1),
             _signed(body, secret), 400,
             {"error": "signature verification failed: No signatures found matching the expected signature for "
                       "payload"}),
        Case("receiver: a timestamp but no v1 signature", "POST", path, body,
             {"Stripe-Signature": f"t={now}"}, 400,
             {"error": "signature verification failed: No signatures found with expected scheme v1"}),
        Case("receiver: a signature header of 10 KiB", "POST", path, body, {"Stripe-Signature": "v1=" + "a" * 10240},
             400, None),
        Case("receiver: GET instead of POST", "GET", path, b"", {}, 405, None),
        Case("receiver: a body over 1 MiB", "POST", path, b"x" * (1024 * 1024 + 1),
             _signed(b"x" * (1024 * 1024 + 1), secret), 413, {"error": "body larger than 1048576 bytes"}, burst=False),
        signed("receiver: signed body that is not UTF-8", b'{"id": "evt_\xff"}', 400, {"error": "body is not UTF-8"}),
        signed("receiver: signed body that is not JSON", b"{not json", 400, {"error": "body is not JSON"}),
        signed("receiver: signed empty body", b"", 400, {"error": "body is not JSON"}),
        signed("receiver: signed JSON that is not an object", b"[1, 2]", 400,
               {"error": "body is not a Stripe event (id and type are required)"}),
        signed("receiver: an event without a type", {"id": "evt_notype", "data": {}}, 400,
               {"error": "body is not a Stripe event (id and type are required)"}),
        signed("receiver: an event id of 300 characters", {**ev("customer.created", {}), "id": "evt_" + "a" * 296},
               400, {"error": "body is not a Stripe event (its id is not usable)"}),
        signed("receiver: a NUL in the event id", {**ev("customer.created", {}), "id": "evt_\x00"}, 400,
               {"error": "body is not a Stripe event (its id is not usable)"}),
        invalid("receiver: data.object empty", ev("payment_intent.succeeded", {}), "data.object.id must be a string"),
        invalid("receiver: data missing", {**ev("payment_intent.succeeded", good), "data": None},
                "data must be an object"),
        invalid("receiver: status missing", ev("payment_intent.succeeded", {**good, "status": None}),
                "data.object.status must be a string"),
        invalid("receiver: metadata a string", ev("payment_intent.succeeded", {**good, "metadata": "ns=x"}),
                "data.object.metadata must be an object of strings"),
        invalid("receiver: a metadata value not a string",
                ev("payment_intent.succeeded", {**good, "metadata": {**good["metadata"], "n": 1}}),
                "data.object.metadata must be an object of strings"),
        invalid("receiver: amount_received a string",
                ev("payment_intent.succeeded", {**good, "amount_received": "1999"}),
                "data.object.amount_received must be an integer"),
        invalid("receiver: amount beyond int64", ev("payment_intent.succeeded", {**good, "amount": 2**70}),
                "data.object.amount must be between 0 and 2^63-1"),
        invalid("receiver: a negative amount_capturable",
                ev("payment_intent.amount_capturable_updated", {**good, "amount_capturable": -1}),
                "data.object.amount_capturable must be between 0 and 2^63-1"),
        invalid("receiver: created a string", {**ev("payment_intent.succeeded", good), "created": "1733000000"},
                "created must be an integer"),
        invalid("receiver: created beyond int64", {**ev("payment_intent.succeeded", good), "created": 2**63},
                "created must be between 0 and 2^63-1"),
        invalid("receiver: created negative", {**ev("payment_intent.succeeded", good), "created": -1},
                "created must be between 0 and 2^63-1"),
        invalid("receiver: livemode a string", {**ev("payment_intent.succeeded", good), "livemode": "false"},
                "livemode must be true or false"),
        invalid("receiver: a NUL in metadata",
                ev("payment_intent.succeeded", {**good, "metadata": {**good["metadata"], "note": "a\x00b"}}),
                "contains a NUL character"),
        invalid("receiver: last_payment_error a string",
                ev("payment_intent.payment_failed", {**good, "last_payment_error": "declined"}),
                "data.object.last_payment_error must be an object"),
        invalid("receiver: charge.refunded without its intent",
                ev("charge.refunded", {"id": "ch_1", "object": "charge", "amount_refunded": 5}),
                "data.object.payment_intent must be a string"),
        invalid("receiver: a refund amount with a fraction", ev("refund.updated", {"id": "re_1", "amount": 1.5}),
                "data.object.amount must be an integer"),
        invalid("receiver: nested 100 deep", _nested("evt_nested_100", 100), "nests deeper than 32 levels"),
        invalid("receiver: nested 100,000 deep", _nested("evt_nested_100000", 100_000),
                "the event nests too deeply to parse"),
        signed("receiver: an event type kubepay does not handle", ev("customer.created", {"id": "cus_1"}), 200,
               {"received": True, "outcome": "unhandled"}),
        signed("receiver: an intent no kubepay resource made",
               ev("payment_intent.succeeded", {"id": "pi_foreign", "object": "payment_intent",
                                               "status": "succeeded", "metadata": {}}), 200,
               {"received": True, "outcome": "unknown_payment"}),
        signed("receiver: an intent of another namespace's release",
               ev("payment_intent.succeeded", {**good, "metadata": foreign_meta}), 200,
               {"received": True, "outcome": "unknown_payment"}),
        signed("receiver: an intent naming a resource that does not exist",
               ev("payment_intent.succeeded", {**good, "metadata": {**good["metadata"], "kubepay_name": "gone"}}),
               200, {"received": True, "outcome": "unknown_payment"}),
        signed("receiver: an intent naming an impossible resource name",
               ev("payment_intent.succeeded", {**good, "metadata": {**good["metadata"],
                                                                     "kubepay_name": "../../x/" + "Y" * 300}}),
               200, {"received": True, "outcome": "unknown_payment"}),
        signed("receiver: an intent of a deleted and re-created resource",
               ev("payment_intent.succeeded", {**good, "metadata": replaced_meta}), 200,
               {"received": True, "outcome": "stale"}),
        signed("receiver: a charge.refunded for an intent nobody mirrors",
               ev("charge.refunded", {"id": "ch_2", "object": "charge", "payment_intent": "pi_nobody",
                                      "amount": 100, "amount_refunded": 100}), 200,
               {"received": True, "outcome": "unknown_payment"}),
        signed("receiver: a refund for no kubepay refund", ev("refund.updated", {"id": "re_2", "amount": 5}), 200,
               {"received": True, "outcome": "unknown_refund"}),
        signed("receiver: an older event after a newer one",
               ev("payment_intent.processing", {**good, "status": "processing"}, created=now - 60), 200,
               {"received": True, "outcome": "stale"}),
        signed("receiver: a failure after the payment succeeded",
               ev("payment_intent.payment_failed", {**good, "status": "requires_payment_method",
                                                    "last_payment_error": {"code": "card_declined"}},
                  created=now + 1), 200, {"received": True, "outcome": "stale"}),
        signed("receiver: the same event again", applied, 200, {"received": True, "outcome": "duplicate"}),
    ]


# -- the payments API ---------------------------------------------------------------------------------------


def api_cases(token: str, existing_order: str, existing_payment: str) -> list[Case]:
    auth: dict[str, str | bytes] = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    order = {"order_id": "bad-input-1", "amount": 1999, "currency": "USD"}

    def post(name: str, body: dict[str, Any] | bytes, status: int, answer: dict[str, Any] | None,
             path: str = "/payments/intent", headers: dict[str, str | bytes] | None = None, **options: Any) -> Case:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return Case(name, "POST", path, raw, auth if headers is None else headers, status, answer, **options)

    def fields(name: str, changes: dict[str, Any], problems: dict[str, str], drop: tuple[str, ...] = ()) -> Case:
        body = {k: v for k, v in {**order, **changes}.items() if k not in drop}
        return post(name, body, 422, {"error": "invalid request", "fields": problems})

    unauthorized = {"error": "missing or invalid bearer token"}
    not_json = {"error": "invalid request", "fields": {"body": "must be a JSON object"}}
    minor = ("must be an integer in the currency's minor units (1200 is 12.00 USD, as in Stripe); put a decimal "
             "amount such as \"12.00\" in amount_decimal instead")
    one_amount = ("give amount (an integer in minor units: 1200 is 12.00 USD) or amount_decimal (a decimal string "
                  "such as \"12.00\")")
    currency = "must be a three-letter ISO 4217 code such as USD"
    order_id = "must be a non-empty string"
    text_order_id = "must not contain control characters"
    return [
        post("api: no credentials", order, 401, unauthorized, headers={"Content-Type": "application/json"}),
        post("api: a wrong bearer token", order, 401, unauthorized, headers={"Authorization": "Bearer wrong"}),
        post("api: another scheme", order, 401, unauthorized, headers={"Authorization": f"Basic {token}"}),
        post("api: a token that is not UTF-8", order, 401, unauthorized,
             headers={"Authorization": b"Bearer caf\xe9", "Content-Type": "application/json"}),
        post("api: body not JSON", b"{not json", 422, not_json),
        post("api: body JSON but not an object", b"[1]", 422, not_json),
        post("api: body not UTF-8", b'{"order_id": "\xff"}', 422, not_json),
        post("api: body nested 30,000 deep", b"[" * 30_000 + b"]" * 30_000, 422, not_json),
        post("api: body over 64 KiB", b"{" + b" " * 70_000 + b"}", 413, {"error": "Request Entity Too Large"},
             burst=False),
        fields("api: order_id missing", {}, {"order_id": "is required"}, drop=("order_id",)),
        fields("api: order_id blank", {"order_id": "   "}, {"order_id": order_id}),
        fields("api: order_id an object", {"order_id": {"id": 1}}, {"order_id": order_id}),
        fields("api: order_id of 256 characters", {"order_id": "o" * 256},
               {"order_id": "must be at most 255 characters"}),
        fields("api: a NUL in order_id", {"order_id": "ord\x00er"}, {"order_id": text_order_id}),
        fields("api: a newline in order_id", {"order_id": "order\n"}, {"order_id": text_order_id}),
        fields("api: a NUL in user_id", {"user_id": "u\x00"}, {"user_id": text_order_id}),
        fields("api: user_id an object", {"user_id": {"id": 7}}, {"user_id": order_id}),
        fields("api: description over 1000 characters", {"description": "d" * 1001},
               {"description": "must be at most 1000 characters"}),
        fields("api: amount a decimal string", {"amount": "12.00"}, {"amount": minor}),
        fields("api: amount with a fraction", {"amount": 12.5}, {"amount": minor}),
        fields("api: amount true", {"amount": True}, {"amount": minor}),
        fields("api: amount zero", {"amount": 0}, {"amount": "must be greater than zero"}),
        fields("api: amount negative", {"amount": -5}, {"amount": "must be greater than zero"}),
        fields("api: amount above the maximum", {"amount": 100_000_000},
               {"amount": "must be at most 99999999 minor units"}),
        fields("api: amount of 40 digits", {"amount": 10**40}, {"amount": "must be at most 99999999 minor units"}),
        fields("api: amount and amount_decimal", {"amount_decimal": "19.99"}, {"amount": one_amount + ", not both"}),
        fields("api: no amount", {}, {"amount": one_amount}, drop=("amount",)),
        fields("api: amount_decimal with three places in USD", {"amount_decimal": "12.345"},
               {"amount_decimal": "amount '12.345' has more than 2 decimal places for USD"}, drop=("amount",)),
        fields("api: amount_decimal NaN", {"amount_decimal": "NaN"},
               {"amount_decimal": "amount 'NaN' is not a finite number"}, drop=("amount",)),
        fields("api: amount_decimal not a number", {"amount_decimal": "twelve"},
               {"amount_decimal": "amount 'twelve' is not a decimal number"}, drop=("amount",)),
        fields("api: amount_decimal 1E+1000000", {"amount_decimal": "1E+1000000"},
               {"amount_decimal": TOO_LARGE}, drop=("amount",)),
        fields("api: amount_decimal of 5000 digits", {"amount_decimal": "9" * 5000},
               {"amount_decimal": TOO_LARGE}, drop=("amount",)),
        fields("api: amount_decimal a number", {"amount_decimal": 12}, {
            "amount_decimal": "must be a decimal string in the currency's major unit, such as \"12.00\""},
            drop=("amount",)),
        fields("api: currency missing", {}, {"currency": currency}, drop=("currency",)),
        fields("api: currency of two letters", {"currency": "US"}, {"currency": currency}),
        fields("api: currency with a trailing newline", {"currency": "usd\n"}, {"currency": currency}),
        fields("api: currency a number", {"currency": 840}, {"currency": currency}),
        fields("api: metadata a list", {"metadata": ["a"]}, {"metadata": "must be an object of strings"}),
        fields("api: a metadata value a number", {"metadata": {"a": 1}}, {"metadata": "must be an object of strings"}),
        fields("api: 31 metadata keys", {"metadata": {f"k{i}": "v" for i in range(31)}},
               {"metadata": "must have at most 30 keys"}),
        fields("api: a metadata key kubepay_ reserves", {"metadata": {"kubepay_uid": "x"}},
               {"metadata": "keys are at most 40 characters (not starting kubepay_), values at most 500"}),
        post("api: another amount for an existing order",
             {"order_id": existing_order, "amount": 5, "currency": "USD"}, 409,
             {"error": f"order {existing_order} already has a payment of 1999 usd (minor units); this request asks "
                       "for 5 usd"}),
        Case("api: a payment id that is not a uuid", "GET", "/payments/not-a-uuid", b"", auth, 404,
             {"error": "no payment not-a-uuid"}),
        Case("api: an unknown payment", "GET", f"/payments/{uuid.UUID(int=7)}", b"", auth, 404,
             {"error": f"no payment {uuid.UUID(int=7)}"}),
        Case("api: a listing without order_id", "GET", "/payments", b"", auth, 422,
             {"error": "invalid request", "fields": {"order_id": "is required (GET /payments?order_id=...)"}}),
        Case("api: a listing for an order_id with a NUL", "GET", "/payments?order_id=a%00b", b"", auth, 422,
             {"error": "invalid request", "fields": {"order_id": text_order_id}}),
        post("api: a refund of an unknown payment", {}, 404, {"error": f"no payment {uuid.UUID(int=7)}"},
             path=f"/payments/{uuid.UUID(int=7)}/refunds"),
        post("api: a refund with an unknown reason", {"reason": "because"}, 422,
             {"error": "invalid request",
              "fields": {"reason": "must be one of duplicate, fraudulent, requested_by_customer"}},
             path=f"/payments/{existing_payment}/refunds"),
        post("api: an Idempotency-Key that is not ASCII", {}, 422, {"error": "invalid request", "fields": {
            "Idempotency-Key": "must be at most 255 printable ASCII characters"}},
             path=f"/payments/{existing_payment}/refunds", headers={**auth, "Idempotency-Key": b"rma-\xe9"}),
        post("api: an Idempotency-Key of 300 characters", {}, 422, {"error": "invalid request", "fields": {
            "Idempotency-Key": "must be at most 255 printable ASCII characters"}},
             path=f"/payments/{existing_payment}/refunds", headers={**auth, "Idempotency-Key": "k" * 300}),
        post("api: a refund amount as a string", {"amount": "5.00"}, 422,
             {"error": "invalid request", "fields": {"amount": minor}}, path=f"/payments/{existing_payment}/refunds"),
        Case("api: an unknown route", "GET", "/payments/a/b/c", b"", auth, 404, {"error": "Not Found"}),
        Case("api: PUT on the intent route", "PUT", "/payments/intent", b"{}", auth, 405,
             {"error": "Method Not Allowed"}),
    ]


# -- the orders consumer ------------------------------------------------------------------------------------


def order_cases(existing_order: str) -> list[tuple[str, bytes | None, str]]:
    """(class, orders.created value, the kubepay_error header it must be dead-lettered with)."""
    def order(**changes: Any) -> bytes:
        base = {"order_id": "dlq-1", "user_id": "u-1", "total": "19.99", "currency": "USD",
                "items": [{"product_id": "sku-1", "quantity": 1, "price": "19.99"}]}
        return json.dumps({k: v for k, v in {**base, **changes}.items() if v is not None}).encode()

    def bad(problem: str) -> str:
        return f"invalid OrderCreatedEvent: {problem}"

    return [
        ("orders: value not JSON", b"{not json", "value is not JSON: " + ANY),
        ("orders: no value (a tombstone)", None, "empty message (no value)"),
        ("orders: value not UTF-8", b'{"order_id": "\xff"}', "value is not JSON: " + ANY),
        ("orders: value nested 100,000 deep", b"[" * 100_000 + b"]" * 100_000, "value is not JSON: " + ANY),
        ("orders: JSON that is not an object", b"[1, 2]", "value is not a JSON object"),
        ("orders: total missing", order(total=None), bad("total: is required")),
        ("orders: total with three places in USD", order(total="12.345"),
         bad("total: amount '12.345' has more than 2 decimal places for USD")),
        ("orders: total negative", order(total="-1.00"), bad("total: must be greater than zero")),
        ("orders: total true", order(total=True), bad("total: must be a decimal string such as \"19.99\"")),
        ("orders: total 1E+1000000", order(total="1E+1000000"), bad(f"total: {TOO_LARGE}")),
        ("orders: currency of four letters", order(currency="EURO"),
         bad("currency: must be a three-letter ISO 4217 code such as USD")),
        ("orders: currency with a trailing newline", order(currency="USD\n"),
         bad("currency: must be a three-letter ISO 4217 code such as USD")),
        ("orders: order_id missing", order(order_id=None),
         bad("order_id: must be a non-empty string of at most 255 characters")),
        ("orders: a NUL in order_id", order(order_id="dlq\x00"), bad("order_id: must not contain control characters")),
        ("orders: user_id an object", order(user_id={"id": 1}),
         bad("user_id: must be a string of at most 255 characters")),
        ("orders: items not a list", order(items="sku-1"), bad("items: must be an array")),
        ("orders: another amount for an existing order", order(order_id=existing_order, total="0.05"),
         f"order {existing_order} already has a payment of 1999 usd (minor units); this request asks for 5 usd"),
    ]


# -- the scenario -------------------------------------------------------------------------------------------


def rss_mib(process: KubepayProcess) -> float:
    assert process.pid is not None
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def _burst(base: str, cases: list[Case], count: int, concurrency: int = 16) -> None:
    usable = [case for case in cases if case.burst]
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker(offset: int) -> None:
            for index in range(offset, count, concurrency):
                await _send(session, base, usable[index % len(usable)])

        await asyncio.gather(*(worker(offset) for offset in range(concurrency)))


async def _dead_letters(tenant: Tenant, bootstrap: str, count: int) -> list[Any]:
    consumer = AIOKafkaConsumer(tenant.topics.orders_dlq, bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    found: list[Any] = []
    await consumer.start()
    try:
        deadline = time.monotonic() + 60
        while len(found) < count and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                found.extend(records)
    finally:
        await consumer.stop()
    return found


@pytest.mark.timeout(300)
async def test_bad_input_gets_its_exact_answer_and_no_process_falls_over_or_grows(
        sandbox: Sandbox, faults: Faults, running: Running, kube: Kube) -> None:
    ns, tenant = running.namespace, running.tenant
    api, consumer = tenant.process("api"), tenant.process("orders-consumer")
    await asyncio.gather(api.start(), consumer.start())
    receiver = running.webhook
    with Figure("bad-input") as fig:
        target = resource_name(EXISTING_ORDER)  # where the API and the consumer look for the order's payment
        await kube.create_pi(ns, target, {"orderId": EXISTING_ORDER, "amount": 1999, "currency": "usd"})
        [resource] = (await wait_all(kube, ns, [target], lambda o: bool((o.get("status") or {}).get("published")),
                                     60, "the existing order's payment to be initiated")).values()
        [paid] = (await pay(sandbox.stripe_client(), [str(intent_id(resource))])).values()
        applied = stripe_event("payment_intent.succeeded", paid)
        assert (await deliver(tenant.webhook_url, applied, tenant.webhook_secret))[1].get("outcome") == "applied"
        await wait_all(kube, ns, [target], lambda o: phase(o) == "Succeeded", 30, "the existing payment to succeed")
        existing_payment = str(payment_id(resource["metadata"]["uid"]))
        await wait_for(lambda: _row_exists(tenant, existing_payment), 30, "the existing payment's row")
        receiver_table = receiver_cases(tenant.webhook_secret, applied)
        api_table = api_cases(tenant.api_token, EXISTING_ORDER, existing_payment)
        orders_table = order_cases(EXISTING_ORDER)

        wrong: list[str] = []
        async with aiohttp.ClientSession() as session:
            for base, table in ((tenant.webhook_url.rsplit("/payments", 1)[0], receiver_table),
                                (tenant.api_url, api_table)):
                for case in table:
                    status, answer = await _send(session, base, case)
                    if status != case.status or (case.answer is not None and not _matches(answer, case.answer)):
                        wrong.append(f"{case.name}: {status} {str(answer)[:300]}")

        producer = AIOKafkaProducer(bootstrap_servers=faults.broker.bootstrap_servers, enable_idempotence=False)
        await producer.start()
        try:
            for index, (_, value, _) in enumerate(orders_table):
                await producer.send_and_wait(tenant.topics.orders_created, value, key=f"case-{index}".encode())
            await producer.send_and_wait(tenant.topics.orders_created, json.dumps(
                {"order_id": "after-the-poison", "total": "4.20", "currency": "EUR"}).encode(), key=b"good")
        finally:
            await producer.stop()
        try:
            await wait_for(lambda: kube.get_pi(ns, "order-after-the-poison"), 60,
                           "the good order after the poison to become a payment")
        except AssertionError as exc:
            wrong.append(f"orders: {exc}; the consumer's log ends: {consumer.logs()[-2000:]}")
        dead = {record.key.decode(): dict(record.headers)["kubepay_error"].decode()
                for record in await _dead_letters(tenant, faults.broker.bootstrap_servers, len(orders_table))}
        for index, (name, _, reason) in enumerate(orders_table):
            got = dead.get(f"case-{index}")
            if got is None or not _matches(got, reason):
                wrong.append(f"{name}: dead-lettered with {got!r}")
        classes = len(receiver_table) + len(api_table) + len(orders_table)
        fig.add(f"{classes} classes of bad input ({len(receiver_table)} receiver, {len(api_table)} API, "
                f"{len(orders_table)} orders consumer), {len(wrong)} with another answer")
        assert wrong == [], "\n".join(wrong)

        bases = {"receiver": (receiver, tenant.webhook_url.rsplit("/payments", 1)[0], receiver_table),
                 "api": (api, tenant.api_url, api_table)}
        await asyncio.gather(*(_burst(base, table, WARM_UP) for _, base, table in bases.values()))
        warm = {name: rss_mib(process) for name, (process, _, _) in bases.items()}
        began = time.monotonic()
        await asyncio.gather(*(_burst(base, table, BURST) for _, base, table in bases.values()))
        took = time.monotonic() - began
        after = {name: rss_mib(process) for name, (process, _, _) in bases.items()}
        fig.add(f"{BURST} bad requests to each of the receiver and the API in {took:.1f} s: RSS "
                + ", ".join(f"{name} {warm[name]:.1f} -> {after[name]:.1f} MiB" for name in bases)
                + f" (bound +{RSS_GROWTH_MIB:.0f} MiB)")
        alive = {process.command: await process.healthy() for process in (receiver, api, consumer, running.operator)}
        fig.add("processes up: " + ", ".join(name for name, up in alive.items() if up))
        assert all(alive.values()), alive
        for name in bases:
            assert after[name] - warm[name] <= RSS_GROWTH_MIB, f"{name} grew {after[name] - warm[name]:.1f} MiB"
        crashes = handler_crashes(running.operator)
        fig.add(f"{len(crashes)} controller handler crashes")
        assert crashes == []


async def _row_exists(tenant: Tenant, payment: str) -> bool:
    async with aiohttp.ClientSession() as session, session.get(
            f"{tenant.api_url}/payments/{payment}", headers={"Authorization": f"Bearer {tenant.api_token}"}) as r:
        return r.status == 200
