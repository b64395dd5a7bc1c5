"""`make bench`: kubepay's speed figures on the local sandbox (everything on 127.0.0.1, bounded).

1. Controller throughput against the client-side Stripe rate limit: N PaymentIntents created at once,
   time until all have a Stripe id, the Stripe request rate the fake saw (median over 1-s windows,
   most in any sliding 1-s window) and create-to-Pending latency per resource.
2. Webhook receiver throughput: rounds of signed payment_intent.succeeded deliveries (first
   deliveries, then Stripe-style redeliveries of the same events) with bounded concurrency. The first
   deliveries take turns with as many to the receiver's floor (bench/floor.py: signature, one ledger
   INSERT, one status PATCH, on the same pools); the ratio of their times is the receiver's overhead.
3. Mirror latency: webhook accepted -> payments.succeeded readable on Kafka.
4. Peak RSS (VmHWM) of the operator and webhook processes.

Prints a short report and writes it as JSON to .cache/bench/latest.json. Figures are medians and
ratios from this one run; they are for comparing runs on the same machine, not absolute targets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer
from kubernetes_asyncio import watch as k8s_watch
from tests.helpers import GROUP, PLURAL, VERSION, Kube, sign, stripe_event

from bench import scale
from bench.cpu import CpuMeter
from bench.stats import fixed_windows, max_sliding_window, median, percentile
from kubepay_sandbox.processes import KubepayProcess
from kubepay_sandbox.stack import REPO, Sandbox, Targets, Tenant, free_port
from kubepay_sandbox.stripe_fake import TEST_CARDS

OUTPUT = REPO / ".cache" / "bench" / "latest.json"
STRIPE_CONCURRENCY = 8  # confirming intents in the fake (setup, not measured)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def spec(order_id: str) -> dict[str, Any]:
    return {"orderId": order_id, "userId": "bench-user", "amount": 1200, "currency": "usd"}


class PendingWatch:
    """Watches the namespace's PaymentIntents; notes when each first shows a Stripe id (phase Pending)."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self._kube, self._namespace = kube, namespace
        self.seen: dict[str, float] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        listing = await self._kube.custom.list_namespaced_custom_object(GROUP, VERSION, self._namespace, PLURAL)
        self._task = asyncio.create_task(self._run(listing["metadata"]["resourceVersion"]))

    async def _run(self, resource_version: str) -> None:
        while True:
            watcher = k8s_watch.Watch()
            try:
                async for event in watcher.stream(
                    self._kube.custom.list_namespaced_custom_object, GROUP, VERSION, self._namespace, PLURAL,
                    resource_version=resource_version, timeout_seconds=300,
                ):
                    obj = event["object"]
                    resource_version = obj["metadata"]["resourceVersion"]
                    status = obj.get("status") or {}
                    name = obj["metadata"]["name"]
                    if name not in self.seen and (status.get("stripe") or {}).get("paymentIntentId"):
                        self.seen[name] = time.monotonic()
                        self._changed.set()
            finally:
                await watcher.close()

    async def wait_all(self, names: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all(name in self.seen for name in names):
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = [name for name in names if name not in self.seen]
                raise TimeoutError(f"{len(missing)} PaymentIntent(s) without a Stripe id after {timeout}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class KafkaArrivals:
    """Reads a topic from the start and notes when each key is first readable."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=20, metadata_max_age_ms=500,
        )
        self.first: dict[str, float] = {}
        self.count = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=100)
            now = time.monotonic()
            for records in batches.values():
                for record in records:
                    self.count += 1
                    key = record.key.decode() if record.key is not None else ""
                    self.first.setdefault(key, now)
            if batches:
                self._changed.set()

    async def wait_keys(self, keys: list[str], timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while not all(key in self.first for key in keys) and (remaining := deadline - time.monotonic()) > 0:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))
        return sum(key in self.first for key in keys)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()


async def bounded(concurrency: int, jobs: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    semaphore = asyncio.Semaphore(concurrency)

    async def run(job: Callable[[], Awaitable[Any]]) -> Any:
        async with semaphore:
            return await job()

    return await asyncio.gather(*(run(job) for job in jobs))


# -- 1. controller throughput against the rate limit -----------------------------------------------------


async def create_batch(kube: Kube, namespace: str, names: list[str]) -> dict[str, float]:
    """Create all at once; returns when each create was answered (the resource exists from then on)."""
    created: dict[str, float] = {}

    async def create(name: str) -> None:
        await kube.create_pi(namespace, name, spec(name.removeprefix("pi-")))
        created[name] = time.monotonic()

    await asyncio.gather(*(create(name) for name in names))
    return created


async def controller_throughput(sandbox: Sandbox, kube: Kube, namespace: str, watch: PendingWatch,
                                names: list[str], rate: float, operator: KubepayProcess) -> dict[str, Any]:
    await sandbox.stripe.clear_requests_log()
    assert operator.pid is not None
    cpu = CpuMeter(operator.pid)
    cpu.start()
    started, started_wall = time.monotonic(), time.time()
    created = await create_batch(kube, namespace, names)
    all_created = time.monotonic() - started
    await watch.wait_all(names, timeout=60 + 3 * len(names) / rate)
    elapsed = max(watch.seen[name] for name in names) - started
    controller_ms = 1000 * cpu.process_s() / len(names)
    requests = await sandbox.stripe.requests_log()
    creates = [r for r in requests if r["method"] == "POST" and r["path"] == "/v1/payment_intents"]
    times = [float(r["time"]) for r in requests]
    windows = fixed_windows(times)
    busy = max(times) - min(times) if times else 0.0
    latencies = [watch.seen[name] - created[name] for name in names]
    achieved = median(windows) if windows else len(times) / busy if busy else 0.0
    return {
        "resources": len(names),
        "rate_limit_per_s": rate,
        "create_calls_s": round(all_created, 3),
        "all_stripe_ids_s": round(elapsed, 3),
        "resources_per_s": round(len(names) / elapsed, 2),
        "stripe_requests": len(requests),
        "stripe_create_requests": len(creates),
        "stripe_replayed": sum(1 for r in requests if r.get("replayed")),
        "stripe_429": sum(1 for r in requests if r.get("status") == 429),
        "stripe_busy_s": round(busy, 3),
        "first_stripe_request_after_s": round(min(times) - started_wall, 3) if times else None,
        "stripe_windows_1s": windows,
        "stripe_rate_median_1s": achieved,
        "stripe_rate_mean_busy": round((len(times) - 1) / busy, 2) if busy else None,
        "achieved_over_limit": round(achieved / rate, 3),
        "stripe_max_sliding_1s": max_sliding_window(times),
        "stripe_max_sliding_1s_after_first_s": max_sliding_window([t for t in times if t >= min(times) + 1.0])
        if times else 0,
        # CPU until every resource is Pending (its mirror step may still run): the controller's own ceiling,
        # were a core its alone, and how busy the machine was (everything of the sandbox shares it).
        "controller_cpu_ms_per_resource": round(controller_ms, 2),
        "controller_ceiling_per_s": round(1000 / controller_ms, 1),
        "machine_busy_share": round(cpu.machine_busy_share(), 3),
        "create_to_pending_ms": {"median": ms(median(latencies)), "p95": ms(percentile(latencies, 95)),
                                 "max": ms(max(latencies))},
    }


async def controller_ceiling(sandbox: Sandbox, creates: int) -> dict[str, Any]:
    """The same figure with the Stripe limit out of the way (1,000/s): the controller's own ceiling."""
    tenant = await sandbox.tenant("ceiling")
    operator = tenant.process("operator", KUBEPAY_STRIPE_RATE_LIMIT="1000")
    await operator.start()
    kube = await Kube.connect(tenant.env["KUBECONFIG"])
    watch = PendingWatch(kube, tenant.namespace)
    try:
        await watch.start()
        return await controller_throughput(sandbox, kube, tenant.namespace, watch,
                                           [f"pi-{i:05d}" for i in range(creates)], 1000.0, operator)
    finally:
        await watch.stop()
        await kube.close()
        await tenant.stop_processes()


# -- 2./3. webhook receiver throughput and mirror latency ------------------------------------------------


async def succeeded_intents(sandbox: Sandbox, kube: Kube, namespace: str, names: list[str]) -> dict[str, Any]:
    """Pay each resource's intent in the fake (as the customer would); returns name -> Stripe's intent."""
    stripe_client = sandbox.stripe.client()

    async def pay(name: str) -> tuple[str, dict[str, Any]]:
        pi = await kube.get_pi(namespace, name)
        assert pi is not None
        intent_id = pi["status"]["stripe"]["paymentIntentId"]
        intent = await stripe_client.v1.payment_intents.confirm_async(
            intent_id, {"payment_method": TEST_CARDS["success"], "return_url": "https://shop.example/return"})
        return name, intent.to_dict()

    paid = await bounded(STRIPE_CONCURRENCY, [lambda n=n: pay(n) for n in names])
    return dict(paid)


async def deliver_all(session: aiohttp.ClientSession, url: str, secret: str, bodies: list[bytes],
                      concurrency: int) -> tuple[float, list[tuple[float, float, str]]]:
    """POST every body (signed at send time); returns the wall time and (latency, accepted_at, outcome)."""

    async def post(body: bytes) -> tuple[float, float, str]:
        headers = {"Content-Type": "application/json", "Stripe-Signature": sign(body, secret)}
        began = time.monotonic()
        async with session.post(url, data=body, headers=headers) as response:
            payload = await response.json(content_type=None)
            done = time.monotonic()
            outcome = payload.get("outcome", f"http {response.status}") if response.status == 200 \
                else f"http {response.status}"
        return done - began, done, outcome

    started = time.monotonic()
    results = await bounded(concurrency, [lambda b=b: post(b) for b in bodies])
    return time.monotonic() - started, results


async def deliver_in_turns(session: aiohttp.ClientSession, secret: str, sides: list[tuple[str, list[bytes]]],
                           concurrency: int) -> list[tuple[float, list[tuple[float, float, str]]]]:
    """Each side's bodies to its URL, the sides taking turns of two waves (2 x concurrency) each, so all see
    the same machine while other work on it comes and goes; per side the summed wall time and the results."""
    turn = 2 * concurrency
    done: list[tuple[float, list[tuple[float, float, str]]]] = [(0.0, []) for _ in sides]
    for start in range(0, max(len(bodies) for _, bodies in sides), turn):
        for side, (url, bodies) in enumerate(sides):
            if chunk := bodies[start:start + turn]:
                elapsed, results = await deliver_all(session, url, secret, chunk, concurrency)
                done[side] = (done[side][0] + elapsed, done[side][1] + results)
    return done


async def webhook_rounds(sandbox: Sandbox, tenant: Tenant, kube: Kube, arrivals: KafkaArrivals, floor_url: str,
                         rounds: list[tuple[list[str], list[str]]], deliveries: int,
                         concurrency: int) -> dict[str, Any]:
    """Each round: first deliveries to the receiver and as many of other events of the same kind to the floor,
    in turns (which side starts alternates), with the controller reacting to both; then redeliveries."""
    per_round: list[dict[str, Any]] = []
    first_latency: list[float] = []
    duplicate_latency: list[float] = []
    floor_latency: list[float] = []
    mirror: list[float] = []
    outcomes: dict[str, int] = {}
    load_at_start = round(os.getloadavg()[0], 2)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        for index, (names, floor_names) in enumerate(rounds):
            intents = await succeeded_intents(sandbox, kube, tenant.namespace, names + floor_names)
            events = {name: json.dumps(stripe_event("payment_intent.succeeded", intents[name])).encode()
                      for name in names + floor_names}
            firsts = [events[name] for name in names]
            # Redeliveries of the same events (same ids), as Stripe retries them, spread over the round.
            duplicates = [firsts[i % len(firsts)] for i in range(deliveries - len(firsts))]
            random.Random(index).shuffle(duplicates)
            orders = [name.removeprefix("pi-") for name in names]
            floor_orders = [name.removeprefix("pi-") for name in floor_names]

            sides = [(tenant.webhook_url, firsts), (floor_url, [events[name] for name in floor_names])]
            turns = await deliver_in_turns(session, tenant.webhook_secret, sides[::-1] if index % 2 else sides,
                                           concurrency)
            (first_time, first_results), (floor_time, floor_results) = turns[::-1] if index % 2 else turns
            arrived = await arrivals.wait_keys(orders + floor_orders, timeout=60)
            accepted = {order: result[1] for order, result in zip(orders, first_results, strict=True)}
            mirror += [arrivals.first[order] - accepted[order] for order in orders if order in arrivals.first]
            duplicate_time, duplicate_results = await deliver_all(
                session, tenant.webhook_url, tenant.webhook_secret, duplicates, concurrency)

            for _, _, outcome in first_results + duplicate_results:
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
            first_latency += [r[0] for r in first_results]
            duplicate_latency += [r[0] for r in duplicate_results]
            floor_latency += [r[0] for r in floor_results]
            total = len(firsts) + len(duplicates)
            per_round.append({
                "deliveries": total,
                "first": len(firsts),
                "duplicates": len(duplicates),
                "requests_per_s": round(total / (first_time + duplicate_time), 1),
                "first_per_s": round(len(firsts) / first_time, 1),
                "duplicates_per_s": round(len(duplicates) / duplicate_time, 1),
                "floor_first": len(floor_names),
                "floor_first_per_s": round(len(floor_names) / floor_time, 1),
                "floor_outcomes": sorted({r[2] for r in floor_results}),
                "mirrored": arrived,  # of the receiver's and the floor's first deliveries
            })
            log(f"webhook round {index + 1}: {per_round[-1]}")
    all_latency = first_latency + duplicate_latency
    ratios = [round(r["floor_first_per_s"] / r["first_per_s"], 3) for r in per_round]
    return {
        "concurrency": concurrency,
        "loadavg_1m": [load_at_start, round(os.getloadavg()[0], 2)],
        "rounds": per_round,
        "requests_per_s_median": median([r["requests_per_s"] for r in per_round]),
        "first_per_s_median": median([r["first_per_s"] for r in per_round]),
        "duplicates_per_s_median": median([r["duplicates_per_s"] for r in per_round]),
        "latency_ms": {"p50": ms(median(all_latency)), "p95": ms(percentile(all_latency, 95))},
        "first_latency_ms": {"p50": ms(median(first_latency)), "p95": ms(percentile(first_latency, 95))},
        "duplicate_latency_ms": {"p50": ms(median(duplicate_latency)), "p95": ms(percentile(duplicate_latency, 95))},
        "duplicate_over_first_p50": round(median(duplicate_latency) / median(first_latency), 3),
        "outcomes": outcomes,
        "floor": {
            "first_per_s_median": median([r["floor_first_per_s"] for r in per_round]),
            "first_latency_ms": {"p50": ms(median(floor_latency)), "p95": ms(percentile(floor_latency, 95))},
            # the receiver's time per first delivery over the floor's: the median of the rounds' ratios
            "receiver_over_floor": median(ratios),
            "receiver_over_floor_per_round": ratios,
        },
        "mirror": {
            "samples": len(mirror),
            "expected": sum(len(names) for names, _ in rounds),
            "accepted_to_kafka_ms": {"median": ms(median(mirror)), "p95": ms(percentile(mirror, 95)),
                                     "min": ms(min(mirror)) if mirror else None,
                                     "max": ms(max(mirror)) if mirror else None},
        },
    }


async def mirror_unloaded(sandbox: Sandbox, tenant: Tenant, kube: Kube, arrivals: KafkaArrivals,
                          names: list[str]) -> dict[str, Any]:
    """One delivery at a time, each waiting for its Kafka message: the pipeline's latency without queueing."""
    intents = await succeeded_intents(sandbox, kube, tenant.namespace, names)
    webhook, mirror = [], []
    async with aiohttp.ClientSession() as session:
        for name in names:
            body = json.dumps(stripe_event("payment_intent.succeeded", intents[name])).encode()
            _, [(latency, accepted, _)] = await deliver_all(session, tenant.webhook_url, tenant.webhook_secret,
                                                            [body], 1)
            order = name.removeprefix("pi-")
            if await arrivals.wait_keys([order], timeout=30):
                mirror.append(arrivals.first[order] - accepted)
            webhook.append(latency)
    return {"deliveries": len(names), "webhook_ms_median": ms(median(webhook)),
            "accepted_to_kafka_ms": {"median": ms(median(mirror)), "p95": ms(percentile(mirror, 95))}}


def floor_process(tenant: Tenant) -> tuple[KubepayProcess, str]:
    """The receiver's floor (bench/floor.py) as a process of its own, with the receiver's settings; its URL."""
    port = str(free_port())
    process = KubepayProcess("floor", {**tenant.env, "PAYMENT_HTTP_PORT": port}, f"http://127.0.0.1:{port}/healthz",
                             tenant.workdir / "floor.log", module="bench.floor")
    tenant.processes.append(process)
    return process, f"http://127.0.0.1:{port}/payments/webhook"


# -- 4. memory -----------------------------------------------------------------------------------------


def peak_rss_mib(process: KubepayProcess) -> float | None:
    if process.pid is None:
        return None
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


# -- driver --------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True)
    return {
        "cpus": os.cpu_count(),
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "commit": commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else ""),
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    began = time.monotonic()
    settings = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    report: dict[str, Any] = {"machine": machine(), "settings": settings}
    rounds_needed = 2 * args.rounds * args.first + args.unloaded  # each round: the receiver's, the floor's
    async with Sandbox(Targets()) as sandbox:  # the emulator and the fake, never KUBEPAY_E2E_*: load stays local
        tenant = await sandbox.tenant("bench")
        operator = tenant.process("operator", KUBEPAY_STRIPE_RATE_LIMIT=str(args.rate))
        webhook = tenant.process("webhook")
        floor, floor_url = floor_process(tenant)
        await asyncio.gather(operator.start(), webhook.start(), floor.start())
        log(f"sandbox and processes up in {time.monotonic() - began:.1f}s")
        kube = await Kube.connect(tenant.env["KUBECONFIG"])
        watch = PendingWatch(kube, tenant.namespace)
        arrivals = KafkaArrivals(sandbox.kafka.bootstrap_servers, tenant.topics.succeeded)
        try:
            await watch.start()
            await arrivals.start()
            names = [f"pi-{i:05d}" for i in range(args.creates)]
            report["controller"] = await controller_throughput(sandbox, kube, tenant.namespace, watch, names,
                                                               args.rate, operator)
            log(f"controller: {json.dumps(report['controller'])}")

            # More Pending resources for the webhook rounds (setup, not measured).
            extra = [f"pi-{i:05d}" for i in range(args.creates, max(args.creates, rounds_needed))]
            if extra:
                await create_batch(kube, tenant.namespace, extra)
                await watch.wait_all(extra, timeout=60 + 3 * len(extra) / args.rate)
            pool = names + extra
            batches = [pool[i * args.first:(i + 1) * args.first] for i in range(2 * args.rounds)]
            rounds = list(zip(batches[0::2], batches[1::2], strict=True))
            unloaded = pool[2 * args.rounds * args.first:rounds_needed]
            report["mirror_unloaded"] = await mirror_unloaded(sandbox, tenant, kube, arrivals, unloaded)
            log(f"mirror unloaded: {report['mirror_unloaded']}")
            log(f"webhook rounds: {args.rounds} x {args.deliveries} deliveries "
                f"({args.first} first, in turns with {args.first} to the floor; the rest redeliveries), "
                f"concurrency {args.concurrency}")
            report["webhook"] = await webhook_rounds(sandbox, tenant, kube, arrivals, floor_url, rounds,
                                                     args.deliveries, args.concurrency)
            report["peak_rss_mib"] = {"operator": peak_rss_mib(operator), "webhook": peak_rss_mib(webhook)}
        finally:
            await watch.stop()
            await arrivals.stop()
            await kube.close()
            await tenant.stop_processes()
        if args.scale:
            report["controller_at_1000"] = await controller_ceiling(sandbox, args.creates)
            log(f"controller at limit 1000: {json.dumps(report['controller_at_1000'])}")
            report["scale"] = await scale.scale(sandbox, args.scale)
    report["goals"] = goals(report)
    report["total_s"] = round(time.monotonic() - began, 1)
    report["machine"]["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    return report


def goal(name: str, value: float | None, unit: str, bound: str, target: float, note: str = "") -> dict[str, Any]:
    """One goal: `bound` is ">=" or "<="; `ratio` is the value over the target (None where not measured)."""
    met = None if value is None else value >= target if bound == ">=" else value <= target
    entry = {"name": name, "value": value, "unit": unit, "goal": f"{bound} {target:g}",
             "ratio": None if value is None else round(value / target, 3), "met": met}
    return {**entry, "note": note} if note else entry


def goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The figures the scale issue sets goals for, each with its goal; None where this run did not measure it."""
    controller, found = report["controller"], report.get("scale", {})
    at_100 = controller["stripe_rate_median_1s"] if controller["rate_limit_per_s"] == 100 else None
    memory, restart = found.get("memory", {}), found.get("restart", {})
    floor = report["webhook"]["floor"]
    return [
        goal("creates_per_s_at_limit_100", at_100, "Stripe requests/s", ">=", 95),
        goal("controller_rss_mib_10k", memory.get("rss_mib_10k_estimate"), "MiB", "<=", 150,
             "from the RSS per 1,000 at SCALE, 90% finished"),
        goal("new_intent_after_restart_s_5k", restart.get("new_intent_after_s"), "s", "<=", 2,
             f"with {restart.get('unfinished')} unfinished payments due for a read"),
        goal("receiver_vs_floor_ratio", floor["receiver_over_floor"], "ratio", "<=", 1.5,
             f"time per first delivery at concurrency {report['webhook']['concurrency']}, receiver / floor "
             "(signature, one ledger INSERT, one status PATCH), median of the rounds"),
    ]


def render(report: dict[str, Any]) -> str:
    c, w = report["controller"], report["webhook"]
    m, u, rss = w["mirror"], report["mirror_unloaded"], report["peak_rss_mib"]
    hw = report["machine"]
    return "\n".join([
        f"kubepay bench ({hw['usable_cpus']} CPUs, load {hw['loadavg_1m_at_start']} -> {hw['loadavg_1m_at_end']}, "
        f"Python {hw['python']}, {hw['commit']}; one run, medians, {report['total_s']} s)",
        f"1. controller: {c['resources']} PaymentIntents at once, KUBEPAY_STRIPE_RATE_LIMIT={c['rate_limit_per_s']:g}",
        f"   all Stripe ids after {c['all_stripe_ids_s']} s ({c['resources_per_s']} resources/s; first Stripe "
        f"request after {c['first_stripe_request_after_s']} s); "
        f"{c['stripe_requests']} Stripe requests ({c['stripe_create_requests']} creates, "
        f"{c['stripe_replayed']} replayed, {c['stripe_429']} x 429)",
        f"   Stripe rate: median {c['stripe_rate_median_1s']:g}/s over 1-s windows {c['stripe_windows_1s']} -> "
        f"achieved/limit {c['achieved_over_limit']}; mean over the busy {c['stripe_busy_s']} s "
        f"{c['stripe_rate_mean_busy']}/s",
        f"   max in any sliding 1 s: {c['stripe_max_sliding_1s']} (limit {c['rate_limit_per_s']:g}; arrival jitter "
        f"at the fake may add 1); after the first second: "
        f"{c['stripe_max_sliding_1s_after_first_s']}",
        f"   create -> Pending: median {c['create_to_pending_ms']['median']} ms, "
        f"p95 {c['create_to_pending_ms']['p95']} ms",
        f"   controller CPU {c['controller_cpu_ms_per_resource']} ms per resource (ceiling with a core of its own "
        f"{c['controller_ceiling_per_s']}/s); machine busy {c['machine_busy_share']:.0%}",
        f"2. webhook: {len(w['rounds'])} rounds x {w['rounds'][0]['deliveries']} signed deliveries, "
        f"concurrency {w['concurrency']}: {w['requests_per_s_median']} req/s "
        f"(first deliveries {w['first_per_s_median']}/s, redeliveries {w['duplicates_per_s_median']}/s)",
        f"   floor (signature + ledger INSERT + status PATCH): first deliveries {w['floor']['first_per_s_median']}/s, "
        f"p50 {w['floor']['first_latency_ms']['p50']} ms -> receiver/floor {w['floor']['receiver_over_floor']} "
        f"(per round {w['floor']['receiver_over_floor_per_round']}; 1-min load {w['loadavg_1m'][0]} -> "
        f"{w['loadavg_1m'][1]})",
        f"   latency p50 {w['latency_ms']['p50']} ms, p95 {w['latency_ms']['p95']} ms; first p50 "
        f"{w['first_latency_ms']['p50']} ms, duplicate p50 {w['duplicate_latency_ms']['p50']} ms -> "
        f"duplicate/first {w['duplicate_over_first_p50']}; outcomes {w['outcomes']}",
        f"3. mirror (webhook accepted -> payments.succeeded readable): median {m['accepted_to_kafka_ms']['median']} ms,"
        f" p95 {m['accepted_to_kafka_ms']['p95']} ms ({m['samples']}/{m['expected']} messages, during the rounds);"
        f" one at a time: median {u['accepted_to_kafka_ms']['median']} ms ({u['deliveries']} deliveries,"
        f" webhook {u['webhook_ms_median']} ms)",
        f"4. peak RSS (VmHWM): operator {rss['operator']} MiB, webhook {rss['webhook']} MiB",
        *([f"5. controller at limit 1000: {(k := report['controller_at_1000'])['resources_per_s']} resources/s, "
           f"CPU {k['controller_cpu_ms_per_resource']} ms per resource (ceiling {k['controller_ceiling_per_s']}/s), "
           f"machine busy {k['machine_busy_share']:.0%}", f"6. scale: {json.dumps(report['scale'])}"]
          if "scale" in report else []),
        "goals: " + "; ".join(f"{g['name']} {g['value']} {g['unit']} (goal {g['goal']}, ratio {g['ratio']})"
                              for g in report["goals"]),
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=25.0, help="KUBEPAY_STRIPE_RATE_LIMIT (Stripe test mode: 25)")
    parser.add_argument("--creates", type=int, default=150, help="PaymentIntents created at once")
    parser.add_argument("--deliveries", type=int, default=500, help="webhook deliveries per round")
    parser.add_argument("--first", type=int, default=96,
                        help="first deliveries per round (rest: redeliveries), and as many to the floor")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--unloaded", type=int, default=10, help="single deliveries for the unloaded mirror latency")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--scale", type=int, default=0,
                        help="also the scale scenarios with this many PaymentIntents (make bench SCALE=10000); "
                             "the controller figure then runs at the live rate limit, 100/s, with 1,000 at once")
    args = parser.parse_args(argv)
    if args.scale:
        args.rate, args.creates = 100.0, max(args.creates, 1000)
    if not 0 < args.first <= args.deliveries or min(args.creates, args.rounds, args.concurrency, args.unloaded) < 1:
        parser.error("need 0 < --first <= --deliveries and positive counts")
    report = asyncio.run(bench(args))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(render(report))
    print(f"(JSON: {args.output})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
