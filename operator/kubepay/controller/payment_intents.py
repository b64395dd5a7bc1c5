"""kopf handlers for PaymentIntent: create or adopt in Stripe, follow the spec, mirror, resync, finalize."""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any, NoReturn

import kopf
import prometheus_client

from kubepay import metrics
from kubepay.config import Settings
from kubepay.controller import backfill, refusals
from kubepay.controller.intents import (
    AdoptionRefused,
    SpecRefused,
    adopt_intent,
    create_intent,
    describe,
    reconcile_spec,
    spec_problems,
)
from kubepay.controller.reconcile import RETRYABLE, Logger, backoff, jittered, reconcile_forever, wake_event
from kubepay.controller.runtime import Runtime
from kubepay.kube import k8s_events
from kubepay.kube.client import GROUP, PAYMENT_INTENTS, VERSION
from kubepay.kube.status_writer import apply_observation, write_not_synced
from kubepay.mirror import downstream
from kubepay.model import identity
from kubepay.model.conditions import sentence
from kubepay.model.phases import FINAL, Phase, observe_intent
from kubepay.orders import consumer as orders_consumer
from kubepay.stripe.gateway import StripeRejected

CANCELABLE = {"requires_payment_method", "requires_capture", "requires_confirmation", "requires_action"}
PAUSED_ANNOTATION = "kubepay.io/paused"
# The finalizer gives up (and says so in a Warning event) rather than block deletion forever.
FINALIZER_MAX_TRIES = 5


def runtime(memo: kopf.Memo) -> Runtime:
    rt: Runtime = memo["runtime"]
    return rt


def is_paused(body: kopf.Body | dict[str, Any]) -> bool:
    return str((body.get("metadata") or {}).get("annotations", {}).get(PAUSED_ANNOTATION, "")).lower() == "true"


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: Logger, **_: Any) -> None:
    settings.persistence.finalizer = "kubepay.io/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kubepay.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="kubepay.io", key="last-handled-configuration"
    )
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 15
    settings.networking.request_timeout = 30
    k8s_events.configure(settings)
    config: Settings = memo["settings"]
    # One exact namespace needs no namespace scanning (nor the RBAC to list/watch namespaces).
    settings.scanning.disabled = config.namespace is not None
    if config.admission_port:
        from kubepay.controller.admission import configure_server

        configure_server(settings, config)
    if config.metrics_port and "metrics_server" not in memo:  # bound once, should start-up be retried
        memo["metrics_server"] = prometheus_client.start_http_server(config.metrics_port)
    rt = memo["runtime"] = await Runtime.start(config)
    # The catch-up may page through days of events: it runs beside the watches, not before them.
    memo["backfill"] = asyncio.create_task(backfill.replay_missed_events(rt))
    if config.orders_consumer_in_operator:
        memo["orders_consumer"] = await orders_consumer.start_background(config, rt.kube)


@kopf.on.probe(id="runtime")
async def runtime_ready(memo: kopf.Memo, **_: Any) -> bool:
    """kopf's health endpoint fails until start-up (clients, migrations, backfill) has finished."""
    if "runtime" not in memo:
        raise kopf.TemporaryError("starting up")
    return True


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if "backfill" in memo:
        memo["backfill"].cancel()
    if "orders_consumer" in memo:
        await memo["orders_consumer"].stop()
    if "runtime" in memo:
        await runtime(memo).close()


