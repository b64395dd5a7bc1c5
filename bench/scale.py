"""`make bench SCALE=N`: how kubepay holds up with many payments (issue figures for one controller).

1. Restart priority: N/2 unfinished PaymentIntents handled by a controller, which then stops; when it
   starts again every one of them is due for a catch-up read of Stripe (their last sync is old), and a new
   PaymentIntent is created 2 s after start: time until it has its Stripe intent, and until the catch-up
   reads are done, at KUBEPAY_STRIPE_RATE_LIMIT=100.
2. Memory: N PaymentIntents, 90% of them finished and mirrored, listed by a starting controller: its
   settled RSS (VmRSS once it stops moving), and the RSS of the same controller with none.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from tests.helpers import GROUP, PLURAL, VERSION, Kube

from kubepay.mirror import downstream
from kubepay.model.resources import PaymentIntent
from kubepay_sandbox.processes import KubepayProcess
from kubepay_sandbox.stack import Sandbox, Tenant

MERGE = "application/merge-patch+json"
LONG_AGO = "2026-01-01T00:00:00Z"
WRITERS = 32  # concurrent API writes while setting up (not measured)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


async def _each(names: list[str], job: Any) -> None:
    semaphore = asyncio.Semaphore(WRITERS)

    async def one(name: str) -> None:
        async with semaphore:
            await job(name)

    await asyncio.gather(*(one(name) for name in names))


async def _patch_status(kube: Kube, namespace: str, name: str, status: dict[str, Any]) -> None:
    await kube.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name,
                                                            {"status": status}, _content_type=MERGE)


async def _with_stripe_id(kube: Kube, namespace: str, names: list[str], timeout: float) -> None:
    deadline, missing = time.monotonic() + timeout, set(names)
    while missing:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(missing)} PaymentIntent(s) without a Stripe id after {timeout:g} s")
        # A few are read one by one: listing thousands takes long enough to add to the time measured.
        items = ([await kube.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
                  for name in missing] if len(missing) <= 10 else
                 (await kube.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL))["items"])
        missing -= {item["metadata"]["name"] for item in items
                    if ((item.get("status") or {}).get("stripe") or {}).get("paymentIntentId")}
        await asyncio.sleep(0.5 if missing and len(missing) > 10 else 0.05)


def _rss_mib(process: KubepayProcess) -> float:
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def _settled_rss(process: KubepayProcess, quiet_s: float = 20.0, timeout: float = 600.0) -> float:
    """VmRSS once it has moved less than 1 MiB for `quiet_s` seconds."""
    deadline = time.monotonic() + timeout
    last, since = _rss_mib(process), time.monotonic()
    while time.monotonic() - since < quiet_s:
        if time.monotonic() > deadline:
            raise TimeoutError("the controller's RSS never settled")
        await asyncio.sleep(2)
        now = _rss_mib(process)
        if abs(now - last) >= 1.0:
            last, since = now, time.monotonic()
    return round(last, 1)


async def restart_priority(sandbox: Sandbox, tenant: Tenant, kube: Kube, unfinished: int) -> dict[str, Any]:
    names = [f"rs-{i:05d}" for i in range(unfinished)]
    setup = tenant.process("operator", KUBEPAY_STRIPE_RATE_LIMIT="1000")
    await setup.start()
    await _each(names, lambda name: kube.create_pi(tenant.namespace, name,
                                                   {"orderId": name, "amount": 1200, "currency": "usd"}))
    await _with_stripe_id(kube, tenant.namespace, names, timeout=60 + unfinished / 20)
    await tenant.stop_processes()
    await _each(names, lambda name: _patch_status(kube, tenant.namespace, name,
                                                  {"stripe": {"lastSyncedAt": LONG_AGO}}))
    await sandbox.stripe.clear_requests_log()
    operator = tenant.process("operator", KUBEPAY_STRIPE_RATE_LIMIT="100")
    started = time.monotonic()
    await operator.start()
    await asyncio.sleep(2)
    created = time.monotonic()
    await kube.create_pi(tenant.namespace, "new-after-restart", {"orderId": "new", "amount": 1200, "currency": "usd"})
    await _with_stripe_id(kube, tenant.namespace, ["new-after-restart"], timeout=600)
    new_intent_s = time.monotonic() - created
    while len([r for r in await sandbox.stripe.requests_log() if r["method"] == "GET"]) < unfinished:
        if time.monotonic() - started > 60 + unfinished / 10:
            raise TimeoutError("the catch-up reads did not finish")
        await asyncio.sleep(1)
    caught_up_s = time.monotonic() - started
    reads = [float(r["time"]) for r in await sandbox.stripe.requests_log() if r["method"] == "GET"]
    await tenant.stop_processes()
    return {"unfinished": unfinished, "rate_limit_per_s": 100, "new_intent_after_s": round(new_intent_s, 2),
            "catch_up_s": round(caught_up_s, 1),
            "catch_up_reads_per_s": round(len(reads) / (max(reads) - min(reads)), 1) if len(reads) > 1 else None}


async def _listed_rss(tenant: Tenant, kube: Kube, prefix: str, total: int, finished: int) -> float:
    """The settled RSS of a controller that starts with `total` PaymentIntents, the first `finished` of them
    finished and mirrored (as the controller leaves them), the rest Pending and recently synced."""
    names = [f"{prefix}-{i:05d}" for i in range(total)]

    async def make(name: str) -> None:
        done = int(name.rpartition("-")[2]) < finished
        await kube.create_pi(tenant.namespace, name, {"orderId": name, "amount": 1200, "currency": "usd"})
        await _patch_status(kube, tenant.namespace, name, {
            "phase": "Succeeded" if done else "Pending", "paymentId": "-", "amountRefunded": 0,
            "amountReceived": 1200 if done else 0, "published": ["initiated", "succeeded"] if done else ["initiated"],
            "stripe": {"paymentIntentId": f"pi_{name}", "status": "succeeded" if done else "requires_payment_method",
                       "lastEventCreated": 1, "lastSyncedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}})
        if done:  # mirrored before: the row's digest is in status, as the controller leaves it
            mirrored = downstream.digest(PaymentIntent.parse(await kube.get_pi(tenant.namespace, name) or {}))
            await _patch_status(kube, tenant.namespace, name, {"mirrored": mirrored})

    await _each(names, make)
    operator = tenant.process("operator", KUBEPAY_RESYNC_SECONDS="3600")
    await operator.start(ready_timeout=120)
    rss = await _settled_rss(operator)
    await tenant.stop_processes()
    return rss


async def finished_memory(sandbox: Sandbox, tenant: Tenant, kube: Kube, total: int) -> dict[str, Any]:
    """RSS per 1,000 of each: finished payments and unfinished ones (a tenth as many, in a namespace of their
    own), against an empty controller."""
    empty = tenant.process("operator")
    await empty.start()
    baseline = await _settled_rss(empty, quiet_s=6)
    await tenant.stop_processes()
    finished, unfinished = total * 9 // 10, total // 10
    rss = await _listed_rss(tenant, kube, "mem", total, finished)
    alone = await sandbox.tenant("memory-unfinished")
    alone_kube = await Kube.connect(alone.env["KUBECONFIG"])
    try:
        rss_unfinished = await _listed_rss(alone, alone_kube, "open", unfinished, 0)
    finally:
        await alone_kube.close()
        await alone.stop_processes()
    per_unfinished = (rss_unfinished - baseline) / unfinished * 1000
    per_finished = (rss - baseline - per_unfinished * (total - finished) / 1000) / finished * 1000
    per_1000 = (rss - baseline) / total * 1000
    return {"resources": total, "finished": finished, "rss_mib": rss, "rss_mib_none": baseline,
            "rss_mib_per_1000": round(per_1000, 1),
            "rss_mib_per_1000_finished": round(per_finished, 1),
            "rss_mib_per_1000_unfinished": round(per_unfinished, 1),
            "rss_mib_unfinished_only": rss_unfinished, "unfinished_only": unfinished,
            "rss_mib_10k_estimate": round(baseline + per_1000 * 10, 1)}


async def scale(sandbox: Sandbox, n: int) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for scenario in ("restart", "memory"):
        tenant = await sandbox.tenant(scenario)
        kube = await Kube.connect(tenant.env["KUBECONFIG"])
        try:
            if scenario == "restart":
                report["restart"] = await restart_priority(sandbox, tenant, kube, n // 2)
            else:
                report["memory"] = await finished_memory(sandbox, tenant, kube, n)
            log(f"{scenario}: {report[scenario]}")
        finally:
            await kube.close()
            await tenant.stop_processes()
    return report
