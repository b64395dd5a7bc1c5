"""Every kopf registration of the controller, in one place; each handler is thin and delegates.

Handler ids are part of what kopf stores on each object (progress annotations), so they never change.
The creation handlers are filtered (`when=`): after a restart, kopf does no work at all for the thousands of
payments that already have their Stripe object, so a new payment is not queued behind them.
The error policy (`refusals.error_policy`) is applied here, once per handler that needs it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import prometheus_client

from kubepay.config import Settings
from kubepay.controller import admission, backfill, payment_intents, payment_refunds, peering, reconcile
from kubepay.controller.reconcile import Logger, runtime
from kubepay.controller.refusals import error_policy
from kubepay.controller.runtime import Runtime
from kubepay.kube import k8s_events
from kubepay.model.resources import GROUP, PAYMENT_INTENTS, PAYMENT_REFUNDS, VERSION, PaymentIntent, PaymentRefund
from kubepay.orders import consumer as orders_consumer


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
    k8s_events.configure(settings)
    config: Settings = memo["settings"]
    # One exact namespace needs no namespace scanning (nor the RBAC to list/watch namespaces).
    settings.scanning.disabled = config.namespace is not None
    peering.configure(settings, config)
    if config.admission_port:
        admission.configure_server(settings, config)
    if config.metrics_port and "metrics_server" not in memo:  # bound once, should start-up be retried
        memo["metrics_server"] = prometheus_client.start_http_server(config.metrics_port)
    rt = memo["runtime"] = await Runtime.start(config)
    # The catch-up may page through days of events: it runs beside the watches, not before them.
    memo["backfill"] = asyncio.create_task(backfill.replay_missed_events(rt))
    memo["retention"] = asyncio.create_task(rt.retention.run())
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
    for task in ("backfill", "retention"):
        if task in memo:
            memo[task].cancel()
    if "orders_consumer" in memo:
        await memo["orders_consumer"].stop()
    if "runtime" in memo:
        await runtime(memo).close()


@kopf.on.event(GROUP, VERSION, PAYMENT_INTENTS)
async def changed_intent(body: kopf.Body, memo: kopf.Memo, logger: Logger, **_: Any) -> None:
    """Any change wakes the daemon; a finished payment (no daemon) is mirrored here."""
    await reconcile.wake(payment_intents.KIND, body, memo, logger)


@kopf.on.event(GROUP, VERSION, PAYMENT_REFUNDS)
async def changed_refund(body: kopf.Body, memo: kopf.Memo, logger: Logger, **_: Any) -> None:
    await reconcile.wake(payment_refunds.KIND, body, memo, logger)


# --- PaymentIntent ------------------------------------------------------------------------------------

@kopf.on.resume(GROUP, VERSION, PAYMENT_INTENTS, id="stripe-intent", when=payment_intents.needs_stripe_intent)
@kopf.on.create(GROUP, VERSION, PAYMENT_INTENTS, id="stripe-intent", when=payment_intents.needs_stripe_intent)
@error_policy(PAYMENT_INTENTS)
async def ensure_stripe_intent(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    await payment_intents.ensure_stripe_intent(runtime(memo), body, PaymentIntent.parse(body), retry)


@kopf.daemon(GROUP, VERSION, PAYMENT_INTENTS, id="mirror", cancellation_timeout=10,
             when=payment_intents.KIND.unfinished)
async def follow_intent(body: kopf.Body, memo: kopf.Memo, logger: Logger, **_: Any) -> None:
    await reconcile.follow(payment_intents.KIND, body, memo, logger)


@kopf.on.delete(GROUP, VERSION, PAYMENT_INTENTS, id="finalize")
@error_policy(PAYMENT_INTENTS)
async def finalize(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    state = reconcile.loop_state(payment_intents.KIND, body, memo)
    await payment_intents.finalize(runtime(memo), body, PaymentIntent.parse(body), retry, state)


# --- PaymentRefund ------------------------------------------------------------------------------------

@kopf.on.resume(GROUP, VERSION, PAYMENT_REFUNDS, id="stripe-refund", when=payment_refunds.needs_stripe_refund)
@kopf.on.create(GROUP, VERSION, PAYMENT_REFUNDS, id="stripe-refund", when=payment_refunds.needs_stripe_refund)
@error_policy(PAYMENT_REFUNDS)
async def ensure_stripe_refund(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await payment_refunds.ensure_stripe_refund(runtime(memo), body, PaymentRefund.parse(body))


@kopf.daemon(GROUP, VERSION, PAYMENT_REFUNDS, id="mirror-refund", cancellation_timeout=10,
             when=payment_refunds.KIND.unfinished)
async def follow_refund(body: kopf.Body, memo: kopf.Memo, logger: Logger, **_: Any) -> None:
    await reconcile.follow(payment_refunds.KIND, body, memo, logger)


# --- Admission: only with KUBEPAY_ADMISSION_PORT (kopf refuses to start with admission handlers and no server)

def register_admission() -> None:
    kopf.on.validate(GROUP, VERSION, PAYMENT_REFUNDS, id="validate-paymentrefund",
                     operations=["CREATE"])(admission.validate_refund)
    kopf.on.validate(GROUP, VERSION, PAYMENT_INTENTS, id="validate-paymentintent",
                     operations=["CREATE", "UPDATE"])(admission.validate_intent)
