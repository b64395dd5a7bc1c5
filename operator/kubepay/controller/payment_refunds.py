"""kopf handlers for PaymentRefund: refuse what must not reach Stripe, refund once, mirror, publish."""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

import kopf

from kubepay import logs
from kubepay.controller import refusals
from kubepay.controller.payment_intents import runtime
from kubepay.controller.reconcile import RETRYABLE, Logger, backoff, jittered, reconcile_forever, wake_event
from kubepay.controller.runtime import Runtime
from kubepay.kube import k8s_events
from kubepay.kube.client import GROUP, PAYMENT_INTENTS, VERSION, NotFound
from kubepay.kube.status_writer import apply_observation, write_not_synced, write_status
from kubepay.mirror import downstream
from kubepay.model import identity
from kubepay.model.conditions import observed, set_condition
from kubepay.model.phases import observe_intent
from kubepay.model.refunds import (
    FINAL,
    PAYMENT_REFUNDS,
    RefundObservation,
    RefundPhase,
    RefundRefused,
    create_params,
    refund_amount,
    refund_status_patch,
)
from kubepay.stripe.gateway import StripeRejected

log = logging.getLogger(__name__)


async def parent_of(rt: Runtime, namespace: str, spec: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return await rt.kube.get_custom(PAYMENT_INTENTS, namespace, spec["paymentIntentName"])
    except NotFound:
        return None


@kopf.on.resume(GROUP, VERSION, PAYMENT_REFUNDS, id="stripe-refund")
@kopf.on.create(GROUP, VERSION, PAYMENT_REFUNDS, id="stripe-refund")
@refusals.reports_refusals(PAYMENT_REFUNDS)
async def ensure_stripe_refund(body: kopf.Body, status: kopf.Status, memo: kopf.Memo, retry: int,
                               **_: Any) -> None:
    """Check again what admission checked (it can be bypassed), then create the Stripe refund once."""
    if (status.get("stripe") or {}).get("refundId") or status.get("phase") == RefundPhase.FAILED.value:
        return
    rt = runtime(memo)
    raw = dict(body)
    meta, spec = raw["metadata"], raw["spec"]
    amount: int | None = spec.get("amount")
    try:
        parent = await parent_of(rt, meta["namespace"], spec)
        amount = refund_amount(spec, parent)
        assert parent is not None
        intent_id = parent["status"]["stripe"]["paymentIntentId"]
        refund = await rt.gateway.create_refund(create_params(meta, spec, intent_id, amount),
                                                identity.refund_idempotency_key(meta["uid"]))
    except RefundRefused as exc:
        await _refuse(rt, raw, "RefundRefused", exc.code, str(exc), amount)
        raise kopf.PermanentError(str(exc)) from None
    except StripeRejected as exc:
        await _refuse(rt, raw, "StripeRejected", exc.code, f"Stripe refused the refund: {exc.message}", amount)
        raise kopf.PermanentError(str(exc)) from None
    except RETRYABLE as exc:
        raise kopf.TemporaryError(str(exc), delay=backoff(retry)) from None
    obs = RefundObservation.of(refund, created=int(refund.get("created") or time.time()))
    generation = meta.get("generation")

    def compute(current_body: dict[str, Any]) -> dict[str, Any] | None:
        patch = refund_status_patch(current_body, obs) or {}
        conditions = patch.get("conditions") or (current_body.get("status") or {}).get("conditions")
        patch.update({
            "refundId": str(identity.refund_id(meta["uid"])),
            **observed(set_condition(conditions, "Synced", True, "StripeRefundCreated",
                                     f"Stripe refund {refund['id']} exists.", generation), generation),
        })
        return patch

    await write_status(rt.kube, PAYMENT_REFUNDS, meta["namespace"], meta["name"], meta["uid"], compute)
    k8s_events.info(body, "StripeRefundCreated",
                    f"Created Stripe refund {refund['id']} of {refund['amount']} {refund['currency']}")


async def _refuse(rt: Runtime, body: dict[str, Any], reason: str, code: str, message: str,
                  amount: int | None) -> None:
    """Phase Failed for good, with the amount asked for (so `kubectl get pr` shows it), and a Warning."""
    extra: dict[str, Any] = {"phase": RefundPhase.FAILED.value, "failure": {"code": code, "message": message}}
    if amount is not None:
        extra["amount"] = amount
    await write_not_synced(rt.kube, PAYMENT_REFUNDS, body, reason, message, extra, failed=True)
    k8s_events.warn(body, reason, message)


@kopf.on.event(GROUP, VERSION, PAYMENT_REFUNDS)
async def wake_refund(memo: kopf.Memo, **_: Any) -> None:
    wake_event(memo).set()


@kopf.daemon(GROUP, VERSION, PAYMENT_REFUNDS, id="mirror-refund", cancellation_timeout=10)
async def mirror_refund(body: kopf.Body, memo: kopf.Memo, logger: Logger, **_: Any) -> None:
    """Mirror the refund downstream and keep the parent PaymentIntent's refunded amount true."""
    rt = runtime(memo)
    state: dict[str, Any] = {"phase": body.get("status", {}).get("phase"), "published": [], "resync": False}

    async def step() -> float | None:
        snapshot = copy.deepcopy(dict(body))
        if state["resync"]:
            state["resync"] = False
            await _resync_refund(rt, snapshot)
        phase = (snapshot.get("status") or {}).get("phase")
        parent = await parent_of(rt, snapshot["metadata"]["namespace"], snapshot["spec"])
        if parent is not None:
            if phase and phase != state["phase"]:
                await _refresh_parent(rt, parent)
                k8s_events.post(body, phase == RefundPhase.FAILED.value, f"Refund{phase}",
                                f"The refund's phase changed from {state['phase']} to {phase}" if state["phase"]
                                else f"The refund's phase is {phase}")
                state["phase"] = phase
            state["published"] = await downstream.sync_refund(snapshot, parent, rt.store, rt.publisher, rt.kube,
                                                              rt.settings, state["published"])
        return None if phase in FINAL else jittered(rt.settings.resync_seconds)

    await reconcile_forever(wake_event(memo), step, lambda: state.update(resync=True),
                            lambda exc: refusals.report(rt.kube, PAYMENT_REFUNDS, body, exc), logger)


async def _refresh_parent(rt: Runtime, parent: dict[str, Any]) -> None:
    """Stripe's charge knows the refunded total: write it (and the phase it implies) into the parent."""
    intent_id = ((parent.get("status") or {}).get("stripe") or {}).get("paymentIntentId")
    if not intent_id:
        return
    meta = parent["metadata"]
    try:
        intent = await rt.gateway.retrieve_intent(intent_id)
    except StripeRejected as exc:
        log.warning("could not read %s: %s", intent_id, exc, extra=logs.about(meta))
        return
    await apply_observation(rt.kube, meta["namespace"], meta["name"], meta["uid"],
                            observe_intent(intent, created=int(time.time())))


async def _resync_refund(rt: Runtime, body: dict[str, Any]) -> None:
    refund_id = ((body.get("status") or {}).get("stripe") or {}).get("refundId")
    if not refund_id:
        return
    try:
        refund = await rt.gateway.retrieve_refund(refund_id)
    except (StripeRejected, *RETRYABLE) as exc:
        log.warning("refund resync failed: %s", exc, extra=logs.about(body["metadata"], "PaymentRefund"))
        return
    meta = body["metadata"]
    obs = RefundObservation.of(refund, created=int(time.time()))
    await write_status(rt.kube, PAYMENT_REFUNDS, meta["namespace"], meta["name"], meta["uid"],
                       lambda current: refund_status_patch(current, obs))
