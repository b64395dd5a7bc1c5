"""`kubepay orders-consumer`: the tutorial service's intake.created events become PaymentIntent resources.

Each message is handled in order: parsed, turned into the order's resource (idempotently, so a
redelivery finds the resource made the first time), and only then is its offset committed. A message
that can never become a payment (not JSON, a bad total, another amount for a known order) goes to the
dead-letter topic with the reason in the `kubepay_error` header, its key, value and headers kept, and
the consumer goes on. Kubernetes being down stops the partition (retried with backoff), never skips it.

Run it as its own process, or inside the controller with `KUBEPAY_ORDERS_CONSUMER=true`
(`start_background` / `OrdersConsumer.stop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from kubernetes_asyncio.client.exceptions import ApiException

from kubepay import dependencies, http_server, logs, metrics, retry
from kubepay.config import ORDERS, Settings
from kubepay.kube.client import Conflict, Invalid, KubeClient, KubeUnavailable
from kubepay.mirror import publisher
from kubepay.orders import intake

log = logging.getLogger(__name__)

ERROR_HEADER = "kubepay_error"
SOURCE = "orders-consumer"


class PoisonMessage(Exception):
    """The message can never become a payment; the text is the reason put in the DLQ header."""


def parse_order(value: bytes | None) -> intake.Order:
    """An OrderCreatedEvent (order_id, user_id, total as a decimal string, currency, items) to an Order."""
    if value is None:
        raise PoisonMessage("empty message (no value)")
    try:
        event = intake.loads(value)
    except ValueError as exc:  # UnicodeDecodeError included
        raise PoisonMessage(f"value is not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise PoisonMessage("value is not a JSON object")
    problems: dict[str, str] = {}
    order_id = event.get("order_id")
    if isinstance(order_id, int) and not isinstance(order_id, bool):
        order_id = str(order_id)
    if not isinstance(order_id, str) or not order_id.strip() or len(order_id) > 255:
        problems["order_id"] = "must be a non-empty string of at most 255 characters"
    elif problem := intake.identifier_problem(order_id):
        problems["order_id"] = problem
    user_id = event.get("user_id")
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        user_id = str(user_id)
    if user_id is not None and (not isinstance(user_id, str) or len(user_id) > 255):
        problems["user_id"] = "must be a string of at most 255 characters"
    elif isinstance(user_id, str) and (problem := intake.identifier_problem(user_id)):
        problems["user_id"] = problem
    if event.get("items") is not None and not isinstance(event["items"], list):
        problems["items"] = "must be an array"
    currency: str | None = None
    amount: int | None = None
    try:
        currency = intake.parse_currency(event.get("currency"))
    except intake.OrderInvalid as exc:
        problems.update(exc.fields)
    if "total" not in event:
        problems["total"] = "is required"
    elif currency is not None:
        try:
            amount = intake.parse_amount(event["total"], currency, "total")
        except intake.OrderInvalid as exc:
            problems.update(exc.fields)
    if problems or amount is None or currency is None or not isinstance(order_id, str):
        raise PoisonMessage("invalid OrderCreatedEvent: " + "; ".join(f"{k}: {v}" for k, v in problems.items()))
    return intake.Order(order_id, amount, currency, user_id if isinstance(user_id, str) and user_id else None,
                        f"Order {order_id}")


class OrdersConsumer:
    def __init__(self, settings: Settings, kube: KubeClient) -> None:
        self._settings = settings
        self._kube = kube
        self._consumer = AIOKafkaConsumer(
            settings.topics.orders_created,
            bootstrap_servers=settings.kafka_brokers,
            group_id=settings.orders_group,
            client_id="kubepay-orders-consumer",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=settings.orders_session_timeout_ms,
            heartbeat_interval_ms=settings.orders_heartbeat_ms,
        )
        self._producer = publisher.producer(settings, "kubepay-orders-dlq")
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def healthy(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        await self._producer.start()
        try:
            await self._consumer.start()
        except BaseException:
            await self._producer.stop()
            raise

    def spawn(self) -> None:
        self._task = asyncio.create_task(self.run(), name="kubepay-orders-consumer")

    @property
    def task(self) -> asyncio.Task[None]:
        assert self._task is not None, "spawn() first"
        return self._task

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._consumer.stop()
        await self._producer.stop()

    async def run(self) -> None:
        log.info("consuming %s as group %s, creating payments in namespace %s",
                 self._settings.topics.orders_created, self._settings.orders_group, self._settings.orders_namespace)
        while not self._stopping.is_set():
            batches = await self._consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    if self._stopping.is_set():
                        return
                    await self.handle(record)

    async def handle(self, record: Any) -> None:
        """Create the order's resource or dead-letter the message; then, and only then, commit past it."""
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        try:
            order = parse_order(record.value)
            resource, created = await self._ensure(order)
            log.debug("%s: order %s -> %s (%s)", where, order.order_id, resource["metadata"]["name"],
                     "created" if created else "already there")
        except (PoisonMessage, intake.OrderConflict) as exc:
            await self._dead_letter(record, str(exc))
        except Invalid as exc:  # the API server refused the resource (schema): retrying cannot help
            await self._dead_letter(record, f"Kubernetes refused the PaymentIntent: {exc}")
        except ApiException as exc:
            await self._dead_letter(record, f"Kubernetes refused the PaymentIntent: {exc.status} {exc.reason}")
        try:
            await self._consumer.commit({TopicPartition(record.topic, record.partition): record.offset + 1})
        except CommitFailedError as exc:  # rebalanced away: the next owner redelivers, which is harmless
            log.warning("%s: commit failed, the message will be redelivered: %s", where, exc)

    async def _ensure(self, order: intake.Order) -> tuple[dict[str, Any], bool]:
        return await retry.until_done(
            lambda: intake.ensure_payment_intent(self._kube, self._settings.orders_namespace, order, SOURCE),
            (KubeUnavailable, Conflict), log, f"order {order.order_id} not created yet")

    async def _dead_letter(self, record: Any, reason: str) -> None:
        headers = [
            *(record.headers or ()),
            (ERROR_HEADER, reason.encode()),
            ("kubepay_original_topic", record.topic.encode()),
            ("kubepay_original_partition", str(record.partition).encode()),
            ("kubepay_original_offset", str(record.offset).encode()),
        ]
        await retry.until_done(
            lambda: self._producer.send_and_wait(self._settings.topics.orders_dlq, record.value, key=record.key,
                                                 headers=headers),
            (KafkaError,), log, "dead-lettering failed")
        log.warning("%s[%d]@%d dead-lettered to %s: %s", record.topic, record.partition, record.offset,
                    self._settings.topics.orders_dlq, reason)


async def start_background(settings: Settings, kube: KubeClient) -> OrdersConsumer:
    """Start consuming in a task, once Kafka answers; call `stop()` at cleanup."""

    async def started() -> OrdersConsumer:
        consumer = OrdersConsumer(settings, kube)
        await consumer.start()
        return consumer

    consumer = await dependencies.wait_until_up("Kafka", settings.kafka_brokers, started)
    consumer.spawn()
    return consumer


async def serve(settings: Settings) -> None:
    """The standalone process: the consumer plus `/healthz` on KUBEPAY_HEALTH_PORT, until SIGTERM."""
    metrics.serve(settings.metrics_port)
    kube = await dependencies.kube()
    consumer = await start_background(settings, kube)
    logs.started(ORDERS, settings, settings.health_port)
    task = consumer.task

    async def healthz(_: web.Request) -> web.Response:
        if consumer.healthy:
            return web.json_response({"status": "ok"})
        return web.json_response({"status": "unavailable"}, status=503)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    try:
        await http_server.serve_until_stopped(app, settings.health_port, "the orders consumer", task)
    finally:
        await consumer.stop()
        await kube.close()
