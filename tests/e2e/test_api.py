"""`kubepay api` end to end: the real process against the sandbox, every answer checked against /openapi.json."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest_asyncio

from kubepay.model.identity import payment_id
from kubepay_sandbox.kube_emulator import KubeEmulator
from kubepay_sandbox.processes import KubepayProcess
from kubepay_sandbox.stack import CRD_DIR, Sandbox, Tenant
from kubepay_sandbox.stripe_fake import TEST_CARDS
from tests.conftest import Running
from tests.contracts import ApiClient, validate_message
from tests.helpers import Kube, deliver, fetch, messages, stripe_event, wait_for

# As a client of the Go payment-service sends it: `amount` in minor units (19.99 USD).
ORDER = {"order_id": "A-1001/x", "amount": 1999, "currency": "USD", "user_id": "user-7",
         "metadata": {"channel": "web"}}


@pytest_asyncio.fixture()
async def api_process(running: Running) -> AsyncIterator[KubepayProcess]:
    process = running.tenant.process("api")
    await process.start()
    yield process


async def _intents_for(sandbox: Sandbox, uid: str) -> list[dict[str, Any]]:
    listing = await sandbox.stripe_client().v1.payment_intents.list_async({"limit": 100})
    return [i.to_dict() for i in listing.data if (i.to_dict().get("metadata") or {}).get("kubepay_uid") == uid]


async def _payment(api: ApiClient, pid: str, status: str) -> dict[str, Any] | None:
    code, body = await api.call("GET", f"/payments/{pid}")
    return body if code == 200 and body["status"] == status else None


async def test_create_repeat_read_pay_and_refund_through_the_api(
        sandbox: Sandbox, running: Running, api_process: KubepayProcess, kube: Kube) -> None:
    tenant, ns = running.tenant, running.namespace
    api = await ApiClient.connect(tenant.api_url, tenant.api_token)

    assert (await api.call("POST", "/payments/intent", body=ORDER, token=None))[0] == 401
    assert (await api.call("POST", "/payments/intent", body=ORDER, token="wrong-token-0123456789"))[0] == 401
    assert await api.call("GET", "/healthz", token=None) == (200, "ok")  # text/plain, checked against the document
    assert (await api.call("GET", "/readyz", token=None))[0] == 200

    status, created = await api.call("POST", "/payments/intent", body=ORDER)
    assert status == 201, created
    name = created["name"]
    assert name.startswith("order-a-1001-x-") and len(name) <= 63
    assert (created["amount"], created["amount_decimal"], created["currency"]) == (1999, "19.99", "USD")
    resource = await kube.get_pi(ns, name)
    assert resource is not None
    uid = resource["metadata"]["uid"]
    assert created["payment_id"] == str(payment_id(uid)) == resource["status"]["paymentId"]
    wanted = {"orderId": "A-1001/x", "amount": 1999, "currency": "usd", "userId": "user-7",
              "metadata": {"channel": "web"}}
    assert {key: resource["spec"].get(key) for key in wanted} == wanted  # plus the CRD's defaults
    assert resource["metadata"]["labels"]["kubepay.io/order-id"] == "a-1001-x"
    assert resource["metadata"]["annotations"]["kubepay.io/order-id"] == "A-1001/x"
    [intent] = await _intents_for(sandbox, uid)
    assert created["client_secret"] == intent["client_secret"]

    # A repeat (a client retry) answers the same payment; Stripe still has exactly one intent.
    status, again = await api.call("POST", "/payments/intent", body=ORDER)
    assert status == 200
    assert again == created
    assert len(await _intents_for(sandbox, uid)) == 1

    status, conflict = await api.call("POST", "/payments/intent", body={**ORDER, "amount": 2000})
    assert status == 409 and conflict["payment_id"] == created["payment_id"] and conflict["name"] == name
    assert (await api.call("POST", "/payments/intent", body={**ORDER, "currency": "EUR"}))[0] == 409

    status, invalid = await api.call("POST", "/payments/intent",
                                     body={"amount": 1234, "currency": "US", "metadata": {"a": 1}})
    assert status == 422
    assert set(invalid["fields"]) == {"order_id", "currency", "metadata"}
    # `amount` is never read as major units: anything but an integer is refused, pointing at amount_decimal.
    for not_minor in (b"12.5", b'"12.00"', b"true", b"12.0"):
        status, invalid = await api.call(
            "POST", "/payments/intent", raw=b'{"order_id": "1", "currency": "usd", "amount": ' + not_minor + b"}")
        assert status == 422 and set(invalid["fields"]) == {"amount"}, (not_minor, invalid)
        assert "integer in the currency's minor units" in invalid["fields"]["amount"]
        assert "amount_decimal" in invalid["fields"]["amount"]
    status, invalid = await api.call("POST", "/payments/intent", body={"order_id": "1", "amount_decimal": "12.345",
                                                                      "currency": "usd"})
    assert status == 422 and "more than 2 decimal places" in invalid["fields"]["amount_decimal"]
    status, invalid = await api.call("POST", "/payments/intent", body={"order_id": "1", "amount_decimal": 12,
                                                                      "currency": "usd"})
    assert status == 422 and "decimal string" in invalid["fields"]["amount_decimal"]
    for amounts in ({"amount": 100, "amount_decimal": "1.00"}, {}):
        status, invalid = await api.call("POST", "/payments/intent", body={"order_id": "1", "currency": "usd",
                                                                          **amounts})
        assert status == 422 and "give amount (an integer in minor units" in invalid["fields"]["amount"]
    for amount, problem in ((0, "greater than zero"), (100_000_000, "at most 99999999 minor units")):
        status, invalid = await api.call("POST", "/payments/intent",
                                         body={"order_id": "1", "currency": "usd", "amount": amount})
        assert status == 422 and problem in invalid["fields"]["amount"], invalid
    status, invalid = await api.call("POST", "/payments/intent", raw=b"{oops")
    assert status == 422 and invalid["fields"] == {"body": "must be a JSON object"}
    # A decimal string in the major unit goes in amount_decimal.
    status, exact = await api.call("POST", "/payments/intent", body={"order_id": "2002", "amount_decimal": "0.57",
                                                                    "currency": "usd"})
    assert status == 201 and (exact["amount"], exact["amount_decimal"], exact["name"]) == (57, "0.57", "order-2002")
    status, refused = await api.call("POST", "/payments/intent", body={"order_id": "2003", "amount": 29,
                                                                      "currency": "usd"})
    assert status == 422 and refused["error"].startswith("Stripe refused the payment: Amount must be at least")
    status, jpy = await api.call("POST", "/payments/intent", body={"order_id": "3003", "amount": 1200,
                                                                  "currency": "jpy"})
    assert status == 201 and (jpy["amount"], jpy["amount_decimal"], jpy["currency"]) == (1200, "1200", "JPY")

    # Reads come from PostgreSQL, with the Go service's field names.
    pid = created["payment_id"]
    row = await wait_for(lambda: _payment(api, pid, "pending"), what="the payments row")
    assert (row["order_id"], row["user_id"], row["amount"], row["amount_decimal"], row["currency"]) == \
        ("A-1001/x", "user-7", 1999, "19.99", "USD")
    assert row["provider_payment_id"] == intent["id"]
    assert row["resource"] == {"namespace": ns, "name": name}
    status, listing = await api.call("GET", "/payments?order_id=A-1001/x")
    assert status == 200 and [p["id"] for p in listing["payments"]] == [pid]
    assert (await api.call("GET", "/payments?order_id=nobody"))[1] == {"payments": []}
    assert (await api.call("GET", "/payments"))[0] == 422
    assert (await api.call("GET", f"/payments/{uuid.uuid4()}"))[0] == 404
    assert (await api.call("GET", "/payments/not-a-uuid"))[0] == 404
    assert (await api.call("GET", f"/payments/{pid}", token=None))[0] == 401

    [initiated] = await messages(sandbox.kafka, tenant.topics.initiated, "A-1001/x", 1)
    validate_message("payments.initiated", initiated.value)
    assert initiated.value["amount_minor"] == 1999

    # Pay it: the succeeded and OrderStatusUpdated messages match their schemas, and the API shows it.
    stripe_client = sandbox.stripe_client()
    await stripe_client.v1.payment_intents.confirm_async(
        intent["id"], {"payment_method": TEST_CARDS["success"], "return_url": "https://shop.example/return"})
    paid = (await stripe_client.v1.payment_intents.retrieve_async(intent["id"])).to_dict()
    assert (await deliver(tenant.webhook_url, stripe_event("payment_intent.succeeded", paid),
                          tenant.webhook_secret))[0] == 200
    [succeeded] = await messages(sandbox.kafka, tenant.topics.succeeded, "A-1001/x", 1)
    validate_message("payments.succeeded", succeeded.value)
    [order_status] = await messages(sandbox.kafka, tenant.topics.order_status, "A-1001/x", 1)
    validate_message("orders.status", order_status.value)
    row = await wait_for(lambda: _payment(api, pid, "succeeded"), what="the row to say succeeded")
    assert (row["amount_received"], row["amount_received_decimal"]) == (1999, "19.99")
    assert (row["amount_refunded"], row["amount_refunded_decimal"]) == (0, "0.00")

    # Refunds become PaymentRefund resources; an Idempotency-Key makes a retry return the same one.
    assert (await api.call("POST", f"/payments/{uuid.uuid4()}/refunds", body={}))[0] == 404
    assert (await api.call("POST", f"/payments/{pid}/refunds", body={"reason": "because"}))[0] == 422
    assert (await api.call("POST", f"/payments/{pid}/refunds", body={"amount_decimal": "0.001"}))[0] == 422
    status, invalid = await api.call("POST", f"/payments/{pid}/refunds", body={"amount": "5.00"})
    assert status == 422 and "amount_decimal" in invalid["fields"]["amount"]
    key = {"Idempotency-Key": "refund-req-1"}
    status, refund = await api.call("POST", f"/payments/{pid}/refunds",
                                    body={"amount": 500, "reason": "requested_by_customer"}, headers=key)
    assert status == 201, refund
    assert (refund["amount"], refund["amount_decimal"], refund["currency"]) == (500, "5.00", "USD")
    assert (refund["payment_intent_name"], refund["payment_id"]) == (name, pid)
    stored = await kube.custom.get_namespaced_custom_object("kubepay.io", "v1alpha1", ns, "paymentrefunds",
                                                            refund["name"])
    assert stored["spec"] == {"paymentIntentName": name, "amount": 500, "reason": "requested_by_customer"}
    status, repeat = await api.call("POST", f"/payments/{pid}/refunds",
                                    body={"amount_decimal": "5.00", "reason": "requested_by_customer"}, headers=key)
    assert status == 200 and repeat["name"] == refund["name"]
    assert (await api.call("POST", f"/payments/{pid}/refunds", body={"amount": 600}, headers=key))[0] == 409

    for process in (api_process, running.operator):
        assert intent["client_secret"] not in process.logs()
        assert tenant.api_token not in process.logs()
    answered = {(method, path) for method, path, _ in api.checker.checked}
    assert answered == {(m.upper(), p) for p, ops in api.checker.document["paths"].items() for m in ops}


async def test_requests_are_timed_by_method_route_and_status_on_the_metrics_port(
        running: Running, api_process: KubepayProcess) -> None:
    api = await ApiClient.connect(running.tenant.api_url, running.tenant.api_token)
    missing = "00000000-0000-4000-8000-000000000000"
    assert (await api.call("GET", f"/payments/{missing}"))[0] == 404
    assert (await api.call("GET", f"/payments/{missing}", token=None))[0] == 401
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {running.tenant.api_token}"}
        async with session.get(f"{running.tenant.api_url}/no/such/route", headers=headers) as response:
            assert response.status == 404  # not in the API document, so not through ApiClient
        async with session.get(api_process.metrics_url) as response:
            scrape = await response.text()
    for method, route, status in (("GET", "/payments/{id}", "404"), ("GET", "/payments/{id}", "401"),
                                  ("GET", "other", "404")):
        sample = (f'kubepay_api_request_duration_seconds_count{{method="{method}",route="{route}",'
                  f'status="{status}"}} 1.0')
        assert sample in scrape, scrape
    assert missing not in scrape  # routes are patterns, never ids


async def test_no_client_secret_in_time_is_504_and_a_repeat_gets_it(tenant: Tenant, kube: Kube) -> None:
    api_process = tenant.process("api", KUBEPAY_API_WAIT_SECONDS="1")
    await api_process.start()
    api = await ApiClient.connect(tenant.api_url, tenant.api_token)
    order = {"order_id": "4004", "amount": 1200, "currency": "usd"}
    status, timeout = await api.call("POST", "/payments/intent", body=order)  # no controller is running
    assert status == 504, timeout
    assert timeout["name"] == "order-4004"
    resource = await kube.get_pi(tenant.namespace, "order-4004")
    assert resource is not None and timeout["payment_id"] == str(payment_id(resource["metadata"]["uid"]))

    await tenant.process("operator").start()
    status, created = await wait_for(lambda: _repeat_until_ok(api, order), timeout=20, what="the client secret")
    assert status == 200 and created["payment_id"] == timeout["payment_id"]
    assert created["client_secret"].startswith("pi_")


async def _repeat_until_ok(api: ApiClient, order: dict[str, Any]) -> tuple[int, Any] | None:
    status, body = await api.call("POST", "/payments/intent", body=order)
    assert status in (200, 504), body
    return (status, body) if status == 200 else None


async def test_refunds_answer_501_where_the_refund_crd_is_not_installed(tenant: Tenant) -> None:
    emulator = KubeEmulator([CRD_DIR / "paymentintents.kubepay.io.yaml"])  # a cluster without PaymentRefund
    await emulator.start()
    try:
        kubeconfig = emulator.write_kubeconfig(tenant.workdir / "no-refunds-kubeconfig", namespace=tenant.namespace)
        api_process = tenant.process("api", KUBECONFIG=str(kubeconfig))
        await api_process.start()
        kube = await Kube.connect(str(kubeconfig))
        try:
            await kube.core.create_namespace({"metadata": {"name": tenant.namespace}})
            created = await kube.create_pi(tenant.namespace, "order-5005",
                                           {"orderId": "5005", "amount": 500, "currency": "usd"})
        finally:
            await kube.close()
        pid = uuid.uuid4()
        await fetch(tenant.database_url,
                    "INSERT INTO payments (id, order_id, amount, currency, status, resource_namespace, resource_name, "
                    "resource_uid) VALUES ($1, '5005', 500, 'usd', 'succeeded', $2, 'order-5005', $3)",
                    pid, tenant.namespace, created["metadata"]["uid"])
        api = await ApiClient.connect(tenant.api_url, tenant.api_token)
        status, body = await api.call("POST", f"/payments/{pid}/refunds", body={})
        assert status == 501 and "PaymentRefund CRD" in body["error"]
    finally:
        await tenant.stop_processes()
        await emulator.stop()
