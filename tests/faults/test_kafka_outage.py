"""Kafka refusing connections, or stalled (accepting, answering nothing), for 30 s while payments succeed: once it
is back every message is there, and every duplicate carries the ce_id of the message it repeats."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kubepay_sandbox.stack import Sandbox
from tests.conftest import Running
from tests.faults.harness import (
    INITIATED,
    SUCCEEDED,
    Faults,
    Figure,
    KafkaLog,
    Sender,
    create_payments,
    event_body,
    handler_crashes,
    intent_id,
    pay,
    phase,
    wait_all,
)
from tests.helpers import Kube, fetch, stripe_event, wait_for

pytestmark = [pytest.mark.needs_emulator, pytest.mark.needs_fake_stripe]

OUTAGE = 30.0
WAVES = 4  # payments succeed in waves across the outage
LOG_LINES_PER_SECOND = 4  # all the controller says, work included; Kafka's client alone used to log 40 a second


@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", ["refusing", "stalled"])
async def test_payments_succeeding_while_kafka_is_out_lose_no_message(
        mode: str, sandbox: Sandbox, faults: Faults, running: Running, kube: Kube) -> None:
    ns, tenant = running.namespace, running.tenant
    with Figure(f"kafka-{mode}") as fig:
        paid = await create_payments(kube, ns, 20, "paid")
        ready = await wait_all(kube, ns, paid, lambda o: bool((o.get("status") or {}).get("published")), 60,
                               "the payments to be initiated")
        intents = [str(intent_id(ready[name])) for name in paid]

        log_offset = len(running.operator.logs())
        began = time.monotonic()
        if mode == "refusing":
            await faults.kafka.refuse()
            faults.kafka.reset()
        else:
            faults.kafka.stall()
        late = await create_payments(kube, ns, 10, "late")  # created, and given a Stripe intent, during the outage
        probes = f"http://127.0.0.1:{running.operator.env['KUBEPAY_HEALTH_PORT']}"
        unready = await wait_for(lambda: _probe(f"{probes}/readyz", 503), timeout=20,
                                 what="the controller's /readyz to name Kafka")
        assert set(unready["problems"]) == {"kafka"}, unready
        assert await _probe(f"{probes}/healthz", 200) is not None  # alive: a restart would not bring Kafka back
        sender = Sender(tenant.webhook_url, tenant.webhook_secret)
        for wave in range(WAVES):
            confirmed = await pay(sandbox.stripe_client(), intents[wave::WAVES])
            await sender.deliver_all(event_body(stripe_event("payment_intent.succeeded", intent))
                                     for intent in confirmed.values())
            await asyncio.sleep(max(0.0, began + (wave + 1) * OUTAGE / (WAVES + 1) - time.monotonic()))
        await wait_all(kube, ns, paid, lambda o: phase(o) == "Succeeded", 30, "the payments to succeed")
        await wait_all(kube, ns, late, lambda o: bool(intent_id(o)), 60, "the late payments to get a Stripe intent")
        await asyncio.sleep(max(0.0, began + OUTAGE - time.monotonic()))
        await faults.kafka.pass_through()
        back = time.monotonic()
        await wait_for(lambda: _probe(f"{probes}/readyz", 200), timeout=30, what="the controller ready again")
        logged = running.operator.logs()[log_offset:].splitlines()
        errors = sum('"severity": "error"' in line for line in logged)
        fig.add(f"{OUTAGE:.0f} s {mode}: {len(paid)} payments succeeded and {len(late)} were created meanwhile; "
                f"the controller logged {len(logged)} lines ({errors} errors) meanwhile")
        assert len(logged) <= OUTAGE * LOG_LINES_PER_SECOND, "\n".join(logged[-5:])

        kafka = KafkaLog(faults.broker, tenant.topics.all())
        await kafka.start()
        try:
            expected = {**{name: SUCCEEDED for name in paid}, **{name: INITIATED for name in late}}
            await kafka.wait_complete(expected, timeout=120)
            recovered = time.monotonic() - back
            await asyncio.sleep(2)  # let late duplicates (a publish retried after the outage) arrive too
        finally:
            await kafka.stop()
        rows = {r["order_id"]: r["status"]
                for r in await fetch(tenant.database_url, "SELECT order_id, status FROM payments")}
        conflicts = kafka.ce_id_conflicts()
        fig.add(f"0 missing messages: all {len(kafka.messages)} there {recovered:.1f} s after Kafka's return, "
                f"{kafka.duplicates()} duplicates, {len(conflicts)} with another ce_id; "
                f"{sum(rows.get(name) == 'succeeded' for name in paid)}/{len(paid)} rows succeeded")
        assert conflicts == []
        assert [name for name in paid if rows.get(name) != "succeeded"] == []
        async with aiohttp.ClientSession() as session, session.get(running.operator.metrics_url) as response:
            scrape = {s.name + str(sorted(s.labels.items())): s.value
                      for family in text_string_to_metric_families(await response.text()) for s in family.samples}
        failed = sum(v for k, v in scrape.items()
                     if k.startswith("kubepay_kafka_publish_failures_total") and "'unavailable'" in k)
        retried = sum(v for k, v in scrape.items() if k.startswith("kubepay_kafka_publish_retries_total"))
        fig.add(f"metrics: {failed:.0f} messages unacknowledged, {retried:.0f} sent again")
        assert failed >= 1 and retried >= 1
        crashes = handler_crashes(running.operator)
        fig.add(f"{len(crashes)} controller handler crashes")
        assert crashes == []


async def _probe(url: str, status: int) -> dict[str, Any] | None:
    """The probe's JSON body (or {}) when it answers `status`, else None."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        if response.status != status:
            return None
        return await response.json() if response.content_type == "application/json" else {}