@kopf.on.resume(GROUP, VERSION, PAYMENT_INTENTS, id="stripe-intent")
@kopf.on.create(GROUP, VERSION, PAYMENT_INTENTS, id="stripe-intent")
@refusals.reports_refusals(PAYMENT_INTENTS)
async def ensure_stripe_intent(body: kopf.Body, status: kopf.Status, memo: kopf.Memo, retry: int, **_: Any) -> None:
    """Create (or adopt) the Stripe intent unless status already names one."""
    if (status.get("stripe") or {}).get("paymentIntentId") or body.meta.get("deletionTimestamp"):
        return
    if is_paused(body):
        raise kopf.TemporaryError("paused: the Stripe intent will be created when resumed", delay=10)
    rt = runtime(memo)
    raw = dict(body)
    adopt = body.spec.get("stripePaymentIntentId")
    if not adopt and (problems := spec_problems(body.spec)):
        message = f"Stripe would refuse the spec, so it was not sent: {describe(problems)}"
        await _fail_for_good(rt, body, "SpecInvalid", message, {"code": "spec_invalid",
                                                                       "message": describe(problems)})
    try:
        intent = await (adopt_intent(rt, raw, adopt) if adopt else create_intent(rt, raw))
    except AdoptionRefused as exc:
        await write_not_synced(rt.kube, PAYMENT_INTENTS, raw, "AdoptionRefused", str(exc))
        k8s_events.warn(body, "AdoptionRefused", str(exc))
        raise kopf.PermanentError(str(exc)) from None
    except StripeRejected as exc:
        message = f"Stripe refused the PaymentIntent: {exc}"
        if not adopt:
            await _fail_for_good(rt, body, "StripeRejected", message, exc.failure())
        await write_not_synced(rt.kube, PAYMENT_INTENTS, raw, "StripeRejected", message)
        k8s_events.warn(body, "StripeRejected", message)
        raise kopf.PermanentError(message) from None
    except RETRYABLE as exc:
        k8s_events.warn(body, "Retrying", f"The Stripe PaymentIntent is not created yet: {exc}")
        raise kopf.TemporaryError(str(exc), delay=backoff(retry)) from None
    verb = "Adopted" if adopt else "Created"
    k8s_events.info(body, f"StripeIntent{verb}",
                    f"{verb} Stripe PaymentIntent {intent['id']} for {intent['amount']} {intent['currency']}")


async def _fail_for_good(rt: Runtime, body: kopf.Body, reason: str, message: str,
                              failure: dict[str, str]) -> NoReturn:
    """The payment can never be made from this spec: phase Failed, Failed=True, a Warning; no retries."""
    raw = dict(body)
    await write_not_synced(rt.kube, PAYMENT_INTENTS, raw, reason, message, failed=True,
                           extra={"phase": Phase.FAILED.value, "failure": failure,
                                  "paymentId": str(identity.payment_id(raw["metadata"]["uid"]))})
    k8s_events.warn(body, reason, message)
    raise kopf.PermanentError(message)


@kopf.on.event(GROUP, VERSION, PAYMENT_INTENTS)
async def wake(memo: kopf.Memo, **_: Any) -> None:
    wake_event(memo).set()


@kopf.daemon(GROUP, VERSION, PAYMENT_INTENTS, id="mirror", cancellation_timeout=10)
async def mirror(body: kopf.Body, memo: kopf.Memo, logger: Logger, **_: Any) -> None:
    """Per resource, for its lifetime: follow the spec, mirror status downstream, resync Stripe when idle."""
    rt = runtime(memo)
    state: dict[str, Any] = {
        "phase": body.get("status", {}).get("phase"),
        "paused": False,
        "published": [],
        "resync": True,  # catch up with Stripe once at start: webhooks may have been lost while we were away
    }

    async def step() -> float | None:
        snapshot = copy.deepcopy(dict(body))
        if is_paused(snapshot) != state["paused"]:
            await _announce_pause(rt, body, snapshot, not state["paused"])
            state["paused"] = not state["paused"]
            # Webhooks applied while paused are in status already; what Stripe did meanwhile may not be.
            state["resync"] = not state["paused"]
        if state["paused"]:
            return None
        state["phase"] = _announce_transition(body, snapshot, state["phase"])
        if state["resync"] and snapshot.get("status", {}).get("phase") not in FINAL:
            await _resync(rt, snapshot, logger)
        state["resync"] = False
        await _follow_spec(rt, body, snapshot)
        state["published"] = await downstream.sync(snapshot, rt.store, rt.publisher, rt.kube, rt.settings,
                                                   state["published"])
        return None if snapshot.get("status", {}).get("phase") in FINAL else jittered(rt.settings.resync_seconds)

    await reconcile_forever(wake_event(memo), step, lambda: state.update(resync=True),
                            lambda exc: refusals.report(rt.kube, PAYMENT_INTENTS, body, exc), logger)


async def _announce_pause(rt: Runtime, body: kopf.Body, snapshot: dict[str, Any], paused: bool) -> None:
    meta = snapshot["metadata"]
    await rt.kube.patch_status(PAYMENT_INTENTS, meta["namespace"], meta["name"], {"paused": paused or None}, None)
    if paused:
        k8s_events.info(body, "Paused", f"{PAUSED_ANNOTATION} is true: kubepay leaves this payment alone")
    else:
        k8s_events.info(body, "Resumed", "Reconciling again; catching up with Stripe")


