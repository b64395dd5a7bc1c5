"""kopf handlers for PaymentIntent: create in Stripe, mirror status downstream, resync, finalize."""

from __future__ import annotations

import asyncio
import copy
import logging
import random
import time
from typing import Any

import kopf
import prometheus_client

from kubepay import downstream, identity, metrics
from kubepay.conditions import set_condition
from kubepay.config import Settings
from kubepay.intents import create_intent
from kubepay.kube_client import GROUP, PAYMENT_INTENTS, VERSION, Conflict, KubeUnavailable
from kubepay.phases import FINAL, Phase, observe_intent
from kubepay.publisher import PublishFailed
from kubepay.runtime import Runtime
from kubepay.status_writer import apply_observation
from kubepay.store import StoreUnavailable
from kubepay.stripe_gateway import StripeRejected, StripeUnavailable

Logger = logging.Logger | logging.LoggerAdapter  # type: ignore[type-arg]
RETRYABLE = (StripeUnavailable, KubeUnavailable, StoreUnavailable, PublishFailed, Conflict)
CANCELABLE = {"requires_payment_method", "requires_capture", "requires_confirmation", "requires_action",
              "processing"}
MAX_BACKOFF = 300.0


def backoff(retry: int, base: float = 1.0) -> float:
    return float(min(MAX_BACKOFF, base * 2 ** min(retry, 10)) * random.uniform(0.8, 1.2))


def runtime(memo: kopf.Memo) -> Runtime:
    rt: Runtime = memo["runtime"]
    return rt


def wake_event(memo: kopf.Memo) -> asyncio.Event:
    """One per resource: the watch-event handler sets it, the resource's daemon waits on it."""
    event: asyncio.Event | None = memo.get("wake")
    if event is None:
        event = memo["wake"] = asyncio.Event()
    return event


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = "kubepay.io/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kubepay.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="kubepay.io", key="last-handled-configuration"
    )
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 15
    settings.networking.request_timeout = 30
    settings.posting.level = logging.INFO
    config: Settings = memo["settings"]
    if config.metrics_port:
        prometheus_client.start_http_server(config.metrics_port)
    memo["runtime"] = await Runtime.start(config)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if "runtime" in memo:
        await runtime(memo).close()


@kopf.on.resume(GROUP, VERSION, PAYMENT_INTENTS, id="stripe-intent")
@kopf.on.create(GROUP, VERSION, PAYMENT_INTENTS, id="stripe-intent")
async def ensure_stripe_intent(
    body: kopf.Body, status: kopf.Status, memo: kopf.Memo, retry: int, logger: Logger, **_: Any
) -> None:
    """Create the Stripe intent unless status already names one (a resume, or a repeated create)."""
    if (status.get("stripe") or {}).get("paymentIntentId") or body.meta.get("deletionTimestamp"):
        return
    rt = runtime(memo)
    raw = dict(body)
    try:
        intent = await create_intent(rt, raw)
    except StripeRejected as exc:
        await _record_rejection(rt, raw, exc)
        kopf.warn(body, reason="StripeRejected", message=f"Stripe refused the PaymentIntent: {exc}")
        raise kopf.PermanentError(f"Stripe refused the PaymentIntent: {exc}") from None
    except RETRYABLE as exc:
        kopf.warn(body, reason="Retrying", message=f"Stripe intent not created yet: {exc}")
        raise kopf.TemporaryError(str(exc), delay=backoff(retry)) from None
    kopf.info(
        body, reason="StripeIntentCreated",
        message=f"Created Stripe PaymentIntent {intent['id']} for {intent['amount']} {intent['currency']}",
    )


async def _record_rejection(rt: Runtime, body: dict[str, Any], exc: StripeRejected) -> None:
    meta = body["metadata"]
    current = body.get("status") or {}
    generation = meta.get("generation")
    conditions = set_condition(current.get("conditions"), "Synced", False, "StripeRejected", str(exc), generation)
    conditions = set_condition(conditions, "Ready", False, Phase.FAILED.value, str(exc), generation)
    await rt.kube.patch_status(
        PAYMENT_INTENTS, meta["namespace"], meta["name"],
        {
            "phase": Phase.FAILED.value,
            "failure": exc.failure(),
            "paymentId": str(identity.payment_id(meta["uid"])),
            "observedGeneration": generation,
            "conditions": conditions,
        },
        meta.get("resourceVersion"),
    )


