"""downstream.sync at handler level: a message Kafka refuses for good does not hold back the others."""

from __future__ import annotations

from typing import Any, cast

import pytest

from kubepay.config import Settings, load
from kubepay.kube.client import KubeClient
from kubepay.mirror import downstream
from kubepay.mirror.messages import Message
from kubepay.mirror.publisher import Publisher, PublishRejected
from kubepay.store import PaymentRow, Store, StoreRejected

BODY = {
    "metadata": {"namespace": "shop", "name": "order-1", "uid": "8b0c7a43-0000-4000-8000-000000000001"},
    "spec": {"orderId": "1", "amount": 1200, "currency": "usd"},
    "status": {"phase": "Succeeded", "published": [],
               "stripe": {"paymentIntentId": "pi_1", "lastEventCreated": 1, "status": "succeeded"}},
}


class FakeStore:
    def __init__(self, refuse: bool) -> None:
        self.refuse = refuse
        self.rows: list[PaymentRow] = []

    async def upsert_payment(self, row: PaymentRow) -> None:
        if self.refuse:
            raise StoreRejected("PostgreSQL refused the data: value too long")
        self.rows.append(row)


class FakePublisher:
    def __init__(self, refused_topic: str | None) -> None:
        self.refused_topic = refused_topic
        self.sent: list[Message] = []

    async def publish(self, messages: list[Message]) -> None:
        if any(m.topic == self.refused_topic for m in messages):
            raise PublishRejected("Kafka refused a message: MessageSizeTooLargeError")
        self.sent.extend(messages)


class FakeKube:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    async def patch_status(self, plural: str, namespace: str, name: str, patch: dict[str, Any],
                           resource_version: str | None) -> dict[str, Any]:
        self.patches.append(patch)
        return {}


def _settings() -> Settings:
    return load({"DATABASE_URL": "postgresql://u@h/db", "KAFKA_BROKER_URL": "k:9092",
                 "STRIPE_SECRET_KEY": "sk_test_1"})


async def test_a_refused_milestone_does_not_hold_back_the_next() -> None:
    store, publisher, kube = FakeStore(refuse=False), FakePublisher("payments.initiated"), FakeKube()
    with pytest.raises(PublishRejected):
        await downstream.sync(BODY, cast(Store, store), cast(Publisher, publisher), cast(KubeClient, kube),
                              _settings())
    assert {m.topic for m in publisher.sent} == {"payments.succeeded", "orders.status"}
    assert kube.patches == [{"published": ["succeeded"]}]
    assert len(store.rows) == 1


async def test_a_refused_row_does_not_hold_back_the_messages() -> None:
    store, publisher, kube = FakeStore(refuse=True), FakePublisher(None), FakeKube()
    with pytest.raises(StoreRejected):
        await downstream.sync(BODY, cast(Store, store), cast(Publisher, publisher), cast(KubeClient, kube),
                              _settings())
    assert {m.topic for m in publisher.sent} == {"payments.initiated", "payments.succeeded", "orders.status"}
    assert kube.patches == [{"published": ["initiated", "succeeded"]}]
