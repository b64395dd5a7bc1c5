"""A row PostgreSQL will never take does not hold back the payment's messages, nor other payments."""

from __future__ import annotations

from typing import Any

import aiohttp

from kubepay_sandbox.stack import Sandbox
from tests.conftest import Running
from tests.helpers import Kube, confirm_and_notify, fetch, messages, stripe_id, wait_for

SPEC = {"amount": 1200, "currency": "usd"}


async def test_a_refused_row_ends_in_synced_false_and_the_messages_still_go_out(
        sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns, topics = running.namespace, running.tenant.topics
    # The database refuses this one order's row for good (as a too-long value or a constraint would).
    await fetch(running.tenant.database_url,
                "ALTER TABLE payments ADD CONSTRAINT no_poison CHECK (order_id <> 'poison')")
    await kube.create_pi(ns, "poisoned", {**SPEC, "orderId": "poison"})
    await kube.create_pi(ns, "healthy", {**SPEC, "orderId": "fine"})

    def refused(o: dict[str, Any]) -> bool:
        return any(c["type"] == "Synced" and c["status"] == "False" and c["reason"] == "MirrorRefused"
                   for c in o.get("status", {}).get("conditions", []))
    pi = await kube.wait_pi(ns, "poisoned", refused, what="Synced=False MirrorRefused")
    [synced] = [c for c in pi["status"]["conditions"] if c["type"] == "Synced"]
    assert "no_poison" in synced["message"]
    await kube.wait_events(ns, "poisoned", {"MirrorRefused"}, type_="Warning")
    assert len(await messages(sandbox.kafka, topics.initiated, "poison", 1)) == 1

    async def healthy_row() -> list[dict[str, Any]] | None:
        return await fetch(running.tenant.database_url, "SELECT status FROM payments WHERE order_id = 'fine'")
    assert await wait_for(healthy_row, what="the other payment's row") == [{"status": "pending"}]

    # Paying the refused one still announces it: the row is what is missing, not the news.
    intent_id = await stripe_id(kube, ns, "poisoned")
    await confirm_and_notify(sandbox.stripe_client(), intent_id, "pm_card_visa", running.tenant.webhook_url,
                             running.tenant.webhook_secret)
    await kube.phase_is(ns, "poisoned", "Succeeded")
    assert len(await messages(sandbox.kafka, topics.succeeded, "poison", 1)) == 1
    assert await fetch(running.tenant.database_url, "SELECT 1 FROM payments WHERE order_id = 'poison'") == []

    async with aiohttp.ClientSession() as session, session.get(running.operator.metrics_url) as response:
        scrape = await response.text()
    assert 'kubepay_refused_writes_total{target="postgres"}' in scrape
