"""What the fault scenarios share: one tenant's dependencies behind fault proxies, Stripe-like redelivery,
a watch that notices a payment moving backwards, the tenant's Kafka messages, and the figure lines."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import yaml
from aiokafka import AIOKafkaConsumer
from kubernetes_asyncio import watch as k8s_watch

from kubepay.model.phases import Phase
from kubepay_sandbox.child import free_port
from kubepay_sandbox.kafka import ConsumedMessage, KafkaBroker
from kubepay_sandbox.processes import KubepayProcess
from kubepay_sandbox.stack import REPO, Sandbox, Tenant
from kubepay_sandbox.tcp_proxy import TcpProxy
from tests.helpers import GROUP, PLURAL, VERSION, Kube, sign, wait_for

FIGURES = REPO / ".cache" / "faults" / "figures.txt"
LOGS = REPO / ".cache" / "faults" / "logs"


class Figure:
    """One scenario's figure line, built up as the scenario measures; written when the block ends, failed or not,
    and printed at the end of the run (conftest.py)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.parts: list[str] = []

    def add(self, part: str) -> None:
        self.parts.append(part)

    def __enter__(self) -> Figure:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        line = f"FIGURE {self.name}: {', '.join(self.parts)}"
        if exc is not None:
            line += f" [FAILED: {' '.join(str(exc).split())[:300]}]"
        FIGURES.parent.mkdir(parents=True, exist_ok=True)
        with FIGURES.open("a") as out:  # one short append per line: safe from parallel workers
            out.write(line + "\n")
        print(line)


# -- the tenant's dependencies behind proxies ---------------------------------------------------------------


@dataclass
class Faults:
    """A tenant whose processes reach PostgreSQL, the Kubernetes API and Kafka only through fault proxies.

    PostgreSQL and the API server are the sandbox's shared ones (the test itself reaches them directly, so it
    can watch and read during an outage); Kafka is a broker of the tenant's own that advertises its proxy,
    since Kafka clients connect where the broker's metadata points, not where they bootstrapped.
    """

    tenant: Tenant
    postgres: TcpProxy
    kube: TcpProxy
    kafka: TcpProxy
    broker: KafkaBroker
    kubeconfig: str  # straight to the API server, for the test itself

    @classmethod
    @contextlib.asynccontextmanager
    async def around(cls, sandbox: Sandbox, tenant: Tenant) -> AsyncIterator[Faults]:
        broker_port = free_port()
        async with contextlib.AsyncExitStack() as stack:
            postgres = await stack.enter_async_context(TcpProxy(sandbox.postgres.port))
            kube = await stack.enter_async_context(TcpProxy(urlsplit(sandbox.kube.url).port or 80))
            kafka = await stack.enter_async_context(TcpProxy(broker_port))
            broker = await stack.enter_async_context(KafkaBroker(port=broker_port, advertised_port=kafka.port))
            topics = tenant.topics
            await broker.create_topics([*topics.all(), topics.orders_created, topics.orders_dlq])
            direct = tenant.env["KUBECONFIG"]
            tenant.env.update(
                DATABASE_URL=_with_port(tenant.database_url, postgres.port),
                KAFKA_BROKER_URL=kafka.address,
                KUBECONFIG=str(_proxied_kubeconfig(Path(direct), kube.port)),
            )
            yield cls(tenant, postgres, kube, kafka, broker, direct)


def _with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.netloc.rsplit(':', 1)[0]}:{port}"))


def _proxied_kubeconfig(path: Path, port: int) -> Path:
    config = yaml.safe_load(path.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = _with_port(cluster["cluster"]["server"], port)
    proxied = path.with_name("kubeconfig-proxied")
    proxied.write_text(yaml.safe_dump(config, sort_keys=False))
    return proxied


# -- Stripe's side ------------------------------------------------------------------------------------------


class Sender:
    """Delivers signed events as Stripe does: each one again until it gets a 2xx (here after at most 1 s,
    not Stripe's hours), signed afresh each time. `answers` counts every attempt's status ("no answer" when
    the connection failed)."""

    def __init__(self, url: str, secret: str, concurrency: int = 8, give_up_after: float = 120.0) -> None:
        self.url, self.secret = url, secret
        self.concurrency, self.give_up_after = concurrency, give_up_after
        self.answers: collections.Counter[str] = collections.Counter()
        self.accepted = 0  # deliveries answered with a 2xx so far

    async def deliver_all(self, bodies: Iterable[bytes]) -> list[dict[str, Any]]:
        """Every body until accepted; the accepted answers, in order."""
        semaphore = asyncio.Semaphore(self.concurrency)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

            async def one(body: bytes) -> dict[str, Any]:
                async with semaphore:
                    return await self._deliver(session, body)

            return await asyncio.gather(*(one(body) for body in bodies))

    async def _deliver(self, session: aiohttp.ClientSession, body: bytes) -> dict[str, Any]:
        deadline = time.monotonic() + self.give_up_after
        delay = 0.1
        while True:
            headers = {"Content-Type": "application/json", "Stripe-Signature": sign(body, self.secret)}
            try:
                async with session.post(self.url, data=body, headers=headers) as response:
                    self.answers[str(response.status)] += 1
                    if 200 <= response.status < 300:
                        self.accepted += 1
                        answer: dict[str, Any] = await response.json(content_type=None)
                        return answer
            except (aiohttp.ClientError, TimeoutError):
                self.answers["no answer"] += 1
            assert time.monotonic() < deadline, f"an event was not accepted within {self.give_up_after}s"
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)


