"""From an order to its PaymentIntent resource, idempotently: shared by the HTTP API and the orders consumer.

One order has one resource, named from the order id, so a repeated request or a redelivered message
finds the resource made the first time instead of making a second payment.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from kubepay.kube.client import Conflict, KubeClient, NotFound
from kubepay.model.labels import HASH_CHARS, label_value, short_hash
from kubepay.model.money import MoneyError, check_amount, currency_code, to_minor
from kubepay.model.resources import GROUP, PAYMENT_INTENTS, VERSION

ORDER_ID_LABEL = "kubepay.io/order-id"  # the order id as a label value (lower-cased; hashed when long)
ORDER_ID_ANNOTATION = "kubepay.io/order-id"  # the raw order id
SOURCE_LABEL = "kubepay.io/source"  # "api" or "orders-consumer"
NAME_PREFIX = "order-"
_MAX_NAME = 63  # a DNS-1123 label, so the name also fits wherever a label value is needed
_INVALID = re.compile(r"[^a-z0-9]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_AMOUNT = 99_999_999  # the CRD's maximum, in minor units


class OrderInvalid(ValueError):
    """The order cannot become a payment; `fields` maps each bad field to what is wrong with it."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{name}: {problem}" for name, problem in fields.items()))
        self.fields = fields


class OrderConflict(Exception):
    """The order already has a payment with another amount or currency (or its name is taken)."""

    def __init__(self, message: str, existing: dict[str, Any]) -> None:
        super().__init__(message)
        self.existing = existing


@dataclass(frozen=True)
class Order:
    order_id: str
    amount_minor: int
    currency: str  # lower case, as the CRD wants it
    user_id: str | None = None
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


def _sanitize(order_id: str) -> str:
    return _INVALID.sub("-", order_id.lower()).strip("-")


def resource_name(order_id: str) -> str:
    """`order-<id>` when the id is already a DNS-1123 label; otherwise a readable part plus a hash of the raw id."""
    clean = _sanitize(order_id)
    if clean == order_id and len(NAME_PREFIX) + len(clean) <= _MAX_NAME:
        return NAME_PREFIX + clean
    room = _MAX_NAME - len(NAME_PREFIX) - HASH_CHARS - 1
    readable = clean[:room].strip("-")
    return f"{NAME_PREFIX}{readable}-{short_hash(order_id)}" if readable else NAME_PREFIX + short_hash(order_id)


def order_label(order_id: str) -> str:
    """The order id as a label value (for `kubectl get pi -l kubepay.io/order-id=...`); the annotation has it raw."""
    clean = _sanitize(order_id)
    return label_value(clean) if clean else ""


def loads(raw: bytes | str) -> Any:
    """JSON as orders arrive (API bodies, orders.created values): decimals exact, never floats. ValueError for
    anything that is not JSON, including nesting deeper than the parser goes (RecursionError is no ValueError)."""
    try:
        return json.loads(raw, parse_float=Decimal)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def identifier_problem(value: str) -> str | None:
    """Order and user ids become PostgreSQL text (which cannot hold NUL), Kafka keys and log lines."""
    return "must not contain control characters" if _CONTROL.search(value) else None


def parse_amount(raw: Any, currency: str, name: str = "amount") -> int:
    """A decimal amount (string, or a JSON number parsed as Decimal) to minor units; OrderInvalid otherwise."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | Decimal):
        raise OrderInvalid({name: "must be a decimal string such as \"19.99\""})
    try:
        minor = to_minor(raw, currency)
    except MoneyError as exc:
        raise OrderInvalid({name: str(exc)}) from None
    return check_minor(minor, currency, name)


def check_minor(minor: int, currency: str, name: str = "amount") -> int:
    """An amount in minor units within the CRD's range that Stripe accepts for the currency; OrderInvalid otherwise."""
    if minor < 1:
        raise OrderInvalid({name: "must be greater than zero"})
    if minor > MAX_AMOUNT:
        raise OrderInvalid({name: f"must be at most {MAX_AMOUNT} minor units"})
    try:
        check_amount(minor, currency)
    except MoneyError as exc:
        raise OrderInvalid({name: str(exc)}) from None
    return minor


def parse_currency(raw: Any, name: str = "currency") -> str:
    try:
        return currency_code(raw)
    except MoneyError as exc:
        raise OrderInvalid({name: str(exc)}) from None


def manifest(order: Order, namespace: str, source: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"orderId": order.order_id, "amount": order.amount_minor, "currency": order.currency}
    if order.user_id:
        spec["userId"] = order.user_id
    if order.description:
        spec["description"] = order.description
    if order.metadata:
        spec["metadata"] = dict(order.metadata)
    labels = {SOURCE_LABEL: source}
    label = order_label(order.order_id)
    if label:
        labels[ORDER_ID_LABEL] = label
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PaymentIntent",
        "metadata": {
            "name": resource_name(order.order_id),
            "namespace": namespace,
            "labels": labels,
            "annotations": {ORDER_ID_ANNOTATION: order.order_id},
        },
        "spec": spec,
    }


def _same_payment(existing: dict[str, Any], order: Order) -> None:
    spec = existing.get("spec") or {}
    name = existing["metadata"]["name"]
    if spec.get("orderId") != order.order_id:
        raise OrderConflict(f"the resource {name} belongs to order {spec.get('orderId')!r}", existing)
    if (spec.get("amount"), spec.get("currency")) != (order.amount_minor, order.currency):
        raise OrderConflict(
            f"order {order.order_id} already has a payment of {spec.get('amount')} {spec.get('currency')} "
            f"(minor units); this request asks for {order.amount_minor} {order.currency}",
            existing,
        )


async def ensure_payment_intent(
    kube: KubeClient, namespace: str, order: Order, source: str
) -> tuple[dict[str, Any], bool]:
    """Create the order's PaymentIntent, or find the one made before; returns (resource, created now).

    Raises OrderConflict when the order's resource exists with another amount or currency.
    Kubernetes being unavailable surfaces as KubeUnavailable: the caller retries, nothing is half done.
    """
    body = manifest(order, namespace, source)
    name = body["metadata"]["name"]
    for _ in range(3):
        try:
            return await kube.create_custom(PAYMENT_INTENTS, namespace, body), True
        except Conflict:
            pass
        try:
            existing = await kube.get_custom(PAYMENT_INTENTS, namespace, name)
        except NotFound:
            continue  # deleted between the create and the read: create again
        _same_payment(existing, order)
        return existing, False
    raise Conflict(f"{namespace}/{name} keeps appearing and disappearing")