@kopf.on.event(GROUP, VERSION, PAYMENT_INTENTS)
async def wake(memo: kopf.Memo, **_: Any) -> None:
    wake_event(memo).set()


@kopf.daemon(GROUP, VERSION, PAYMENT_INTENTS, id="mirror", cancellation_timeout=10)
async def mirror(body: kopf.Body, memo: kopf.Memo, logger: Logger, **_: Any) -> None:
    """Per resource, for its lifetime: mirror status downstream on every change, resync Stripe when idle."""
    rt = runtime(memo)
    signal = wake_event(memo)
    last_phase = body.get("status", {}).get("phase")
    published: list[str] = []
    failures = 0
    while True:
        signal.clear()
        snapshot = copy.deepcopy(dict(body))
        phase = snapshot.get("status", {}).get("phase")
        if phase and phase != last_phase:
            metrics.TRANSITIONS.labels(phase).inc()
            kopf.event(body, type="Warning" if phase == Phase.FAILED.value else "Normal",
                       reason=phase, message=_transition_message(snapshot, last_phase))
            last_phase = phase
        try:
            published = await downstream.sync(snapshot, rt.store, rt.publisher, rt.kube, rt.settings, published)
            failures = 0
        except RETRYABLE as exc:
            failures += 1
            logger.warning("mirroring failed, retrying: %s", exc)
            await asyncio.sleep(backoff(failures))
            continue
        idle = None if phase in FINAL else rt.settings.resync_seconds * random.uniform(0.9, 1.1)
        try:
            await asyncio.wait_for(signal.wait(), timeout=idle)
        except TimeoutError:
            await _resync(rt, snapshot, logger)


def _transition_message(body: dict[str, Any], previous: str | None) -> str:
    status = body.get("status") or {}
    failure = status.get("failure") or {}
    stripe_status = (status.get("stripe") or {}).get("status", "unknown")
    message = f"Phase {previous or 'none'} -> {status.get('phase')} (Stripe: {stripe_status})"
    return f"{message}: {failure.get('message')}" if failure.get("message") else message


async def _resync(rt: Runtime, body: dict[str, Any], logger: Logger) -> None:
    """Read Stripe and repair status: webhooks get lost."""
    intent_id = (body.get("status", {}).get("stripe") or {}).get("paymentIntentId")
    if not intent_id:
        return
    meta = body["metadata"]
    try:
        intent = await rt.gateway.retrieve_intent(intent_id)
        obs = observe_intent(intent, created=int(time.time()))
        if await apply_observation(rt.kube, meta["namespace"], meta["name"], meta["uid"], obs):
            logger.info("resync repaired status to %s", obs.phase.value)
    except (StripeRejected, *RETRYABLE) as exc:
        logger.warning("resync failed: %s", exc)


@kopf.on.delete(GROUP, VERSION, PAYMENT_INTENTS, id="finalize")
async def finalize(
    body: kopf.Body, spec: kopf.Spec, status: kopf.Status, memo: kopf.Memo, retry: int, **_: Any
) -> None:
    """Cancel a still-cancelable Stripe intent (deletionPolicy Cancel) and mirror the outcome."""
    rt = runtime(memo)
    intent_id = (status.get("stripe") or {}).get("paymentIntentId")
    if not intent_id or spec.get("deletionPolicy", "Cancel") == "Orphan":
        if intent_id:
            kopf.info(body, reason="Orphaned", message=f"Left Stripe PaymentIntent {intent_id} as it is")
        return
    meta = body.meta
    try:
        intent = await rt.gateway.retrieve_intent(intent_id)
        if intent["status"] in CANCELABLE:
            intent = await rt.gateway.cancel_intent(intent_id, identity.cancel_idempotency_key(meta["uid"]))
            kopf.info(body, reason="Canceled", message=f"Canceled Stripe PaymentIntent {intent_id}")
        obs = observe_intent(intent, created=int(time.time()))
        await apply_observation(rt.kube, meta["namespace"], meta["name"], meta["uid"], obs)
        fresh = await rt.kube.get_custom(PAYMENT_INTENTS, meta["namespace"], meta["name"])
        await downstream.sync(fresh, rt.store, rt.publisher, rt.kube, rt.settings)
    except StripeRejected as exc:
        kopf.warn(body, reason="CancelFailed",
                  message=f"Stripe PaymentIntent {intent_id} left in Stripe: {exc}")
    except RETRYABLE as exc:
        raise kopf.TemporaryError(str(exc), delay=backoff(retry)) from None
