"""A controller restarted while Kafka or PostgreSQL is down (a pod rescheduled during a blip) waits for it, says
so once per try, and is healthy within 10 s of its return, with nothing missing."""

from __future__ import annotations

import asyncio
import time

import pytest

from kubepay_sandbox.stack import Sandbox
from kubepay_sandbox.tcp_proxy import TcpProxy
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
from tests.helpers import Kube, fetch, stays, stripe_event

pytestmark = [pytest.mark.needs_emulator, pytest.mark.needs_fake_stripe]

OUTAGE = 8.0  # seconds the restarted controller starts into: its first start-up attempt surely fails
HEALTHY_WITHIN = 10.0


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("dependency", "named"), [("kafka", "Kafka"), ("postgres", "PostgreSQL")])
async def test_controller_restarted_during_an_outage_recovers_by_itself(
        dependency: str, named: str, sandbox: Sandbox, faults: Faults, running: Running, kube: Kube) -> None:
    ns, tenant, operator = running.namespace, running.tenant, running.operator
    proxy: TcpProxy = getattr(faults, dependency)
    with Figure(f"controller-restart-during-{dependency}-outage") as fig:
        before = await create_payments(kube, ns, 5, "before")
        created = await wait_all(kube, ns, before, lambda o: bool((o.get("status") or {}).get("published")), 60,
                                 "the first payments to be initiated")
        intents = await pay(sandbox.stripe_client(), [str(intent_id(o)) for o in created.values()])

        await proxy.refuse()
        proxy.reset()
        stopping = time.monotonic()
        exit_code = await operator.stop()  # SIGTERM, as for a pod deleted during the outage
        fig.add(f"stopped in {time.monotonic() - stopping:.1f} s (exit code {exit_code})")
        log_offset = len(operator.logs())
        await operator.launch()
        during = await create_payments(kube, ns, 5, "during")
        fig.add(f"{len(before)} payments paid and {len(during)} created while {named} is down")
        sender = Sender(tenant.webhook_url, tenant.webhook_secret)
        delivering = asyncio.create_task(sender.deliver_all(
            event_body(stripe_event("payment_intent.succeeded", intent)) for intent in intents.values()))

        async def unhealthy() -> bool:
            return not await operator.healthy()

        await stays(unhealthy, OUTAGE, f"the controller reporting unhealthy while {named} is down")
        waiting = [line for line in operator.logs()[log_offset:].splitlines()
                   if f"waiting for {named} at {proxy.address}" in line]
        fig.add(f"unhealthy for the {OUTAGE:.0f} s it was down ({len(waiting)} 'waiting for {named}' lines)")
        assert len(waiting) >= 2, operator.logs()[log_offset:][-3000:]

        await proxy.pass_through()
        back = time.monotonic()
        await operator.wait_ready(HEALTHY_WITHIN)
        fig.add(f"healthy {time.monotonic() - back:.1f} s after its return")
        await delivering

        await wait_all(kube, ns, before, lambda o: phase(o) == "Succeeded", 30, "the paid payments to succeed")
        pending = await wait_all(kube, ns, during, lambda o: bool(intent_id(o)), 60,
                                 "the payments created during the outage to get a Stripe intent")
        assert {phase(o) for o in pending.values()} == {"Pending"}
        kafka = KafkaLog(faults.broker, tenant.topics.all())
        await kafka.start()
        try:
            expected = {**{name: SUCCEEDED for name in before}, **{name: INITIATED for name in during}}
            await kafka.wait_complete(expected, timeout=60)
            complete_after = time.monotonic() - back
        finally:
            await kafka.stop()
        rows = {r["order_id"]: r["status"]
                for r in await fetch(tenant.database_url, "SELECT order_id, status FROM payments")}
        missing_rows = [name for name in before + during
                        if rows.get(name) != ("succeeded" if name in before else "pending")]
        fig.add(f"0 missing messages ({len(kafka.messages)}, all there {complete_after:.1f} s after its return), "
                f"{len(missing_rows)} missing rows, {len(kafka.ce_id_conflicts())} ce_id conflicts, "
                f"webhook answers {dict(sorted(sender.answers.items()))}")
        assert missing_rows == [], rows
        assert kafka.ce_id_conflicts() == []
        crashes = handler_crashes(running.operator)
        fig.add(f"{len(crashes)} controller handler crashes")
        assert crashes == []