CRASH_MARKS = ("failed unexpectedly", "the controller stopped", "failed with an exception")  # workers', kopf's


def handler_crashes(operator: KubepayProcess) -> list[str]:
    """Controller log lines of work that died of an unexpected exception (a worker retries it only after 30 s,
    kopf's start-up handlers after 60 s): every outage must surface as an error kubepay expects and retries."""
    return [line[:500] for line in operator.logs().splitlines() if any(m in line for m in CRASH_MARKS)]


def event_body(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


async def create_payments(kube: Kube, namespace: str, count: int, prefix: str = "pay",
                          amount: int = 1999) -> list[str]:
    """`count` PaymentIntent resources named `<prefix>-<n>` for orders `<prefix>-<n>`; returns the names."""
    names = [f"{prefix}-{n}" for n in range(count)]
    for batch in range(0, count, 20):
        await asyncio.gather(*(kube.create_pi(namespace, name, {"orderId": name, "amount": amount, "currency": "usd"})
                               for name in names[batch:batch + 20]))
    return names


async def payment_intents(kube: Kube, namespace: str) -> dict[str, dict[str, Any]]:
    listing = await kube.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    return {item["metadata"]["name"]: item for item in listing["items"]}


async def wait_all(kube: Kube, namespace: str, names: Iterable[str], check: Callable[[dict[str, Any]], bool],
                   timeout: float, what: str) -> dict[str, dict[str, Any]]:
    """Every named resource once `check` holds for all of them."""
    wanted = set(names)

    async def probe() -> dict[str, dict[str, Any]] | None:
        found = {name: obj for name, obj in (await payment_intents(kube, namespace)).items() if name in wanted}
        return found if len(found) == len(wanted) and all(check(obj) for obj in found.values()) else None

    async def describe() -> str:
        found = await payment_intents(kube, namespace)
        return str(sum(1 for name in wanted if name in found and check(found[name])))

    try:
        return await wait_for(probe, timeout, what)
    except AssertionError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}: {await describe()} of "
                             f"{len(wanted)} there") from None


def intent_id(obj: dict[str, Any]) -> str | None:
    return ((obj.get("status") or {}).get("stripe") or {}).get("paymentIntentId")


def phase(obj: dict[str, Any]) -> str | None:
    return (obj.get("status") or {}).get("phase")


async def pay(stripe_client: Any, intent_ids: Iterable[str], concurrency: int = 8,
              payment_method: str = "pm_card_visa") -> dict[str, dict[str, Any]]:
    """The customers pay in Stripe (the fake); the intents as Stripe answered, by id."""
    semaphore = asyncio.Semaphore(concurrency)

    async def confirm(intent: str) -> dict[str, Any]:
        async with semaphore:
            answer = await stripe_client.v1.payment_intents.confirm_async(
                intent, {"payment_method": payment_method, "return_url": "https://shop.example/return"})
            result: dict[str, Any] = answer.to_dict()
            return result

    intents = await asyncio.gather(*(confirm(i) for i in intent_ids))
    return {intent["id"]: intent for intent in intents}


# -- the resources' history ---------------------------------------------------------------------------------


