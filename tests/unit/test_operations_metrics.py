"""The metrics, probes and start-up line an SRE works with: each moves when what it names happens."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import kopf
import pytest
import stripe
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiokafka.errors import KafkaConnectionError
from prometheus_client import REGISTRY

from kubepay import config, health, logs
from kubepay.controller import gauges, probes
from kubepay.mirror.messages import Message
from kubepay.mirror.publisher import Publisher, PublishFailed
from kubepay.model.resources import PAYMENT_INTENTS, PAYMENT_REFUNDS
from kubepay.postgres import StoreUnavailable
from kubepay.stripe.gateway import StripeGateway, StripeRejected, StripeUnavailable
from kubepay.stripe.ledger import Ledger
from tests.helpers import wait_for
from tests.unit.fakes import World, changed, controller

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- the controller ---------------------------------------------------------------------------------------

async def test_each_handling_is_timed_by_kind_and_outcome() -> None:
    world = World()
    ctrl = controller(world)
    labels = {"kind": "PaymentIntent"}
    before = {o: value("kubepay_reconcile_duration_seconds_count", **labels, outcome=o) for o in ("requeued", "retry")}
    body = world.kube.add(PAYMENT_INTENTS, {"orderId": "1", "amount": 100, "currency": "usd"})
    world.stripe.fail_next("create_intent", StripeUnavailable("Stripe unavailable: APIConnectionError", 0.01))
    await changed(ctrl, body)  # creation failed: retried
    assert value("kubepay_reconcile_duration_seconds_count", **labels, outcome="retry") == before["retry"] + 1
    await changed(ctrl, world.kube.body(PAYMENT_INTENTS))  # created, then stepped: Pending waits for Stripe
    await changed(ctrl, world.kube.body(PAYMENT_INTENTS))
    assert value("kubepay_reconcile_duration_seconds_count", **labels, outcome="requeued") > before["requeued"]


def _pi(name: str, phase: str | None, created: str, plural: str = PAYMENT_INTENTS) -> tuple[str, dict[str, Any]]:
    return plural, {"metadata": {"name": name, "creationTimestamp": created},
                    "status": {"phase": phase} if phase else {}}


def test_stuck_counts_unfinished_payments_older_than_the_threshold_by_phase() -> None:
    old, young = "2027-01-15T06:00:00Z", "2027-01-15T07:59:00Z"
    bodies = [_pi("a", "Pending", old), _pi("b", "Pending", old), _pi("c", "RequiresAction", old),
              _pi("d", "Pending", young), _pi("e", "Succeeded", old), _pi("f", None, old),
              _pi("g", "Pending", old, PAYMENT_REFUNDS)]
    assert gauges.stuck(bodies, 3600, NOW) == {"Pending": 2, "RequiresAction": 1}


class _Ledger:
    def __init__(self) -> None:
        self.count: int | Exception = 3

    async def unprocessed(self, older_than_seconds: float) -> int:
        assert older_than_seconds == gauges.IN_FLIGHT
        if isinstance(self.count, Exception):
            raise self.count
        return self.count


async def test_gauges_refresh_and_say_once_when_the_ledger_cannot_be_read(caplog: pytest.LogCaptureFixture) -> None:
    ledger = _Ledger()
    publisher = SimpleNamespace(oldest_unacknowledged_age=lambda: 12.5)
    active = [False]
    g = gauges.Gauges(lambda: [_pi("a", "Processing", "2020-01-01T00:00:00Z")], cast(Ledger, ledger),
                      cast(Publisher, publisher), lambda: active[0], 3600)
    await g.refresh()
    assert value("kubepay_payments_stuck", phase="Processing") == 1
    assert value("kubepay_payments_stuck", phase="Pending") == 0
    assert value("kubepay_ledger_unprocessed_events") == 3
    assert value("kubepay_oldest_unpublished_milestone_age_seconds") == 12.5
    assert value("kubepay_controller_active") == 0
    active[0] = True
    assert value("kubepay_controller_active") == 1
    ledger.count = StoreUnavailable("PostgreSQL at db:5432 unavailable")
    with caplog.at_level(logging.WARNING):
        await g.refresh()
        await g.refresh()
    assert [r.getMessage() for r in caplog.records if "ledger" in r.getMessage()] == [
        "kubepay_ledger_unprocessed_events is stale, PostgreSQL is unavailable: PostgreSQL at db:5432 unavailable"]
    assert value("kubepay_ledger_unprocessed_events") == 3


# --- Kafka ------------------------------------------------------------------------------------------------

class _Producer:
    def __init__(self) -> None:
        self.refuse = True

    async def send(self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> Any:
        if self.refuse:
            raise KafkaConnectionError("no broker")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def test_kafka_failures_retries_and_the_oldest_unacknowledged_message_are_counted() -> None:
    publisher = Publisher(SimpleNamespace(kafka_brokers="127.0.0.1:1", kafka_acks="all", kafka_idempotence=True))
    producer = _Producer()
    publisher._producer = producer  # type: ignore[assignment]
    topic = "payments.unit-metrics"
    message = Message(topic, "order-1", {"order_id": "order-1"}, [("ce_id", b"ce-1")])
    failures, retries = ("kubepay_kafka_publish_failures_total", "kubepay_kafka_publish_retries_total")
    assert publisher.oldest_unacknowledged_age() == 0
    with pytest.raises(PublishFailed, match=r"Kafka unavailable \(brokers 127.0.0.1:1\)"):
        await publisher.publish([message])
    assert value(failures, topic=topic, reason="unavailable") == 1
    assert value(retries, topic=topic) == 0
    assert publisher.oldest_unacknowledged_age() > 0
    producer.refuse = False
    await publisher.publish([message])
    assert value(retries, topic=topic) == 1
    assert value("kubepay_kafka_messages_total", topic=topic) == 1
    assert publisher.oldest_unacknowledged_age() == 0


# --- Stripe -----------------------------------------------------------------------------------------------

async def test_stripe_calls_are_timed_by_outcome_and_waiters_on_the_limiter_are_counted() -> None:
    gateway = StripeGateway("sk_test_unit", rate_limit=5)
    op = "unit_metrics_call"

    async def ok() -> str:
        return "ok"

    async def declined() -> str:
        raise stripe.CardError("declined", "card", "card_declined", http_status=402)

    try:
        waiting = [asyncio.create_task(gateway._call(op, ok)) for _ in range(3)]  # 5/s: two wait their turn
        async def two_wait() -> bool:
            return value("kubepay_stripe_limiter_waiting", priority="urgent") == 2
        await wait_for(two_wait, timeout=5, what="two calls waiting on the limiter")
        await asyncio.gather(*waiting)
        assert value("kubepay_stripe_limiter_waiting", priority="urgent") == 0
        with pytest.raises(StripeRejected):
            await gateway._call(op, declined)
    finally:
        await gateway.close()
    assert value("kubepay_stripe_requests_total", operation=op, outcome="ok") == 3
    assert value("kubepay_stripe_request_duration_seconds_count", operation=op, outcome="ok") == 3
    assert value("kubepay_stripe_request_duration_seconds_count", operation=op, outcome="rejected") == 1


# --- probes -----------------------------------------------------------------------------------------------

@pytest.fixture
async def probe_client() -> AsyncIterator[tuple[TestClient[web.Request, web.Application], kopf.Memo]]:
    memo = kopf.Memo()
    client = TestClient(TestServer(probes.app(memo)))
    await client.start_server()
    try:
        yield client, memo
    finally:
        await client.close()


async def _fine() -> None:
    return None


async def _hangs() -> None:
    await asyncio.Event().wait()  # a dependency that never answers


async def _broken() -> None:
    raise RuntimeError("a bug in a check")


async def _kafka_down() -> None:
    raise PublishFailed("Kafka unavailable (brokers kafka:9092): KafkaConnectionError")


async def test_liveness_is_the_loop_and_readiness_is_start_up_and_dependencies(
        probe_client: tuple[TestClient[web.Request, web.Application], kopf.Memo]) -> None:
    client, memo = probe_client
    assert (await client.get("/healthz")).status == 200  # alive while start-up waits for dependencies
    starting = await client.get("/readyz")
    assert starting.status == 503 and "start-up" in (await starting.json())["problems"]
    runtime = SimpleNamespace(store=SimpleNamespace(ping=_fine), kube=SimpleNamespace(ping=_fine),
                              publisher=SimpleNamespace(ping=_kafka_down))
    memo["runtime"], memo["started"] = runtime, True
    down = await client.get("/readyz")
    assert (down.status, await down.json()) == (503, {"status": "unavailable", "problems": {
        "kafka": "Kafka unavailable (brokers kafka:9092): KafkaConnectionError"}})
    runtime.publisher.ping = _fine
    assert (await client.get("/readyz")).status == 200
    runtime.kube.ping = _hangs
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(health, "TIMEOUT", 0.05)
        hung = await client.get("/readyz")
    assert (hung.status, (await hung.json())["problems"]) == (503, {"kubernetes": "no answer within 0.05 s"})
    runtime.kube.ping = _broken  # a bug, not an outage: a 500 (and aiohttp logs its traceback)
    assert (await client.get("/readyz")).status == 500
    memo["controller"] = asyncio.create_task(_fine())
    await memo["controller"]
    assert (await client.get("/healthz")).status == 500  # the controller stopped: a restart is the cure


# --- logs and settings ------------------------------------------------------------------------------------

def test_the_start_up_line_says_version_stripe_api_namespaces_and_features(caplog: pytest.LogCaptureFixture) -> None:
    settings = config.load({"DATABASE_URL": "postgresql://kubepay@127.0.0.1/kubepay", "KAFKA_BROKER_URL": "k:9092",
                            "STRIPE_SECRET_KEY": "sk_test_unit", "KUBEPAY_NAMESPACE": "payments",
                            "KUBEPAY_PEERING_NAME": "kubepay", "KUBEPAY_ADMISSION_PORT": "9443",
                            "KUBEPAY_RETAIN_FINISHED": "30d"})
    with caplog.at_level(logging.INFO):
        logs.started(config.OPERATOR, settings)
    [line] = caplog.records
    fields = cast(Any, line)
    assert fields.namespaces == ["payments"] and fields.command == "operator"
    assert fields.features == ["metrics:9090", "workers:64", "stripe-rate:20/s", "kafka-acks:all",
                               "kafka-idempotence", "peering:kubepay", "admission:9443", "retention:2592000s"]
    assert "sk_test" not in line.getMessage() and "Stripe API " in line.getMessage()


def test_kopf_success_lines_are_debug_only() -> None:
    quiet = logs.QuietSuccesses()
    success = logging.LogRecord("kopf.objects", logging.INFO, "", 0, "Handler 'validate-paymentintent' succeeded.",
                                None, None)
    failure = logging.LogRecord("kopf.objects", logging.ERROR, "", 0, "Handler 'x' failed.", None, None)
    ours = logging.LogRecord("kubepay", logging.INFO, "", 0, "payment plan succeeded.", None, None)
    assert logging.getLogger().getEffectiveLevel() > logging.DEBUG
    assert (quiet.filter(success), quiet.filter(failure), quiet.filter(ours)) == (False, True, True)


@pytest.mark.parametrize(("command", "port"), [(config.OPERATOR, 9090), (config.WEBHOOK, 9091),
                                               (config.API, 9092), (config.ORDERS, 9093)])
def test_each_command_has_its_own_metrics_port_so_all_run_side_by_side(command: str, port: int) -> None:
    env = {"DATABASE_URL": "postgresql://kubepay@127.0.0.1/kubepay", "KAFKA_BROKER_URL": "k:9092",
           "STRIPE_SECRET_KEY": "sk_test_unit", "STRIPE_WEBHOOK_SECRET": "whsec_unit",
           "KUBEPAY_API_TOKEN": "0123456789abcdef"}
    assert config.load(env, command=command).metrics_port == port
    assert config.load({**env, "KUBEPAY_METRICS_PORT": "0"}, command=command).metrics_port == 0
