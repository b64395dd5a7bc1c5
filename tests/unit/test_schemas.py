"""schemas/: every file is a valid JSON Schema, and the messages kubepay builds and accepts match them."""

from __future__ import annotations

import json
import re
from typing import Any, cast

import jsonschema
import pytest

from kubepay.config import Topics
from kubepay.kube.client import KubeClient
from kubepay.mirror.messages import (
    CANCELED,
    FAILED,
    INITIATED,
    SUCCEEDED,
    Payment,
    Refund,
    messages_for,
    refund_message,
)
from kubepay.orders.consumer import PoisonMessage, parse_order
from kubepay.orders.intake import ORDER_ID_ANNOTATION, ORDER_ID_LABEL, Order, manifest, order_label, resource_name
from kubepay.store import Store
from kubepay_webhook.api import ApiConfig, make_api_app
from kubepay_webhook.api_auth import SharedToken
from kubepay_webhook.openapi import document
from tests.contracts import SCHEMAS, message_schema, validate_message

PAYMENT = Payment(uid="8b7c", namespace="shop", name="order-1111", payment_id="f68f74ba-c202-598f-863a-4bbc87e53ca6",
                  order_id="1111", user_id="user-42", amount_minor=1999, currency="usd", provider_id="pi_1",
                  payment_method="pm_1", failure_code="card_declined", failure_reason="Your card was declined.",
                  observed_at=1_700_000_000)
SAMPLE_ORDER = {"order_id": "1111", "user_id": "user-42", "total": "19.99", "currency": "USD",
                "items": [{"product_id": "sku-1", "quantity": 1, "price": "19.99"}]}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def test_every_schema_is_a_valid_json_schema() -> None:
    names = sorted(p.stem for p in SCHEMAS.glob("*.json"))
    assert names == ["orders.created", "orders.status", "payments.canceled", "payments.failed",
                     "payments.initiated", "payments.refunded", "payments.succeeded"]
    for name in names:
        jsonschema.Draft202012Validator.check_schema(message_schema(name))


@pytest.mark.parametrize("milestone", [INITIATED, SUCCEEDED, FAILED, CANCELED])
def test_published_messages_match_their_schemas(milestone: str) -> None:
    for message in messages_for(milestone, PAYMENT, Topics(), "kubepay"):
        validate_message(message.topic, json.loads(message.encoded_value()))


def test_the_schemas_catch_drift() -> None:
    [message] = messages_for(INITIATED, PAYMENT, Topics(), "kubepay")
    with pytest.raises(jsonschema.ValidationError):
        validate_message("payments.initiated", {**message.value, "amount": 19.99})
    with pytest.raises(jsonschema.ValidationError):
        validate_message("payments.initiated", {**message.value, "surprise": True})


def test_refunded_message_matches_its_schema() -> None:
    refund = Refund(uid="r-uid", refund_id="0b6f3c1e-8a51-5a8e-9d0e-3f2b1c4d5e6f", provider_refund_id="re_1",
                    amount_minor=500, reason="requested_by_customer")
    message = refund_message(PAYMENT, refund, Topics(), "kubepay")
    value = json.loads(message.encoded_value())
    validate_message("payments.refunded", value)
    assert (value["amount_refunded"], value["amount_refunded_minor"]) == ("5.00", 500)
    with pytest.raises(jsonschema.ValidationError):
        validate_message("payments.refunded", {k: v for k, v in value.items() if k != "refund_id"})


def test_sample_order_matches_the_schema_and_is_parsed_exactly() -> None:
    validate_message("orders.created", SAMPLE_ORDER)
    order = parse_order(json.dumps(SAMPLE_ORDER).encode())
    assert (order.order_id, order.amount_minor, order.currency, order.user_id) == ("1111", 1999, "usd", "user-42")


