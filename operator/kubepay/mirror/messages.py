"""Kafka messages for each payment milestone: Go-service payloads with CloudEvents binary-mode headers."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubepay.config import Topics
from kubepay.model.money import to_decimal_string
from kubepay.model.phases import Phase

# ce_id is uuid5 in this namespace of "<resource uid>/<milestone>/<message type>": a replay reuses it.
CE_NAMESPACE = uuid.UUID("6f0e5b7c-3a1d-4c2e-9b8f-6b7562657061")

INITIATED, SUCCEEDED, FAILED, CANCELED, REFUNDED = "initiated", "succeeded", "failed", "canceled", "refunded"

# The milestones a phase implies, in publishing order.
MILESTONES: dict[Phase, tuple[str, ...]] = {
    Phase.PENDING: (INITIATED,),
    Phase.REQUIRES_ACTION: (INITIATED,),
    Phase.PROCESSING: (INITIATED,),
    Phase.REQUIRES_CAPTURE: (INITIATED,),
    Phase.FAILED: (INITIATED, FAILED),
    Phase.SUCCEEDED: (INITIATED, SUCCEEDED),
    Phase.CANCELED: (INITIATED, CANCELED),
    Phase.PARTIALLY_REFUNDED: (INITIATED, SUCCEEDED),
    Phase.REFUNDED: (INITIATED, SUCCEEDED),
}

ORDER_STATUS = {SUCCEEDED: "COMPLETED", FAILED: "CANCELLED", CANCELED: "CANCELLED"}


@dataclass(frozen=True)
class Payment:
    """What every message says about the payment."""

    uid: str
    namespace: str
    name: str
    payment_id: str
    order_id: str
    user_id: str | None
    amount_minor: int
    currency: str
    provider_id: str
    payment_method: str | None
    failure_code: str | None
    failure_reason: str | None
    observed_at: int


@dataclass(frozen=True)
class Message:
    topic: str
    key: str
    value: dict[str, Any]
    headers: list[tuple[str, bytes]]

    def encoded_value(self) -> bytes:
        return json.dumps(self.value, separators=(",", ":"), sort_keys=True).encode()

    @property
    def ce_id(self) -> str:
        return dict(self.headers)["ce_id"].decode()


def due(phase: Phase, published: Sequence[str]) -> list[str]:
    """Milestones the phase implies that have not been published yet."""
    return [m for m in MILESTONES[phase] if m not in published]


def ce_id(uid: str, milestone: str, message_type: str) -> str:
    return str(uuid.uuid5(CE_NAMESPACE, f"{uid}/{milestone}/{message_type}"))


def _headers(payment: Payment, milestone: str, ce_type: str, source: str) -> list[tuple[str, bytes]]:
    time = datetime.fromtimestamp(payment.observed_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", ce_id(payment.uid, milestone, ce_type).encode()),
        ("ce_type", ce_type.encode()),
        ("ce_source", f"{source}/namespaces/{payment.namespace}/paymentintents/{payment.name}".encode()),
        ("ce_time", time.encode()),
        ("ce_subject", payment.order_id.encode()),
        ("content-type", b"application/json"),
    ]


def _payment_value(payment: Payment, milestone: str) -> dict[str, Any]:
    """The Go service's payment fields, common to every payments.* message."""
    return {
        "payment_id": payment.payment_id,
        "order_id": payment.order_id,
        "user_id": payment.user_id or "",
        "amount": to_decimal_string(payment.amount_minor, payment.currency),
        "amount_minor": payment.amount_minor,
        "currency": payment.currency.upper(),
        "payment_method": payment.payment_method or "",
        "provider": "stripe",
        "provider_id": payment.provider_id,
        "status": milestone,
    }


def messages_for(milestone: str, payment: Payment, topics: Topics, source: str) -> list[Message]:
    """The payments.<milestone> message, plus OrderStatusUpdated where the order's fate is decided."""
    value = _payment_value(payment, milestone)
    if milestone in (FAILED, CANCELED):
        value["reason"] = payment.failure_reason or ""
        value["code"] = payment.failure_code or ""
    topic = {INITIATED: topics.initiated, SUCCEEDED: topics.succeeded, FAILED: topics.failed,
             CANCELED: topics.canceled}[milestone]
    ce_type = f"io.kubepay.payment.{milestone}"
    messages = [Message(topic, payment.order_id, value, _headers(payment, milestone, ce_type, source))]
    if milestone in ORDER_STATUS:
        order_value = {
            "event_type": "OrderStatusUpdated",
            "order_id": payment.order_id,
            "status": ORDER_STATUS[milestone],
            "payment_id": payment.payment_id,
            "reason": value.get("reason", ""),
        }
        order_type = "io.kubepay.order.status_updated"
        messages.append(
            Message(topics.order_status, payment.order_id, order_value,
                    _headers(payment, milestone, order_type, source))
        )
    return messages


@dataclass(frozen=True)
class Refund:
    """What the payments.refunded message says about one refund."""

    uid: str
    refund_id: str
    provider_refund_id: str
    amount_minor: int
    reason: str | None


def refund_message(payment: Payment, refund: Refund, topics: Topics, source: str) -> Message:
    value = {
        **_payment_value(payment, REFUNDED),
        "refund_id": refund.refund_id,
        "provider_refund_id": refund.provider_refund_id,
        "amount_refunded": to_decimal_string(refund.amount_minor, payment.currency),
        "amount_refunded_minor": refund.amount_minor,
        "reason": refund.reason or "",
    }
    ce_type = "io.kubepay.payment.refunded"
    headers = _headers(payment, REFUNDED, ce_type, source)
    headers = [(k, ce_id(refund.uid, REFUNDED, ce_type).encode()) if k == "ce_id" else (k, v) for k, v in headers]
    return Message(topics.refunded, payment.order_id, value, headers)