@dataclass
class PhaseHistory:
    """Every version of the namespace's PaymentIntents as a watch saw them: (phase, lastEventCreated, lastEventId)."""

    kube: Kube
    namespace: str
    seen: dict[str, list[tuple[str, int, str | None]]] = field(default_factory=lambda: collections.defaultdict(list))
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        listing = await self.kube.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)
        for item in listing["items"]:
            self._note(item)
        self._task = asyncio.create_task(self._run(listing["metadata"]["resourceVersion"]))

    async def _run(self, resource_version: str) -> None:
        while True:
            watcher = k8s_watch.Watch()
            try:
                async for event in watcher.stream(
                        self.kube.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL,
                        resource_version=resource_version, timeout_seconds=300):
                    resource_version = event["object"]["metadata"]["resourceVersion"]
                    self._note(event["object"])
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.1)  # watch again from the last version seen: nothing is missed
            finally:
                await watcher.close()

    def _note(self, obj: dict[str, Any]) -> None:
        status = obj.get("status") or {}
        if not status.get("phase"):
            return
        stripe_block = status.get("stripe") or {}
        entry = (status["phase"], int(stripe_block.get("lastEventCreated") or 0), stripe_block.get("lastEventId"))
        history = self.seen[obj["metadata"]["name"]]
        if not history or history[-1] != entry:
            history.append(entry)

    def backwards(self) -> list[str]:
        """Every step that moved a payment back: an older Stripe state, or out of a final phase but by a refund."""
        found = []
        for name, history in self.seen.items():
            for (old, old_created, _), (new, new_created, _) in itertools.pairwise(history):
                left_final = Phase(old).final and Phase(new).rank <= Phase(old).rank and new != old
                older = (new_created, Phase(new).rank) < (old_created, Phase(old).rank)
                if left_final or older:
                    found.append(f"{name}: {old}@{old_created} -> {new}@{new_created}")
        return found

    def event_ids(self, name: str) -> set[str]:
        """The Stripe events whose state the resource's status ever held."""
        return {event_id for _, _, event_id in self.seen.get(name, []) if event_id}

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# -- Kafka --------------------------------------------------------------------------------------------------


class KafkaLog:
    """Every message on the tenant's payment topics, read from the start by one consumer without a group."""

    def __init__(self, broker: KafkaBroker, topics: list[str]) -> None:
        self._consumer = AIOKafkaConsumer(*topics, bootstrap_servers=broker.bootstrap_servers, group_id=None,
                                          enable_auto_commit=False, auto_offset_reset="earliest",
                                          fetch_max_wait_ms=100, metadata_max_age_ms=1000)
        self.messages: list[ConsumedMessage] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            for records in (await self._consumer.getmany(timeout_ms=200)).values():
                self.messages.extend(ConsumedMessage.of(record) for record in records)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    def missing(self, expected: dict[str, Expected]) -> list[str]:
        """`expected` maps order id -> (ce_type, status) pairs; each one without a message yet."""
        have = {(m.key, m.headers.get("ce_type"), m.value.get("status")) for m in self.messages}
        return [f"{order}:{ce_type}:{status}" for order, wanted in expected.items()
                for ce_type, status in sorted(wanted) if (order, ce_type, status) not in have]

    async def wait_complete(self, expected: dict[str, Expected], timeout: float) -> float:
        """Seconds until every expected message arrived; fails naming what is still missing."""
        started = time.monotonic()
        while missing := self.missing(expected):
            assert time.monotonic() - started < timeout, \
                f"{len(missing)} message(s) still missing after {timeout}s: {missing[:10]}"
            await asyncio.sleep(0.1)
        return time.monotonic() - started

    def _milestones(self) -> dict[tuple[str, str | None, str | None, Any], set[str | None]]:
        """The ce_ids seen for each message a payment's milestone implies (topic, order, type, status)."""
        ids: dict[tuple[str, str | None, str | None, Any], set[str | None]] = collections.defaultdict(set)
        for m in self.messages:
            ids[(m.topic, m.key, m.headers.get("ce_type"), m.value.get("status"))].add(m.headers.get("ce_id"))
        return ids

    def ce_id_conflicts(self) -> list[str]:
        """Repeats of one milestone's message that carry another ce_id: a duplicate a consumer cannot spot."""
        return [f"{topic} {key} {status}: {sorted(map(str, found))}"
                for (topic, key, _, status), found in self._milestones().items() if len(found) > 1]

    def duplicates(self) -> int:
        return len(self.messages) - len(self._milestones())


Expected = frozenset[tuple[str, str]]  # (ce_type, status) of the messages a payment must have
INITIATED: Expected = frozenset({("io.kubepay.payment.initiated", "initiated")})
SUCCEEDED: Expected = INITIATED | {("io.kubepay.payment.succeeded", "succeeded"),
                                   ("io.kubepay.order.status_updated", "COMPLETED")}
