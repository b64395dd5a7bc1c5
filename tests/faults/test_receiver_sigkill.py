"""The receiver SIGKILLed twice in the middle of a burst of deliveries: once Stripe has redelivered what got no
2xx, every event is in the ledger, applied once, and every payment has its state."""

from __future__ import annotations

import asyncio

import pytest

from kubepay_sandbox.stack import Sandbox
from tests.conftest import Running
from tests.faults.harness import (
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

PAYMENTS = 100
KILL_AT = (0.25, 0.6)  # fractions of the deliveries accepted when the receiver is killed


@pytest.mark.timeout(180)
async def test_receiver_killed_mid_burst_loses_nothing_after_redelivery(
        sandbox: Sandbox, faults: Faults, running: Running, kube: Kube) -> None:
    ns, tenant = running.namespace, running.tenant
    with Figure("receiver-sigkill") as fig:
        names = await create_payments(kube, ns, PAYMENTS, "burst")
        ready = await wait_all(kube, ns, names, lambda o: bool((o.get("status") or {}).get("published")), 90,
                               "the payments to be initiated")
        intents = await pay(sandbox.stripe_client(), [str(intent_id(o)) for o in ready.values()])
        events = [stripe_event(kind, intent) for intent in intents.values()
                  for kind in ("payment_intent.succeeded", "charge.succeeded")]
        sender = Sender(tenant.webhook_url, tenant.webhook_secret, concurrency=16)
        delivering = asyncio.create_task(sender.deliver_all(event_body(event) for event in events))
        for fraction in KILL_AT:
            async def reached(share: float = fraction) -> bool:
                return sender.accepted >= share * len(events)

            await wait_for(reached, 60, f"{fraction:.0%} of the deliveries accepted")
            await running.webhook.kill()
            await running.webhook.start()
        await delivering
        fig.add(f"{len(events)} events of {PAYMENTS} payments, receiver SIGKILLed {len(KILL_AT)} times mid-burst, "
                f"answers {dict(sorted(sender.answers.items()))}")
        assert sender.answers["no answer"] > 0, "no delivery met a dead receiver"

        await wait_all(kube, ns, names, lambda o: phase(o) == "Succeeded", 60, "every payment to succeed")
        ledger = {r["stripe_event_id"]: (r["processed"], r["outcome"])
                  for r in await fetch(tenant.database_url, "SELECT stripe_event_id, processed, outcome "
                                                            "FROM payment_events")}
        wrong = [e["id"] for e in events if ledger.get(e["id"]) != (
            True, "applied" if e["type"] == "payment_intent.succeeded" else "unhandled")]
        kafka = KafkaLog(faults.broker, tenant.topics.all())
        await kafka.start()
        try:
            await kafka.wait_complete(dict.fromkeys(names, SUCCEEDED), timeout=60)
        finally:
            await kafka.stop()
        fig.add(f"0 lost after redelivery: {len(ledger)} ledger rows, {len(wrong)} not processed as they should, "
                f"{len(kafka.ce_id_conflicts())} ce_id conflicts")
        assert len(ledger) == len(events)
        assert wrong == [], {event_id: ledger.get(event_id) for event_id in wrong}
        assert kafka.ce_id_conflicts() == []
        crashes = handler_crashes(running.operator)
        fig.add(f"{len(crashes)} controller handler crashes")
        assert crashes == []
