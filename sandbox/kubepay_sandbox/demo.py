"""`kubepay-sandbox demo` (`make demo`): one PaymentIntent from `kubectl apply` to Stripe, PostgreSQL and Kafka,
printed live."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import yaml
from aiokafka import AIOKafkaConsumer
from kubernetes_asyncio import client, config

from kubepay_sandbox.checkout import REPO
from kubepay_sandbox.stack import Sandbox, Tenant
from kubepay_sandbox.stripe_fake import TEST_CARDS

EXAMPLE = REPO / "examples" / "paymentintent.yaml"
PI_PATH = "kubepay.io/v1alpha1/paymentintents"
DEADLINE = 45.0


def say(kind: str, text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {kind:<9} {text}", flush=True)


async def _watch_phases(box: Sandbox, namespace: str, name: str, done: asyncio.Event) -> None:
    seen: str | None = None
    while not done.is_set():
        obj = box.kube.get(PI_PATH, namespace, name) or {}
        status = obj.get("status") or {}
        phase = status.get("phase")
        if phase and phase != seen:
            stripe_id = (status.get("stripe") or {}).get("paymentIntentId", "-")
            say("resource", f"{namespace}/{name} phase={phase} stripe={stripe_id} "
                            f"stripeStatus={(status.get('stripe') or {}).get('status', '-')}")
            seen = phase
        await asyncio.sleep(0.05)


async def _watch_kafka(box: Sandbox, tenant: Tenant, received: list[str]) -> None:
    consumer = AIOKafkaConsumer(*tenant.topics.all(), bootstrap_servers=box.kafka.bootstrap_servers,
                                group_id=None, auto_offset_reset="earliest", metadata_max_age_ms=500)
    await consumer.start()
    try:
        async for record in consumer:
            headers = {k: v.decode() for k, v in record.headers}
            topic = record.topic.split(".", 1)[1]
            say("kafka", f"{topic} key={record.key.decode() if record.key else None} "
                         f"ce_type={headers.get('ce_type')} value={record.value.decode()}")
            received.append(topic)
    finally:
        await consumer.stop()


async def _until(probe: Any, what: str) -> Any:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        value = await probe()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise TimeoutError(f"the demo waited {DEADLINE}s for {what}")


async def run(box: Sandbox) -> None:
    tenant = await box.tenant("demo")
    say("sandbox", f"PostgreSQL {box.postgres.port}, Kafka {box.kafka.bootstrap_servers}, "
                   f"Stripe fake {box.stripe.url}, Kubernetes API {box.kube.url}")
    operator, webhook = tenant.process("operator"), tenant.process("webhook")
    await asyncio.gather(operator.start(), webhook.start())
    say("process", f"controller pid {operator.pid}, webhook receiver pid {webhook.pid} ({tenant.webhook_url})")
    await box.stripe.register_webhook(tenant.webhook_url, tenant.webhook_secret)

    done = asyncio.Event()
    received: list[str] = []
    watchers = [asyncio.create_task(_watch_phases(box, tenant.namespace, "order-1111", done)),
                asyncio.create_task(_watch_kafka(box, tenant, received))]
    cfg = client.Configuration()
    await config.load_kube_config(config_file=tenant.env["KUBECONFIG"], client_configuration=cfg)
    async with client.ApiClient(cfg) as api:
        custom = client.CustomObjectsApi(api)
        manifest = yaml.safe_load(await asyncio.to_thread(Path(EXAMPLE).read_text))
        say("kubectl", f"apply -f {EXAMPLE.relative_to(REPO)} -n {tenant.namespace}")
        await custom.create_namespaced_custom_object("kubepay.io", "v1alpha1", tenant.namespace,
                                                     "paymentintents", manifest)

        async def stripe_id() -> str | None:
            obj = await custom.get_namespaced_custom_object("kubepay.io", "v1alpha1", tenant.namespace,
                                                            "paymentintents", "order-1111")
            found: str | None = (obj.get("status") or {}).get("stripe", {}).get("paymentIntentId")
            return found

        intent_id = await _until(stripe_id, "the Stripe PaymentIntent")
        say("stripe", f"customer pays {intent_id} with {TEST_CARDS['success']} (Stripe then sends a signed webhook)")
        await box.stripe.client().v1.payment_intents.confirm_async(
            intent_id, {"payment_method": TEST_CARDS["success"], "return_url": "https://shop.example/done"})

        async def succeeded() -> bool:
            obj = await custom.get_namespaced_custom_object("kubepay.io", "v1alpha1", tenant.namespace,
                                                            "paymentintents", "order-1111")
            return (obj.get("status") or {}).get("phase") == "Succeeded"

        await _until(succeeded, "phase Succeeded")
    await _until(lambda: _ready(received), "the Kafka messages")
    conn = await asyncpg.connect(tenant.database_url)
    try:
        row = await conn.fetchrow("SELECT id, order_id, amount, currency, status, provider_payment_id "
                                  "FROM payments WHERE order_id = '1111'")
    finally:
        await conn.close()
    say("postgres", json.dumps({k: str(v) for k, v in dict(row or {}).items()}))
    done.set()
    for task in watchers:
        task.cancel()
    await asyncio.gather(*watchers, return_exceptions=True)
    await tenant.stop_processes()
    say("done", "the payment went from a Kubernetes resource to Stripe, PostgreSQL and Kafka")


async def _ready(received: list[str]) -> bool:
    return {"payments.initiated", "payments.succeeded", "orders.status"} <= set(received)


async def main() -> int:
    say("sandbox", "starting PostgreSQL, Kafka, a Stripe fake and a Kubernetes API emulator on 127.0.0.1")
    async with Sandbox() as box:
        try:
            await run(box)
        except TimeoutError as exc:
            print(f"demo failed: {exc}", file=sys.stderr)
            return 1
    return 0
