"""Test helpers: waits with deadlines, signed Stripe events, Kubernetes and Postgres look-ups."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import asyncpg
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from kubepay_sandbox.kafka import ConsumedMessage, KafkaBroker

T = TypeVar("T")
GROUP, VERSION, PLURAL = "kubepay.io", "v1alpha1", "paymentintents"


async def wait_for(
    probe: Callable[[], Awaitable[T | None]], timeout: float = 20.0, what: str = "condition"
) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """Stripe's scheme: t=TIMESTAMP,v1=HMAC_SHA256(secret, "TIMESTAMP.BODY")."""
    ts = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def stripe_event(event_type: str, obj: dict[str, Any], created: int | None = None,
                 event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_{secrets.token_hex(12)}",
        "object": "event",
        "api_version": "2024-06-20",
        "type": event_type,
        "created": int(time.time()) if created is None else created,
        "livemode": False,
        "pending_webhooks": 1,
        "data": {"object": obj},
    }


async def deliver(url: str, event: dict[str, Any] | bytes, secret: str, timestamp: int | None = None,
                  signature: str | None = None) -> tuple[int, dict[str, Any]]:
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    headers = {"Content-Type": "application/json",
               "Stripe-Signature": signature if signature is not None else sign(body, secret, timestamp)}
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as response:
        try:
            payload = await response.json(content_type=None)
        except ValueError:
            payload = {}
        return response.status, payload or {}


class Kube:
    """kubernetes_asyncio against whatever the kubeconfig names (the emulator, or a kind cluster)."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    async def serves_payments(self, namespace: str) -> bool:
        """Whether PaymentIntents are served in the namespace yet (CRDs just installed take a moment)."""
        try:
            await self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        except ApiException as exc:
            if exc.status in (404, 429):
                return False
            raise
        return True

    @classmethod
    async def connect(cls, kubeconfig: str) -> Kube:
        cfg = client.Configuration()
        await config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        return cls(client.ApiClient(cfg))

    async def create_pi(self, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PaymentIntent",
                "metadata": {"name": name, "namespace": namespace}, "spec": spec}
        result: dict[str, Any] = await self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body)
        return result

    async def get_pi(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return result

    async def wait_pi(self, namespace: str, name: str, predicate: Callable[[dict[str, Any]], bool],
                      timeout: float = 20.0, what: str = "status") -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            obj = await self.get_pi(namespace, name)
            return obj if obj is not None and predicate(obj) else None
        return await wait_for(probe, timeout, f"{namespace}/{name}: {what}")

    async def phase_is(self, namespace: str, name: str, phase: str, timeout: float = 20.0) -> dict[str, Any]:
        return await self.wait_pi(namespace, name, lambda o: (o.get("status") or {}).get("phase") == phase,
                                  timeout, f"phase {phase}")

    async def events(self, namespace: str) -> list[Any]:
        return list((await self.core.list_namespaced_event(namespace)).items)

    async def wait_events(self, namespace: str, name: str, reasons: set[str], type_: str | None = None,
                          timeout: float = 15.0) -> list[Any]:
        """The object's Events once every reason in `reasons` is there (the controller posts them in batches)."""
        async def probe() -> list[Any] | None:
            found = [e for e in await self.events(namespace)
                     if e.involved_object.name == name and (type_ is None or e.type == type_)]
            return found if reasons <= {e.reason for e in found} else None
        return await wait_for(probe, timeout, f"events {sorted(reasons)} on {namespace}/{name}")

    async def close(self) -> None:
        await self.api.close()


async def payment_row(dsn: str, uid: str) -> dict[str, Any] | None:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT * FROM payments WHERE resource_uid = $1", uid)
    finally:
        await conn.close()
    return dict(row) if row else None


async def fetch(dsn: str, query: str, *args: Any) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [dict(r) for r in await conn.fetch(query, *args)]
    finally:
        await conn.close()


async def messages(kafka: KafkaBroker, topic: str, order_id: str, count: int,
                   timeout: float = 15.0) -> list[ConsumedMessage]:
    """The messages for one order on a topic, once at least `count` arrived (or the deadline passed)."""
    async def probe() -> list[ConsumedMessage] | None:
        found = [m for m in await kafka.read_topic(topic, min_messages=count, timeout=1.0) if m.key == order_id]
        return found if len(found) >= count else None
    return await wait_for(probe, timeout, f"{count} message(s) for order {order_id} on {topic}")


