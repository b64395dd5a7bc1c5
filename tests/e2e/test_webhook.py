"""The receiver: signatures, the ledger, duplicates, ordering, limits and outages."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from kubepay import __version__
from kubepay.stripe.api_version import STRIPE_API_VERSION
from kubepay_sandbox.stack import Sandbox
from tests.conftest import Running
from tests.helpers import Kube, deliver, fetch, messages, stripe_event, wait_for

SPEC = {"orderId": "3333", "amount": 1999, "currency": "usd"}


async def _intent(sandbox: Sandbox, kube: Kube, ns: str, name: str, order_id: str) -> dict[str, Any]:
    await kube.create_pi(ns, name, {**SPEC, "orderId": order_id})
    pi = await kube.wait_pi(ns, name, lambda o: bool(o.get("status", {}).get("published")), what="initiated")
    intent_id = pi["status"]["stripe"]["paymentIntentId"]
    return (await sandbox.stripe_client().v1.payment_intents.retrieve_async(intent_id)).to_dict()


def _as(intent: dict[str, Any], status: str, **extra: Any) -> dict[str, Any]:
    return {**intent, "status": status, **extra}


async def test_same_event_three_times_changes_state_and_publishes_once(
        sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns = running.namespace
    intent = await _intent(sandbox, kube, ns, "dup", "4001")
    event = stripe_event("payment_intent.succeeded", _as(intent, "succeeded", amount_received=1999))
    answers = [await deliver(running.tenant.webhook_url, event, running.tenant.webhook_secret) for _ in range(3)]
    assert [status for status, _ in answers] == [200, 200, 200]
    assert [body["outcome"] for _, body in answers] == ["applied", "duplicate", "duplicate"]
    await kube.wait_pi(ns, "dup", lambda o: "succeeded" in o["status"].get("published", []), what="published")
    assert len(await messages(sandbox.kafka, running.tenant.topics.succeeded, "4001", 1)) == 1
    ledger = await fetch(running.tenant.database_url, "SELECT processed, outcome FROM payment_events "
                         "WHERE stripe_event_id = $1", event["id"])
    assert ledger == [{"processed": True, "outcome": "applied"}]


async def test_concurrent_duplicates_leave_applied_in_the_ledger(
        sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns, url, secret = running.namespace, running.tenant.webhook_url, running.tenant.webhook_secret
    intent = await _intent(sandbox, kube, ns, "racing", "4007")
    event = stripe_event("payment_intent.succeeded", _as(intent, "succeeded", amount_received=1999))
    answers = await asyncio.gather(*(deliver(url, event, secret) for _ in range(8)))
    assert [status for status, _ in answers] == [200] * 8
    outcomes = sorted(body["outcome"] for _, body in answers)
    assert "applied" in outcomes and set(outcomes) <= {"applied", "duplicate"}, outcomes
    ledger = await fetch(running.tenant.database_url, "SELECT processed, outcome FROM payment_events "
                         "WHERE stripe_event_id = $1", event["id"])
    assert ledger == [{"processed": True, "outcome": "applied"}]


async def test_redelivery_after_a_crash_before_the_ledger_update_records_applied(
        sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns, url, secret = running.namespace, running.tenant.webhook_url, running.tenant.webhook_secret
    intent = await _intent(sandbox, kube, ns, "crashed", "4008")
    event = stripe_event("payment_intent.succeeded", _as(intent, "succeeded", amount_received=1999))
    assert (await deliver(url, event, secret))[1]["outcome"] == "applied"
    # The receiver died after patching status, before marking the event processed.
    await fetch(running.tenant.database_url, "UPDATE payment_events SET processed = false, outcome = NULL "
                "WHERE stripe_event_id = $1", event["id"])
    assert (await deliver(url, event, secret))[1]["outcome"] == "applied"
    ledger = await fetch(running.tenant.database_url, "SELECT processed, outcome FROM payment_events "
                         "WHERE stripe_event_id = $1", event["id"])
    assert ledger == [{"processed": True, "outcome": "applied"}]


async def test_older_event_after_newer_changes_nothing(sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns, url, secret = running.namespace, running.tenant.webhook_url, running.tenant.webhook_secret
    intent = await _intent(sandbox, kube, ns, "order", "4002")
    now = int(time.time())
    succeeded = stripe_event("payment_intent.succeeded", _as(intent, "succeeded"), created=now + 5)
    processing = stripe_event("payment_intent.processing", _as(intent, "processing"), created=now + 2)
    failed_same_second = stripe_event(
        "payment_intent.payment_failed",
        _as(intent, "requires_payment_method", last_payment_error={"code": "card_declined"}), created=now + 5)
    assert (await deliver(url, succeeded, secret))[1]["outcome"] == "applied"
    assert (await deliver(url, processing, secret))[1]["outcome"] == "stale"
    assert (await deliver(url, failed_same_second, secret))[1]["outcome"] == "stale"
    pi = await kube.get_pi(ns, "order")
    assert pi is not None
    assert pi["status"]["phase"] == "Succeeded"
    assert pi["status"]["stripe"]["lastEventId"] == succeeded["id"]


async def test_bad_deliveries_get_the_right_status_codes(sandbox: Sandbox, running: Running, kube: Kube) -> None:
    url, secret = running.tenant.webhook_url, running.tenant.webhook_secret
    event = stripe_event("payment_intent.succeeded", {"id": "pi_x", "object": "payment_intent",
                                                       "status": "succeeded", "metadata": {}})
    assert (await deliver(url, event, "whsec_wrong"))[0] == 400
    assert (await deliver(url, event, secret, signature=""))[0] == 400
    assert (await deliver(url, event, secret, timestamp=int(time.time()) - 301))[0] == 400
    assert (await deliver(url, b"{not json", secret))[0] == 400
    assert (await deliver(url, b'{"id": 1}', secret))[0] == 400
    assert (await deliver(url, b"x" * (1024 * 1024 + 1), secret))[0] == 413
    unknown_type = stripe_event("customer.created", {"id": "cus_1", "object": "customer"})
    assert await deliver(url, unknown_type, secret) == (200, {"received": True, "outcome": "unhandled"})
    foreign = stripe_event("payment_intent.succeeded", {"id": "pi_foreign", "object": "payment_intent",
                                                         "status": "succeeded", "metadata": {}})
    assert (await deliver(url, foreign, secret))[1]["outcome"] == "unknown_payment"
    recorded = await fetch(running.tenant.database_url,
                           "SELECT stripe_event_id, outcome FROM payment_events ORDER BY id")
    assert recorded == [{"stripe_event_id": unknown_type["id"], "outcome": "unhandled"},
                        {"stripe_event_id": foreign["id"], "outcome": "unknown_payment"}]
    # The alias route is the same receiver.
    alias = url.replace("/payments/webhook", "/webhooks/stripe")
    assert (await deliver(alias, unknown_type, secret))[1]["outcome"] == "duplicate"


async def test_postgres_down_answers_503_and_the_retry_succeeds(
        sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns, url, secret = running.namespace, running.tenant.webhook_url, running.tenant.webhook_secret
    intent = await _intent(sandbox, kube, ns, "outage", "4004")
    event = stripe_event("payment_intent.succeeded", _as(intent, "succeeded", amount_received=1999))
    await sandbox.postgres.stop()
    try:
        status, body = await deliver(url, event, secret)
        assert status == 503, body
    finally:
        await sandbox.postgres.start()

    async def retry() -> dict[str, Any] | None:
        status, body = await deliver(url, event, secret)
        return body if status == 200 else None
    assert (await wait_for(retry, what="a 200 after Postgres is back"))["outcome"] == "applied"
    await kube.phase_is(ns, "outage", "Succeeded")


@pytest.mark.stops_kube_api
async def test_kubernetes_down_answers_503(sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns, url, secret = running.namespace, running.tenant.webhook_url, running.tenant.webhook_secret
    intent = await _intent(sandbox, kube, ns, "k8s-outage", "4005")
    event = stripe_event("payment_intent.succeeded", _as(intent, "succeeded"))
    await sandbox.kube_controls.stop_api()
    try:
        status, _ = await deliver(url, event, secret)
        assert status == 503
    finally:
        await sandbox.kube_controls.start_api()
    status, body = await deliver(url, event, secret)
    assert (status, body["outcome"]) == (200, "applied")
    await kube.phase_is(ns, "k8s-outage", "Succeeded")


async def test_health_readiness_and_metrics(running: Running) -> None:
    import aiohttp

    base = running.tenant.webhook_url.rsplit("/payments", 1)[0]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/healthz") as response:  # as the Go payment-service answered it
            assert (response.status, response.content_type, await response.text()) == (200, "text/plain", "ok")
        async with session.get(f"{base}/readyz") as response:
            assert response.status == 200, await response.text()
        async with session.get(f"{base}/metrics") as response:
            assert response.status == 404  # not on the port the internet reaches
        forged = stripe_event("customer.created", {})
        assert (await deliver(running.tenant.webhook_url, forged, "whsec_wrong"))[0] == 400
        async with session.get(running.webhook.metrics_url) as response:
            scrape = await response.text()
    assert 'kubepay_webhook_events_total{outcome="rejected",type="invalid"}' in scrape
    assert 'kubepay_webhook_duration_seconds_count{status="400"}' in scrape
    assert f'kubepay_build_info{{stripe_api_version="{STRIPE_API_VERSION}",version="{__version__}"}} 1.0' in scrape
    assert running.tenant.webhook_secret not in running.webhook.logs()


async def test_events_for_another_namespace_are_left_to_its_release(
        sandbox: Sandbox, running: Running, kube: Kube) -> None:
    intent = await _intent(sandbox, kube, running.namespace, "mine", "4006")
    elsewhere = {**intent, "status": "succeeded",
                 "metadata": {**intent["metadata"], "kubepay_namespace": "someone-else"}}
    status, body = await deliver(running.tenant.webhook_url, stripe_event("payment_intent.succeeded", elsewhere),
                                 running.tenant.webhook_secret)
    assert (status, body["outcome"]) == (200, "unknown_payment")
    pi = await kube.get_pi(running.namespace, "mine")
    assert pi is not None
    assert pi["status"]["phase"] == "Pending"
    # Not ledgered here: releases sharding by namespace may share one database, and the ledger records an
    # event once, for the release that applies it.
    assert await fetch(running.tenant.database_url, "SELECT stripe_event_id FROM payment_events") == []


def _log_records(text: str) -> list[dict[str, Any]]:
    records = []
    for line in text.splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


async def test_log_lines_name_the_resource_and_rejections_are_warnings_and_successes_are_quiet(
        sandbox: Sandbox, running: Running, kube: Kube) -> None:
    ns, url, secret = running.namespace, running.tenant.webhook_url, running.tenant.webhook_secret
    intent = await _intent(sandbox, kube, ns, "logged", "4009")
    pi = await kube.get_pi(ns, "logged")
    assert pi is not None
    uid = pi["metadata"]["uid"]
    marker = "payload-must-not-be-logged"
    forged = stripe_event("payment_intent.succeeded", {**_as(intent, "succeeded"), "description": marker})
    assert (await deliver(url, forged, "whsec_wrong"))[0] == 400
    event = stripe_event("payment_intent.succeeded", _as(intent, "succeeded", amount_received=1999))
    assert (await deliver(url, event, secret))[1]["outcome"] == "applied"
    await kube.wait_pi(ns, "logged", lambda o: "succeeded" in o["status"].get("published", []), what="published")

    records = _log_records(running.webhook.logs())
    [rejected] = [r for r in records if "rejected" in r["message"]]
    assert rejected["severity"] == "warn" and "signature" in rejected["message"]
    assert marker not in running.webhook.logs()
    # A delivery applied, a milestone published: routine successes, not logged at INFO (the k8s events are).
    assert not [r for r in records if r.get("stripe_event_id") == event["id"]], records

    async def controller_lines() -> list[dict[str, Any]] | None:
        records = _log_records(running.operator.logs())
        return [r for r in records if r["message"].startswith("Succeeded: ")] or None
    [succeeded] = await wait_for(controller_lines, what="the controller's line of the Succeeded k8s event")
    assert (succeeded["object"]["name"], succeeded["object"]["uid"]) == ("logged", uid)
    operator_records = _log_records(running.operator.logs())
    [created] = [r for r in operator_records
                 if r["message"].startswith("StripeIntentCreated: Created Stripe PaymentIntent")]
    assert (created["object"]["name"], created["object"]["uid"]) == ("logged", uid)  # each k8s event is logged
    assert not [r for r in operator_records if r["message"].endswith(" succeeded.")], operator_records
    # One start-up line each, with the version, the Stripe API version, the namespaces and the features.
    for process, command in ((running.operator, "operator"), (running.webhook, "webhook")):
        [start] = [r for r in _log_records(process.logs()) if r.get("command") == command]
        assert start["version"] == __version__ and start["stripe_api_version"] == STRIPE_API_VERSION, start
        assert start["namespaces"] == [ns] and f"metrics:{process.env['KUBEPAY_METRICS_PORT']}" in start["features"]
