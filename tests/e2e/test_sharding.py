"""Two releases sharding by namespace over one PostgreSQL database, one set of Kafka topics and one Stripe
account: every payment is created once, applied once, mirrored once; none is missed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from kubepay_sandbox.processes import KubepayProcess
from kubepay_sandbox.stack import Sandbox, Tenant
from tests.helpers import Kube, deliver, fetch, intents_for, messages, stripe_event, stripe_id, wait_for

SHARED = ("DATABASE_URL",)  # and every KUBEPAY_TOPIC_*


@pytest_asyncio.fixture()
async def shards(sandbox: Sandbox, tenant: Tenant) -> AsyncIterator[list[tuple[Tenant, Kube]]]:
    """`tenant` and a second namespace whose release shares the first one's database and topics."""
    other = await sandbox.tenant("shard")
    shared = {key: value for key, value in tenant.env.items() if key in SHARED or key.startswith("KUBEPAY_TOPIC_")}
    processes: list[KubepayProcess] = []
    for shard, overrides in ((tenant, {}), (other, shared)):
        processes += [shard.process("operator", **overrides), shard.process("webhook", **overrides)]
    kubes = [await Kube.connect(shard.env["KUBECONFIG"]) for shard in (tenant, other)]
    try:
        for process in processes:
            await process.start()
        yield [(tenant, kubes[0]), (other, kubes[1])]
    finally:
        for kube in kubes:
            await kube.close()
        await other.stop_processes()
        await sandbox.release(other)


async def test_two_releases_share_one_database_and_handle_each_payment_once(
        sandbox: Sandbox, shards: list[tuple[Tenant, Kube]]) -> None:
    payments: list[tuple[Tenant, Kube, str, str]] = []  # shard, its client, name, order id
    for index, (shard, kube) in enumerate(shards):
        for number in range(3):
            name, order_id = f"pay-{number}", f"{index}{number}77"
            await kube.create_pi(shard.namespace, name, {"orderId": order_id, "amount": 1200, "currency": "usd"})
            payments.append((shard, kube, name, order_id))

    # Stripe sends every event to every endpoint: here, to both releases' receivers, each event twice.
    events, uids = [], []
    for shard, kube, name, _ in payments:
        intent_id = await stripe_id(kube, shard.namespace, name)
        pi = await kube.get_pi(shard.namespace, name)
        assert pi is not None
        uids.append(pi["metadata"]["uid"])
        intent = {"id": intent_id, "object": "payment_intent", "status": "succeeded", "amount": 1200,
                  "currency": "usd", "amount_received": 1200, "livemode": False,
                  "metadata": {"kubepay_namespace": shard.namespace, "kubepay_name": name, "kubepay_uid": uids[-1]}}
        events.append(stripe_event("payment_intent.succeeded", intent))
    outcomes: dict[str, list[str]] = {}
    for event in events:
        for receiver, _ in (*shards, *reversed(shards)):
            status, body = await deliver(receiver.webhook_url, event, receiver.webhook_secret)
            assert status == 200
            outcomes.setdefault(event["id"], []).append(body["outcome"])
    assert all(sorted(found) == ["applied", "duplicate", "unknown_payment", "unknown_payment"]
               for found in outcomes.values()), outcomes

    database = shards[0][0].database_url
    for shard, kube, name, order_id in payments:
        await kube.phase_is(shard.namespace, name, "Succeeded")
        [succeeded] = await messages(sandbox.kafka, shards[0][0].topics.succeeded, order_id, 1)
        assert succeeded.value["status"] == "succeeded"

    async def rows() -> list[dict[str, Any]] | None:
        found = await fetch(database, "SELECT order_id, status, resource_namespace FROM payments ORDER BY order_id")
        return found if all(row["status"] == "succeeded" for row in found) and len(found) == 6 else None

    assert await wait_for(rows, what="six succeeded rows") == [
        {"order_id": order, "status": "succeeded", "resource_namespace": shard.namespace}
        for shard, _, _, order in sorted(payments, key=lambda p: p[3])]
    ledger = await fetch(database, "SELECT stripe_event_id, outcome FROM payment_events")
    assert sorted((row["stripe_event_id"], row["outcome"]) for row in ledger) == sorted(
        (event["id"], "applied") for event in events)
    for uid in uids:  # and Stripe holds one intent for each
        assert len(await intents_for(sandbox.stripe_client(), uid)) == 1