def _announce_transition(body: kopf.Body, snapshot: dict[str, Any], last_phase: str | None) -> str | None:
    status = snapshot.get("status") or {}
    phase = status.get("phase")
    if not phase or phase == last_phase:
        return last_phase
    metrics.TRANSITIONS.labels(phase).inc()
    failure = status.get("failure") or {}
    stripe_status = (status.get("stripe") or {}).get("status")
    message = f"The phase changed from {last_phase} to {phase}" if last_phase else f"The phase is {phase}"
    message += f" (Stripe: {stripe_status})." if stripe_status else "."
    if failure.get("message"):
        message = f"{message} {sentence(failure['message'])}"
    k8s_events.post(body, phase == Phase.FAILED.value, phase, message)
    return str(phase)


async def _follow_spec(rt: Runtime, body: kopf.Body, snapshot: dict[str, Any]) -> None:
    try:
        done = await reconcile_spec(rt, snapshot)
    except SpecRefused as exc:
        k8s_events.warn(body, exc.reason, str(exc))
        return
    except StripeRejected as exc:
        message = f"Stripe refused the change: {exc}"
        k8s_events.warn(body, "StripeRejected", message)
        await write_not_synced(rt.kube, PAYMENT_INTENTS, snapshot, "StripeRejected", message)
        return
    if done:
        k8s_events.info(body, "SpecApplied", done)


async def _resync(rt: Runtime, body: dict[str, Any], logger: Logger) -> None:
    """Read Stripe and repair status: webhooks get lost."""
    intent_id = (body.get("status", {}).get("stripe") or {}).get("paymentIntentId")
    if not intent_id:
        return
    meta = body["metadata"]
    try:
        intent = await rt.gateway.retrieve_intent(intent_id)
    except StripeRejected as exc:
        logger.warning("resync failed: %s", exc)
        return
    obs = observe_intent(intent, created=int(time.time()))
    if await apply_observation(rt.kube, meta["namespace"], meta["name"], meta["uid"], obs):
        logger.info("resync repaired status to %s", obs.phase.value)


@kopf.on.delete(GROUP, VERSION, PAYMENT_INTENTS, id="finalize")
@refusals.reports_refusals(PAYMENT_INTENTS)
async def finalize(body: kopf.Body, spec: kopf.Spec, status: kopf.Status, memo: kopf.Memo, retry: int,
                   **_: Any) -> None:
    """Cancel a still-cancelable Stripe intent (deletionPolicy Cancel) and mirror the outcome."""
    rt = runtime(memo)
    intent_id = (status.get("stripe") or {}).get("paymentIntentId")
    if not intent_id or status.get("phase") in FINAL:
        return
    if spec.get("deletionPolicy", "Cancel") == "Orphan":
        k8s_events.info(body, "Orphaned", f"Left Stripe PaymentIntent {intent_id} in Stripe as it is")
        return
    meta = body.meta
    try:
        intent = await rt.gateway.retrieve_intent(intent_id)
        if intent["status"] in CANCELABLE:
            intent = await rt.gateway.cancel_intent(intent_id, identity.cancel_idempotency_key(meta["uid"]))
            k8s_events.info(body, "Canceled", f"Canceled Stripe PaymentIntent {intent_id}")
        await apply_observation(rt.kube, meta["namespace"], meta["name"], meta["uid"],
                                observe_intent(intent, created=int(time.time())))
        fresh = await rt.kube.get_custom(PAYMENT_INTENTS, str(meta["namespace"]), str(meta["name"]))
        await downstream.sync(fresh, rt.store, rt.publisher, rt.kube, rt.settings)
    except (StripeRejected, *RETRYABLE) as exc:
        if retry + 1 >= FINALIZER_MAX_TRIES:
            k8s_events.warn(body, "CancelFailed", f"Gave up after {retry + 1} tries; Stripe PaymentIntent "
                                                  f"{intent_id} is left in Stripe as it was: {exc}")
            return
        raise kopf.TemporaryError(str(exc), delay=backoff(retry)) from None
