"""PostgreSQL shut down in the middle of webhook deliveries: the receiver answers only 503 (Stripe retries),
never a 500, and after redelivery nothing is lost."""

from __future__ import annotations

import asyncio
import time

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

PAYMENTS = 40
DOWN = 5.0


@pytest.mark.timeout(180)
async def test_postgres_stopped_during_deliveries_means_503s_and_nothing_lost(
        sandbox: Sandbox, faults: Faults, running: Running, kube: Kube) -> None:
    """The sandbox's own PostgreSQL shuts down (fast shutdown: sessions terminated, then connections refused),
    so the receiver meets the errors of a real shutdown, not just a closed port. It is this test worker's
    server: no other test runs here meanwhile."""
    ns, tenant = running.namespace, running.tenant
    with Figure("postgres-stopped-during-webhooks") as fig:
        names = await create_payments(kube, ns, PAYMENTS, "pg")
        ready = await wait_all(kube, ns, names, lambda o: bool((o.get("status") or {}).get("published")), 60,
                               "the payments to be initiated")
        intents = await pay(sandbox.stripe_client(), [str(intent_id(o)) for o in ready.values()])
        events = [stripe_event(kind, intent) for intent in intents.values()
                  for kind in ("payment_intent.succeeded", "charge.succeeded")]
        sender = Sender(tenant.webhook_url, tenant.webhook_secret, concurrency=4)
        delivering = asyncio.create_task(sender.deliver_all(event_body(event) for event in events))
        async def a_quarter_accepted() -> bool:
            return sender.accepted >= len(events) // 4

        await wait_for(a_quarter_accepted, 30, "a quarter of the deliveries")
        await sandbox.postgres.stop()
        stopped = time.monotonic()
        try:
            await asyncio.sleep(DOWN)
        finally:
            await sandbox.postgres.start()
        fig.add(f"{len(events)} events of {PAYMENTS} payments delivered; PostgreSQL stopped after "
                f"{len(events) // 4} for {time.monotonic() - stopped:.1f} s")
        await delivering
        fig.add(f"answers {dict(sorted(sender.answers.items()))}")
        assert set(sender.answers) <= {"200", "503"}, sender.answers
        assert sender.answers["503"] > 0, "the outage did not meet any delivery"

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
        rows = await fetch(tenant.database_url, "SELECT count(*) AS n FROM payments WHERE status = 'succeeded'")
        fig.add(f"0 lost after redelivery ({len(wrong)} ledger rows wrong, {rows[0]['n']}/{PAYMENTS} rows "
                f"succeeded, {len(kafka.ce_id_conflicts())} ce_id conflicts)")
        assert wrong == [], {event_id: ledger.get(event_id) for event_id in wrong}
        assert rows[0]["n"] == PAYMENTS
        assert kafka.ce_id_conflicts() == []
        crashes = handler_crashes(running.operator)
        fig.add(f"{len(crashes)} controller handler crashes")
        assert crashes == []