async def intents_for(stripe_client: Any, uid: str) -> list[dict[str, Any]]:
    """The Stripe intents whose metadata names this resource uid."""
    listing = await stripe_client.v1.payment_intents.list_async({"limit": 100})
    intents = [i.to_dict() for i in listing.data]
    return [i for i in intents if (i.get("metadata") or {}).get("kubepay_uid") == uid]


async def stripe_id(kube: Kube, namespace: str, name: str) -> str:
    pi = await kube.wait_pi(namespace, name, lambda o: bool(o.get("status", {}).get("stripe", {})
                                                            .get("paymentIntentId")), timeout=30, what="a Stripe id")
    return str(pi["status"]["stripe"]["paymentIntentId"])


async def confirm_and_notify(stripe_client: Any, intent_id: str, payment_method: str, webhook_url: str,
                             secret: str, expect_error: bool = False) -> dict[str, Any]:
    """The customer pays; Stripe then sends the matching signed webhook (built here from Stripe's answer)."""
    try:
        await stripe_client.v1.payment_intents.confirm_async(
            intent_id, {"payment_method": payment_method, "return_url": "https://shop.example/return"})
    except Exception:
        if not expect_error:
            raise
    intent: dict[str, Any] = (await stripe_client.v1.payment_intents.retrieve_async(intent_id)).to_dict()
    event_type = {"succeeded": "payment_intent.succeeded",
                  "requires_capture": "payment_intent.amount_capturable_updated"}.get(
        intent["status"], "payment_intent.payment_failed")
    status, _ = await deliver(webhook_url, stripe_event(event_type, intent), secret)
    assert status == 200
    return intent


async def pay(stripe_client: Any, kube: Kube, running: Any, name: str, spec: dict[str, Any],
              phase: str = "Succeeded") -> dict[str, Any]:
    """Create a PaymentIntent resource and pay it with a good card; returns the resource at `phase`."""
    await kube.create_pi(running.namespace, name, spec)
    intent_id = await stripe_id(kube, running.namespace, name)
    await confirm_and_notify(stripe_client, intent_id, "pm_card_visa", running.tenant.webhook_url,
                             running.tenant.webhook_secret)
    return await kube.phase_is(running.namespace, name, phase)


async def create_refund(kube: Kube, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PaymentRefund",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    result: dict[str, Any] = await kube.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "paymentrefunds", body)
    return result


async def refund_phase_is(kube: Kube, namespace: str, name: str, phase: str,
                          timeout: float = 20.0) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        obj: dict[str, Any] = await kube.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "paymentrefunds", name)
        return obj if (obj.get("status") or {}).get("phase") == phase else None
    return await wait_for(probe, timeout, f"refund {namespace}/{name} phase {phase}")


async def admission_review(running: Any, path: str, operation: str, obj: dict[str, Any],
                           old: dict[str, Any] | None = None) -> dict[str, Any]:
    """Ask the controller's admission server what the API server would ask it, over verified TLS."""
    import ssl
    import uuid

    cert_dir = running.tenant.env["KUBEPAY_ADMISSION_CERT_DIR"]
    context = ssl.create_default_context(cafile=f"{cert_dir}/tls.crt")
    group, version = obj["apiVersion"].split("/")
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": str(uuid.uuid4()), "kind": {"group": group, "version": version, "kind": obj["kind"]},
        "resource": {"group": group, "version": version, "resource": obj["kind"].lower() + "s"},
        "operation": operation, "namespace": running.namespace, "name": obj["metadata"]["name"],
        "object": obj, "oldObject": old, "userInfo": {"username": "tester"}, "dryRun": False}}
    url = f"https://127.0.0.1:{running.tenant.env['KUBEPAY_ADMISSION_PORT']}/{path}"
    async with aiohttp.ClientSession() as session, session.post(url, json=review, ssl=context) as response:
        assert response.status == 200, await response.text()
        answer: dict[str, Any] = (await response.json())["response"]
        return answer


async def stays(probe: Callable[[], Awaitable[bool]], duration: float, what: str) -> None:
    """Assert that `probe` holds throughout `duration` seconds (for things that must NOT happen)."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        assert await probe(), f"{what} stopped holding"
        await asyncio.sleep(0.1)


async def no_messages(kafka: KafkaBroker, topic: str, order_id: str, within: float = 1.5) -> None:
    """Nothing for this order on the topic (read for `within` seconds, from the beginning)."""
    found = [m for m in await kafka.read_topic(topic, min_messages=10**6, timeout=within) if m.key == order_id]
    assert found == [], f"unexpected messages for order {order_id} on {topic}: {found}"