@pytest.mark.parametrize(("total", "currency", "minor"), [
    ("19.99", "USD", 1999), ("0.29", "usd", 29), ("1200", "JPY", 1200), ("1.230", "KWD", 1230), ("12", "EUR", 1200),
    ("5", "ISK", 500), ("5000", "UGX", 500000), ("10.45", "HUF", 1045), ("800.45", "TWD", 80045),
])
def test_totals_become_minor_units_without_floats(total: str, currency: str, minor: int) -> None:
    assert parse_order(json.dumps({**SAMPLE_ORDER, "total": total, "currency": currency}).encode()).amount_minor \
        == minor
    # A JSON number is read as an exact decimal too.
    raw = json.dumps({**SAMPLE_ORDER, "currency": currency}).replace('"19.99"', total).encode()
    assert parse_order(raw).amount_minor == minor


@pytest.mark.parametrize(("value", "reason"), [
    (b"{not json", "value is not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (json.dumps({**SAMPLE_ORDER, "total": "12.345"}).encode(), "more than 2 decimal places for USD"),
    (json.dumps({**SAMPLE_ORDER, "total": "0"}).encode(), "total: must be greater than zero"),
    (json.dumps({**SAMPLE_ORDER, "total": "abc"}).encode(), "total: amount 'abc' is not a decimal number"),
    (json.dumps({**SAMPLE_ORDER, "currency": "dollars"}).encode(), "currency: must be a three-letter"),
    (json.dumps({**SAMPLE_ORDER, "currency": "usd\n"}).encode(), "currency: must be a three-letter"),
    (json.dumps({**SAMPLE_ORDER, "total": "5.50", "currency": "ISK"}).encode(),
     "total: must be a multiple of 100 for ISK: Stripe takes ISK in whole units"),
    (json.dumps({**SAMPLE_ORDER, "total": "1.234", "currency": "KWD"}).encode(),
     "total: must be a multiple of 10 for KWD: Stripe needs the last digit of a three-decimal amount to be 0"),
    (json.dumps({k: v for k, v in SAMPLE_ORDER.items() if k != "order_id"}).encode(), "order_id: must be"),
])
def test_unusable_orders_are_poison_with_a_reason(value: bytes, reason: str) -> None:
    with pytest.raises(PoisonMessage, match=re.escape(reason)):
        parse_order(value)


@pytest.mark.parametrize("order_id", ["1111", "A-1001/x", "ORD_1", "Ünïcode order", "x" * 300, "--", "a.b"])
def test_resource_names_are_dns_labels_and_distinct(order_id: str) -> None:
    name = resource_name(order_id)
    assert DNS_LABEL.match(name) and len(name) <= 63 and name.startswith("order-")
    assert resource_name(order_id) == name  # deterministic: a repeat finds the same resource
    body = manifest(Order(order_id, 100, "usd"), "shop", "api")
    assert body["metadata"]["annotations"][ORDER_ID_ANNOTATION] == order_id
    label = body["metadata"]["labels"].get(ORDER_ID_LABEL, "")
    assert label == order_label(order_id) and len(label) <= 63


def test_plain_order_ids_keep_a_readable_name_and_lookalikes_do_not_collide() -> None:
    assert resource_name("1111") == "order-1111"
    assert resource_name("abc") != resource_name("ABC") != resource_name("a_b_c")
    assert resource_name("x" * 300) != resource_name("x" * 301)


def test_every_route_is_documented_and_every_documented_route_is_served() -> None:
    app = make_api_app(cast(Store, object()), cast(KubeClient, object()), ApiConfig("token", "default", 1.0),
                       SharedToken("t" * 16))
    served = {(route.method.lower(), route.resource.canonical) for route in app.router.routes()
              if route.method != "HEAD" and route.resource is not None}
    doc: dict[str, Any] = document()
    documented = {(method, path) for path, operations in doc["paths"].items() for method in operations}
    assert served == documented
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                for content in response["content"].values():
                    schema = content["schema"]
                    jsonschema.Draft202012Validator.check_schema({**schema, "components": doc["components"]})
                assert re.fullmatch(r"[1-5]\d\d", status), (method, path, status)
