"""After a restart, a new payment goes before the catch-up reads of the unfinished ones, which still all happen."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.conftest import Running
from tests.helpers import GROUP, PLURAL, VERSION, Kube, stripe_id, wait_for

UNFINISHED = 30
LONG_AGO = "2026-01-01T00:00:00Z"  # no webhook for ages: each one is due for a catch-up read


def _synced_since(item: dict[str, Any], since: str) -> bool:
    return bool(((item.get("status") or {}).get("stripe") or {}).get("lastSyncedAt", "") >= since)


async def _caught_up(kube: Kube, ns: str, names: set[str], since: str) -> int:
    listing = await kube.custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
    return sum(1 for item in listing["items"] if item["metadata"]["name"] in names and _synced_since(item, since))


async def test_a_new_payment_is_not_queued_behind_the_catch_up_after_a_restart(
        running: Running, kube: Kube) -> None:
    ns, tenant = running.namespace, running.tenant
    names = {f"old-{i:02d}" for i in range(UNFINISHED)}
    await asyncio.gather(*(kube.create_pi(ns, name, {"orderId": name, "amount": 1200, "currency": "usd"})
                           for name in names))
    for name in names:
        await stripe_id(kube, ns, name)
    await running.operator.stop()
    await asyncio.gather(*(kube.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, ns, PLURAL, name, {"status": {"stripe": {"lastSyncedAt": LONG_AGO}}},
        _content_type="application/merge-patch+json") for name in names))

    # 10 requests/s, half for catching up: the 30 reads take about 6 s; the new payment may use the whole rate.
    restarted = tenant.process("operator", KUBEPAY_STRIPE_RATE_LIMIT="10", KUBEPAY_STRIPE_BACKGROUND_SHARE="0.5")
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    await restarted.start()
    await kube.create_pi(ns, "new", {"orderId": "new", "amount": 1500, "currency": "usd"})
    await stripe_id(kube, ns, "new")
    read_before_new = await _caught_up(kube, ns, names, since)
    assert read_before_new < UNFINISHED, "the new payment waited for the whole catch-up"

    async def all_read() -> bool:
        return await _caught_up(kube, ns, names, since) == UNFINISHED
    await wait_for(all_read, timeout=60, what="the catch-up reads of every unfinished payment")
