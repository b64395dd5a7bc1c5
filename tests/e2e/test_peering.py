"""High availability within a shard: three controllers for one namespace, peered through kopf. The one that started
first works, the others wait on standby; when it stops (SIGTERM) the next one takes over, and when that one dies
(SIGKILL) the last one does, once the dead one's keep-alive has expired. Every payment is created at Stripe once,
reaches its phase, is mirrored to one row and announced under one CloudEvent id per milestone; none is missed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from kubepay_sandbox.child import free_port
from kubepay_sandbox.kafka import ConsumedMessage
from kubepay_sandbox.processes import KubepayProcess
from kubepay_sandbox.stack import Sandbox, Tenant
from tests.conftest import print_logs_if_failed
from tests.helpers import Kube, confirm_and_notify, fetch, intents_for, stripe_id, wait_for

PEERING = "kubepay"
LIFETIME = 6  # KUBEPAY_PEERING_LIFETIME: kopf then keeps alive every second; a 5 s stall is tolerated
BATCH = 3  # payments per stage


@dataclass
class Controller:
    """One `kubepay operator` of the shard, with the metrics that tell what it did."""

    process: KubepayProcess
    metrics_url: str

    async def did(self) -> tuple[int, int]:
        """(Stripe PaymentIntents created, Kafka messages published) by this process."""
        async with aiohttp.ClientSession() as session, session.get(self.metrics_url) as response:
            scrape = await response.text()
        created = published = 0
        for family in text_string_to_metric_families(scrape):
            for sample in family.samples:
                if sample.name == "kubepay_stripe_requests_total" and sample.labels["operation"] == "create_intent":
                    created += int(sample.value)
                elif sample.name == "kubepay_kafka_messages_total":
                    published += int(sample.value)
        return created, published


@pytest_asyncio.fixture()
async def controllers(tenant: Tenant, kube: Kube, request: pytest.FixtureRequest) -> AsyncIterator[list[Controller]]:
    """The peering object (the chart's hook creates it) and three controllers, started one after the other."""
    try:
        await kube.custom.create_namespaced_custom_object(
            "kopf.dev", "v1", tenant.namespace, "kopfpeerings",
            {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING}})
    except ApiException as exc:
        if exc.status != 404:
            raise
        pytest.skip("the cluster does not serve kopfpeerings.kopf.dev: apply helm/kubepay/files/kopf-peering/")
    started = []
    for _ in range(3):
        ports = {name: str(free_port()) for name in
                 ("KUBEPAY_HEALTH_PORT", "KUBEPAY_METRICS_PORT", "KUBEPAY_ADMISSION_PORT")}
        process = tenant.process("operator", KUBEPAY_PEERING_NAME=PEERING,
                                 KUBEPAY_PEERING_LIFETIME=str(LIFETIME), **ports)
        await process.start()
        started.append(Controller(process, f"http://127.0.0.1:{ports['KUBEPAY_METRICS_PORT']}/metrics"))
    await tenant.process("webhook").start()
    yield started
    print_logs_if_failed(request, tenant)


async def pay_batch(sandbox: Sandbox, tenant: Tenant, kube: Kube, stage: int) -> float:
    """Create BATCH payments and pay them; returns how long until the first had its Stripe id (the takeover)."""
    began = time.monotonic()
    names = [f"pay-{stage}-{number}" for number in range(BATCH)]
    for number, name in enumerate(names):
        await kube.create_pi(tenant.namespace, name, {"orderId": f"{stage}{number}", "amount": 1200, "currency": "usd"})
    first = await stripe_id(kube, tenant.namespace, names[0])
    took = time.monotonic() - began

    async def pay(name: str) -> None:
        intent_id = first if name == names[0] else await stripe_id(kube, tenant.namespace, name)
        await confirm_and_notify(sandbox.stripe_client(), intent_id, "pm_card_visa", tenant.webhook_url,
                                 tenant.webhook_secret)
        await kube.phase_is(tenant.namespace, name, "Succeeded")

    await asyncio.gather(*(pay(name) for name in names))
    return took


async def test_a_standby_controller_takes_over_and_nothing_is_handled_twice(
        sandbox: Sandbox, tenant: Tenant, kube: Kube, controllers: list[Controller]) -> None:
    first, second, third = controllers
    await pay_batch(sandbox, tenant, kube, 0)
    assert (await first.did())[0] == BATCH
    assert await second.did() == await third.did() == (0, 0), "a standby worked while the active one ran"

    assert await first.process.stop() == 0  # SIGTERM: it leaves the peering, the next one takes over at once
    after_stop = await pay_batch(sandbox, tenant, kube, 1)
    assert (await second.did())[0] == BATCH
    assert await third.did() == (0, 0)

    await second.process.kill()  # SIGKILL: the last one waits until the dead one's keep-alive has expired
    after_kill = await pay_batch(sandbox, tenant, kube, 2)
    assert (await third.did())[0] == BATCH
    print(f"takeover: {after_stop:.1f}s after SIGTERM, {after_kill:.1f}s after SIGKILL (lifetime {LIFETIME}s)")

    orders = [f"{stage}{number}" for stage in range(3) for number in range(BATCH)]

    async def rows() -> list[dict[str, Any]] | None:
        found = await fetch(tenant.database_url, "SELECT order_id, status, resource_uid FROM payments")
        return found if sorted(r["order_id"] for r in found) == orders and all(
            r["status"] == "succeeded" for r in found) else None

    found_rows = await wait_for(rows, what="one succeeded row per payment")
    for row in found_rows:
        assert len(await intents_for(sandbox.stripe_client(), row["resource_uid"])) == 1, row

    topics = tenant.topics
    for topic in (topics.initiated, topics.succeeded, topics.order_status):
        async def announced(topic: str = topic) -> dict[str, list[ConsumedMessage]] | None:
            by_order: dict[str, list[ConsumedMessage]] = {}
            for message in await sandbox.kafka.read_topic(topic, min_messages=len(orders), timeout=2.0):
                by_order.setdefault(str(message.key), []).append(message)
            return by_order if sorted(by_order) == orders else None

        for order, found in (await wait_for(announced, what=f"every order on {topic}")).items():
            assert len({m.headers["ce_id"] for m in found}) == 1, (topic, order, found)  # repeats only as the same
