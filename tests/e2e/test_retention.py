"""Retention end to end: a finished payment's resource goes, its row, messages and API answers stay, a refund
is refused with a reason, and re-applying the old manifest charges nobody again."""

from __future__ import annotations

from typing import Any

import pytest

from kubepay_sandbox.stack import Sandbox
from tests.conftest import Running
from tests.contracts import ApiClient
from tests.helpers import (
    Kube,
    create_refund,
    intents_for,
    messages,
    no_messages,
    pay,
    refund_phase_is,
    stays,
    wait_for,
)

SPEC = {"orderId": "R-7001", "amount": 1500, "currency": "usd"}
KEPT = {"orderId": "R-7002", "amount": 900, "currency": "usd", "ttlSecondsAfterFinished": 3600}


def _synced(pi: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in (pi.get("status") or {}).get("conditions", []) if c["type"] == "Synced"), {})


@pytest.mark.operator_env(KUBEPAY_RETAIN_FINISHED="2s")
async def test_a_finished_payment_is_deleted_after_its_retention_and_its_history_stays(
        sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns, tenant = running.namespace, running.tenant
    api_process = tenant.process("api")
    await api_process.start()
    api = await ApiClient.connect(tenant.api_url, tenant.api_token)
    stripe_client = sandbox.stripe_client()

    paid = await pay(stripe_client, kube, running, "gone", SPEC)
    await pay(stripe_client, kube, running, "kept", KEPT)
    uid, payment_id = paid["metadata"]["uid"], paid["status"]["paymentId"]

    # The controller's KUBEPAY_RETAIN_FINISHED (2 s) after the row was written; kept's own ttl (1 h) wins.
    await wait_for(lambda: _gone(kube, ns, "gone"), timeout=30, what="retention to delete the finished payment")
    await stays(lambda: _exists(kube, ns, "kept"), 3, "the payment with its own, longer ttl")

    # What stays: the row (the API answers from it), the Kafka history and the Stripe intent as it was.
    code, row = await api.call("GET", f"/payments/{payment_id}")
    assert code == 200 and (row["status"], row["amount"], row["resource"]) == (
        "succeeded", 1500, {"namespace": ns, "name": "gone"})
    await messages(sandbox.kafka, tenant.topics.succeeded, "R-7001", 1)
    [intent] = await intents_for(stripe_client, uid)
    assert intent["status"] == "succeeded"

    # A refund can no longer go through kubepay, and says so.
    code, refused = await api.call("POST", f"/payments/{payment_id}/refunds", body={})
    assert code == 410 and "refund Stripe PaymentIntent" in refused["error"], refused
    await create_refund(kube, ns, "gone-back", {"paymentIntentName": "gone"})
    failed = await refund_phase_is(kube, ns, "gone-back", "Failed")
    assert "deleted by retention" in failed["status"]["failure"]["message"]

    # A client repeats its order through the API: the paid order is not charged again.
    code, repeat = await api.call("POST", "/payments/intent", body={"order_id": "R-7001", "amount": 1500,
                                                                   "currency": "usd"})
    assert code == 409 and repeat["payment_id"] == payment_id and "not charged again" in repeat["error"], repeat

    # GitOps re-applies the old manifest: the new resource is refused, not charged a second time.
    again = await kube.create_pi(ns, "gone", SPEC)
    refused_pi = await kube.wait_pi(ns, "gone", lambda o: _synced(o).get("reason") == "AlreadyPaid",
                                    what="Synced=False AlreadyPaid")
    assert "not charged again" in _synced(refused_pi)["message"]
    assert await intents_for(stripe_client, again["metadata"]["uid"]) == []
    await no_messages(sandbox.kafka, tenant.topics.failed, "R-7001")


async def _gone(kube: Kube, ns: str, name: str) -> bool:
    return await kube.get_pi(ns, name) is None


async def _exists(kube: Kube, ns: str, name: str) -> bool:
    return await kube.get_pi(ns, name) is not None
