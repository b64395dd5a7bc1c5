"""Signed events of unexpected shapes, signature timestamps at both edges, and replaying the ledger."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import aiohttp

from kubepay_sandbox.stack import Sandbox
from tests.conftest import Running
from tests.helpers import Kube, deliver, fetch, stripe_event, wait_for

SPEC = {"amount": 1999, "currency": "usd"}


async def _intent(sandbox: Sandbox, kube: Kube, ns: str, name: str, order_id: str) -> dict[str, Any]:
    await kube.create_pi(ns, name, {**SPEC, "orderId": order_id})
    pi = await kube.wait_pi(ns, name, lambda o: bool(o.get("status", {}).get("published")), what="initiated")
    intent_id = pi["status"]["stripe"]["paymentIntentId"]
    return (await sandbox.stripe_client().v1.payment_intents.retrieve_async(intent_id)).to_dict()


def _deeply_nested(event_id: str, depth: int) -> bytes:
    nested = "[" * depth + "]" * depth
    return (f'{{"id": "{event_id}", "object": "event", "type": "payment_intent.succeeded", "created": 1, '
            f'"data": {{"object": {{"id": "pi_1", "status": "succeeded", "metadata": {{}}, "x": {nested}}}}}}}'
            ).encode()


async def test_signed_events_kubepay_cannot_apply_are_ledgered_invalid_with_a_2xx(
        sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns, url, secret = running.namespace, running.tenant.webhook_url, running.tenant.webhook_secret
    intent = await _intent(sandbox, kube, ns, "hostile", "5001")
    good = {**intent, "status": "succeeded", "amount_received": 1999}
    cases: dict[str, dict[str, Any] | bytes] = {
        "empty object": stripe_event("payment_intent.succeeded", {}),
        "metadata a string": stripe_event("payment_intent.succeeded", {**good, "metadata": "ns=x"}),
        "amount_received a string": stripe_event("payment_intent.succeeded", {**good, "amount_received": "1999"}),
        "created a string": {**stripe_event("payment_intent.succeeded", good), "created": "1733000000"},
        "created beyond int64": {**stripe_event("payment_intent.succeeded", good), "created": 2**63},
        "NUL in metadata": stripe_event("payment_intent.succeeded",
                                        {**good, "metadata": {**good["metadata"], "note": "a\x00b"}}),
        "nested 100 deep": _deeply_nested("evt_nested_100_" + ns.replace("-", "_"), 100),
        "nested 100000 deep": _deeply_nested("evt_nested_100000_" + ns.replace("-", "_"), 100_000),
        "refund amount a float": stripe_event("refund.updated", {"id": "re_1", "amount": 1.5, "metadata": {}}),
    }
    for what, event in cases.items():
        status, body = await deliver(url, event, secret)
        assert (status, body.get("outcome")) == (200, "invalid"), (what, status, body)
        again = await deliver(url, event, secret)
        assert again[0] == 200, (what, again)
    ledger = await fetch(running.tenant.database_url,
                         "SELECT outcome, error, processed FROM payment_events ORDER BY id")
    assert len(ledger) == len(cases)
    assert all(row["outcome"] == "invalid" and row["error"] and row["processed"] for row in ledger), ledger
    pi = await kube.get_pi(ns, "hostile")
    assert pi is not None and pi["status"]["phase"] == "Pending"
    base = url.rsplit("/payments", 1)[0]
    async with aiohttp.ClientSession() as session, session.get(running.webhook.metrics_url) as response:
        scrape = await response.text()
    assert 'kubepay_webhook_events_total{outcome="invalid",type="payment_intent.succeeded"}' in scrape
    async with aiohttp.ClientSession() as session, session.get(f"{base}/healthz") as response:
        assert response.status == 200  # the receiver stayed up


async def test_signature_timestamps_are_bounded_in_both_directions(running: Running) -> None:
    url, secret = running.tenant.webhook_url, running.tenant.webhook_secret
    unknown = stripe_event("customer.created", {"id": "cus_1", "object": "customer"})
    now = int(time.time())
    assert (await deliver(url, unknown, secret, timestamp=now - 290))[0] == 200
    assert (await deliver(url, unknown, secret, timestamp=now - 310))[0] == 400
    assert (await deliver(url, unknown, secret, timestamp=now + 20))[0] == 200
    status, body = await deliver(url, unknown, secret, timestamp=now + 3600)
    assert status == 400 and "future" in body["error"]


async def test_replay_applies_events_left_in_the_ledger(sandbox: Sandbox, running: Running, kube: Kube) -> None:
    """The receiver recorded an event, then died before applying it, and Stripe gave up retrying."""
    ns = running.namespace
    intent = await _intent(sandbox, kube, ns, "replayed", "5002")
    event = stripe_event("payment_intent.succeeded", {**intent, "status": "succeeded", "amount_received": 1999})
    await fetch(running.tenant.database_url,
                "INSERT INTO payment_events (stripe_event_id, type, provider_payment_id, stripe_created, livemode, "
                "payload) VALUES ($1, $2, $3, $4, false, $5::jsonb)",
                event["id"], event["type"], intent["id"], event["created"], json.dumps(event))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kubepay", "replay-events", env={**os.environ, **running.tenant.env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, output.decode()
    assert f"{event['id']}: applied" in output.decode()
    await kube.phase_is(ns, "replayed", "Succeeded")
    ledger = await fetch(running.tenant.database_url, "SELECT processed, outcome FROM payment_events "
                         "WHERE stripe_event_id = $1", event["id"])
    assert ledger == [{"processed": True, "outcome": "applied"}]

    async def nothing_left() -> bool:
        again = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kubepay", "replay-events", env={**os.environ, **running.tenant.env},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await again.communicate()
        return b"0 event(s) replayed" in out
    await wait_for(nothing_left, timeout=60, what="a second replay finding nothing")

