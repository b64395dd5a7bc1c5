"""Every event of 100 payments delivered 10 times, all shuffled together: no payment ever moves backwards, each
milestone goes out under one ce_id, and the ledger says which event moved each payment."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from kubepay_sandbox.stack import Sandbox
from tests.conftest import Running
from tests.faults.harness import (
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

PAYMENTS = 100
COPIES = 10
DECLINE = {"code": "card_declined", "decline_code": "insufficient_funds",
           "message": "Your card has insufficient funds."}
UNHANDLED = {"payment_intent.created", "charge.succeeded"}


def _story(intent: dict[str, Any], t0: int) -> list[dict[str, Any]]:
    """What Stripe sends for a customer whose first card is declined and whose second needs 3-D Secure."""
    charge = {"id": "ch_" + intent["id"][3:], "object": "charge", "payment_intent": intent["id"], "amount": 1999}
    return [
        stripe_event("payment_intent.created", {**intent, "status": "requires_payment_method"}, created=t0),
        stripe_event("payment_intent.payment_failed", {**intent, "status": "requires_payment_method",
                                                       "last_payment_error": DECLINE}, created=t0 + 1),
        stripe_event("payment_intent.requires_action", {**intent, "status": "requires_action"}, created=t0 + 2),
        stripe_event("payment_intent.succeeded", intent, created=t0 + 3),
        stripe_event("charge.succeeded", charge, created=t0 + 3),
    ]


@pytest.mark.timeout(240)
async def test_duplicated_shuffled_deliveries_never_move_a_payment_backwards(
        sandbox: Sandbox, faults: Faults, running: Running, kube: Kube) -> None:
    ns, tenant = running.namespace, running.tenant
    history = PhaseHistory(kube, ns)
    await history.start()
    with Figure("webhook-storm") as fig:
        names = await create_payments(kube, ns, PAYMENTS, "storm")
        ready = await wait_all(kube, ns, names, lambda o: bool((o.get("status") or {}).get("published")), 90,
                               "the payments to be initiated")
        intents = await pay(sandbox.stripe_client(), [str(intent_id(o)) for o in ready.values()])
        t0 = int(time.time())
        events = [event for intent in intents.values() for event in _story(intent, t0)]
        deliveries = [event_body(event) for event in events for _ in range(COPIES)]
        random.shuffle(deliveries)
        sender = Sender(tenant.webhook_url, tenant.webhook_secret, concurrency=16)
        began = time.monotonic()
        answers = await sender.deliver_all(deliveries)
        took = time.monotonic() - began
        fig.add(f"{len(deliveries)} deliveries ({COPIES} of each of {len(events)} events of {PAYMENTS} payments, "
                f"shuffled) in {took:.1f} s, answers {dict(sorted(sender.answers.items()))}")

        done = await wait_all(kube, ns, names, lambda o: phase(o) == "Succeeded", 60, "every payment to succeed")
        kafka = KafkaLog(faults.broker, tenant.topics.all())
        await kafka.start()
        try:
            await kafka.wait_complete(dict.fromkeys(names, SUCCEEDED), timeout=60)
        finally:
            await kafka.stop()
        await history.stop()
        by_intent = {intent_id(obj): name for name, obj in done.items()}
        ledger = await fetch(tenant.database_url, "SELECT stripe_event_id, processed, outcome FROM payment_events")
        outcomes = {row["stripe_event_id"]: row["outcome"] for row in ledger}
        wrong = []
        for event in events:
            name = by_intent[event["data"]["object"].get("payment_intent") or event["data"]["object"]["id"]]
            if event["type"] in UNHANDLED:
                right = "unhandled"
            else:
                right = "applied" if event["id"] in history.event_ids(name) else "stale"
            if outcomes.get(event["id"]) != right:
                wrong.append(f"{name} {event['type']}: {outcomes.get(event['id'])}, should be {right}")
        backwards = history.backwards()
        failed_first = sum(1 for name in names if "Failed" in {p for p, _, _ in history.seen[name]})
        per_answer = {outcome: sum(1 for a in answers if a.get("outcome") == outcome)
                      for outcome in sorted({str(a.get("outcome")) for a in answers})}
        fig.add(f"{len(backwards)} backwards, {len(kafka.ce_id_conflicts())} milestones with more than one ce_id "
                f"({len(kafka.messages)} messages, {kafka.duplicates()} duplicates; {failed_first} payments went "
                f"through Failed), {len(wrong)} wrong ledger outcomes of {len(ledger)} rows, answers' outcomes "
                f"{per_answer}")
        assert backwards == []
        assert kafka.ce_id_conflicts() == []
        assert len(ledger) == len(events) and all(row["processed"] for row in ledger)
        assert wrong == []
        crashes = handler_crashes(running.operator)
        fig.add(f"{len(crashes)} controller handler crashes")
        assert crashes == []
