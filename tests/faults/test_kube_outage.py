"""The Kubernetes API gone for the controller and the receiver (connections reset, new ones refused) while
customers pay and events arrive out of order: once it is back, nothing is lost and no payment went backwards."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from kubepay_sandbox.stack import Sandbox
from tests.conftest import Running
from tests.faults.harness import (
    INITIATED,
    SUCCEEDED,
    Faults,
    Figure,
    KafkaLog,
    PhaseHistory,
    Sender,
    create_payments,
    event_body,
    handler_crashes,
    intent_id,
    pay,
    phase,
    wait_all,
)
from tests.helpers import Kube, fetch, stripe_event

pytestmark = [pytest.mark.needs_emulator, pytest.mark.needs_fake_stripe]

DOWN = 15.0


@pytest.mark.timeout(180)
async def test_kubernetes_api_outage_loses_nothing_and_nothing_goes_backwards(
        sandbox: Sandbox, faults: Faults, running: Running, kube: Kube) -> None:
    ns, tenant = running.namespace, running.tenant
    history = PhaseHistory(kube, ns)  # the test's own view of the API server, which stays up
    await history.start()
    with Figure("kubernetes-api-stopped") as fig:
        paid = await create_payments(kube, ns, 30, "k8s")
        ready = await wait_all(kube, ns, paid, lambda o: bool((o.get("status") or {}).get("published")), 60,
                               "the payments to be initiated")
        await faults.kube.refuse()
        faults.kube.reset()
        stopped = time.monotonic()
        late = await create_payments(kube, ns, 10, "late")  # the controller cannot see these yet
        intents = await pay(sandbox.stripe_client(), [str(intent_id(ready[name])) for name in paid])
        now = int(time.time())
        events = [stripe_event("payment_intent.processing", {**intent, "status": "processing"}, created=now - 5)
                  for intent in intents.values()]
        events += [stripe_event("payment_intent.succeeded", intent, created=now) for intent in intents.values()]
        random.shuffle(events)
        sender = Sender(tenant.webhook_url, tenant.webhook_secret)
        delivering = asyncio.create_task(sender.deliver_all(event_body(event) for event in events))
        await asyncio.sleep(max(0.0, stopped + DOWN - time.monotonic()))
        await faults.kube.pass_through()
        back = time.monotonic()
        fig.add(f"API server gone for {back - stopped:.1f} s while {len(paid)} payments succeeded "
                f"({len(events)} events, shuffled) and {len(late)} were created")

        await delivering
        await wait_all(kube, ns, paid, lambda o: phase(o) == "Succeeded", 60, "every paid payment to succeed")
        await wait_all(kube, ns, late, lambda o: bool(intent_id(o)), 60, "the late payments to get a Stripe intent")
        kafka = KafkaLog(faults.broker, tenant.topics.all())
        await kafka.start()
        try:
            expected = {**dict.fromkeys(paid, SUCCEEDED), **dict.fromkeys(late, INITIATED)}
            await kafka.wait_complete(expected, timeout=60)
            converged = time.monotonic() - back
        finally:
            await kafka.stop()
        await history.stop()
        rows = {r["order_id"]: r["status"]
                for r in await fetch(tenant.database_url, "SELECT order_id, status FROM payments")}
        lost = [name for name in paid if rows.get(name) != "succeeded"] + \
            [name for name in late if rows.get(name) != "pending"]
        backwards = history.backwards()
        fig.add(f"answers {dict(sorted(sender.answers.items()))}, all converged {converged:.1f} s after its return, "
                f"{len(lost)} lost, {len(backwards)} backwards, {len(kafka.ce_id_conflicts())} ce_id conflicts")
        assert lost == [], rows
        assert backwards == []
        assert kafka.ce_id_conflicts() == []
        assert set(sender.answers) <= {"200", "503"}, sender.answers
        crashes = handler_crashes(running.operator)
        fig.add(f"{len(crashes)} controller handler crashes")
        assert crashes == []
