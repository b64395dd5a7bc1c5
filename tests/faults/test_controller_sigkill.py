"""The controller SIGKILLed again and again while 200 PaymentIntents are created: every resource ends up with
exactly one Stripe intent, named in its status, and its payments row and initiated message."""

from __future__ import annotations

import asyncio
import collections
import random
import time
from typing import Any

import pytest

from kubepay_sandbox.processes import KubepayProcess
from kubepay_sandbox.stack import Sandbox
from tests.conftest import Running
from tests.faults.harness import (
    INITIATED,
    Faults,
    Figure,
    KafkaLog,
    create_payments,
    handler_crashes,
    intent_id,
    wait_all,
)
from tests.helpers import Kube, fetch, wait_for

pytestmark = [pytest.mark.needs_emulator, pytest.mark.needs_fake_stripe]

RESOURCES = 200
KILLS = 7
PACE = 10  # resources created per second


async def _stripe_intents(stripe_client: Any, namespace: str) -> dict[str, list[str]]:
    """Intent ids in Stripe by the resource uid in their metadata, for one namespace."""
    found: dict[str, list[str]] = collections.defaultdict(list)
    params: dict[str, Any] = {"limit": 100}
    while True:
        page = await stripe_client.v1.payment_intents.list_async(params)
        for intent in page.data:
            metadata = intent.to_dict().get("metadata") or {}
            if metadata.get("kubepay_namespace") == namespace:
                found[metadata["kubepay_uid"]].append(intent.id)
        if not page.has_more:
            return found
        params = {"limit": 100, "starting_after": page.data[-1].id}


async def _kill_between_create_and_status_write(sandbox: Sandbox, operator: KubepayProcess) -> int:
    """Hold the answer to the next intent create, kill the controller while Stripe has the intent and status
    does not, then let the answer go (to nobody). 1 if that happened, 0 if no create came within 15 s."""
    await sandbox.stripe.hold("POST", "/v1/payment_intents")
    try:
        async def triggered() -> bool:
            return any(f["kind"] == "hold" and f["triggered"] for f in await sandbox.stripe.faults())

        try:
            await wait_for(triggered, 15, "a Stripe intent create")
        except AssertionError:
            await operator.kill()
            return 0
        await operator.kill()
        return 1
    finally:
        await sandbox.stripe.release()


@pytest.mark.timeout(360)
async def test_controller_killed_repeatedly_during_creation_makes_one_intent_each(
        sandbox: Sandbox, faults: Faults, running: Running, kube: Kube) -> None:
    ns, tenant, operator = running.namespace, running.tenant, running.operator
    with Figure("controller-sigkill") as fig:
        await sandbox.stripe.clear_requests_log()
        began = time.monotonic()

        async def create_paced() -> list[str]:
            names: list[str] = []
            for batch in range(RESOURCES // PACE):
                names += await create_payments(kube, ns, PACE, f"kill{batch}")
                await asyncio.sleep(max(0.0, began + batch + 1 - time.monotonic()))
            return names

        creating = asyncio.create_task(create_paced())
        mid_create = 0
        for kill in range(KILLS):
            if kill % 2 == 0:  # right after Stripe made an intent, before its id reached status
                mid_create += await _kill_between_create_and_status_write(sandbox, operator)
            else:  # wherever it happens to be
                await asyncio.sleep(random.uniform(1.0, 3.0))
                await operator.kill()
            await operator.start(ready_timeout=60)
        names = await creating
        done = await wait_all(kube, ns, names, lambda o: bool(intent_id(o)), 240, "every resource's Stripe intent")
        took = time.monotonic() - began

        in_stripe = await _stripe_intents(sandbox.stripe_client(), ns)
        uids = {name: obj["metadata"]["uid"] for name, obj in done.items()}
        duplicates = sum(len(ids) - 1 for ids in in_stripe.values() if len(ids) > 1)
        without = [name for name in names if not in_stripe.get(uids[name])]
        mismatched = [name for name in names if [intent_id(done[name])] != in_stripe.get(uids[name])]
        replays = sum(1 for r in await sandbox.stripe.requests_log()
                      if r["method"] == "POST" and r["path"] == "/v1/payment_intents" and r["replayed"])
        fig.add(f"{RESOURCES} resources, {KILLS} kills ({mid_create} between a Stripe create and its status write), "
                f"{duplicates} duplicate intents, {len(without)} without intent, {took:.1f} s ({replays} keyed creates "
                f"repeated after a kill and answered with the same intent)")
        assert duplicates == 0, {uid: ids for uid, ids in in_stripe.items() if len(ids) > 1}
        assert without == []
        assert mismatched == []
        assert mid_create >= KILLS // 2 and replays >= mid_create

        kafka = KafkaLog(faults.broker, tenant.topics.all())
        await kafka.start()
        try:
            await kafka.wait_complete(dict.fromkeys(names, INITIATED), timeout=120)
        finally:
            await kafka.stop()
        rows = await fetch(tenant.database_url,
                           "SELECT count(*) AS n FROM payments WHERE provider_payment_id IS NOT NULL")
        fig.add(f"{rows[0]['n']} rows, {len(kafka.messages)} initiated messages "
                f"({kafka.duplicates()} duplicates, {len(kafka.ce_id_conflicts())} with another ce_id)")
        assert rows[0]["n"] == RESOURCES
        assert kafka.ce_id_conflicts() == []
        crashes = handler_crashes(running.operator)
        fig.add(f"{len(crashes)} controller handler crashes")
        assert crashes == []
