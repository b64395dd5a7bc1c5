"""PaymentRefund: refuse what must not reach Stripe, refund once, mirror, keep the parent's refunded amount true.

`controller.handling` calls these through `KIND`; they take the body and the parsed resource.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubepay.controller.outcomes import GiveUp
from kubepay.controller.reconcile import Kind, LoopState, Resync, resync
from kubepay.controller.runtime import Runtime
from kubepay.kube import k8s_events
from kubepay.kube.client import NotFound
from kubepay.kube.status_writer import apply_observation, write_not_synced
from kubepay.mirror import downstream
from kubepay.model import identity
from kubepay.model.conditions import observed, set_condition
from kubepay.model.observations import observe_refund
from kubepay.model.phases import RefundPhase
from kubepay.model.refunds import RefundRefused, create_params, refund_amount
from kubepay.model.resources import PAYMENT_INTENTS, PAYMENT_REFUNDS, PaymentIntent, PaymentRefund, StripeRefund
from kubepay.stripe.gateway import StripeRejected


async def parent_of(rt: Runtime, refund: PaymentRefund) -> PaymentIntent | None:
    try:
        body = await rt.kube.get_custom(PAYMENT_INTENTS, refund.meta.namespace, refund.spec.payment_intent_name)
    except NotFound:
        return None
    return PaymentIntent.parse(body)


def needs_stripe_refund(status: Mapping[str, Any]) -> bool:
    """A refund neither in Stripe nor refused for good yet (read on every change, so it reads two fields alone)."""
    return not StripeRefund.parse(status.get("stripe")).refund_id and status.get("phase") != RefundPhase.FAILED


async def ensure_stripe_refund(rt: Runtime, body: Mapping[str, Any], refund: PaymentRefund, _retry: int) -> None:
    """Check again what admission checked (it can be bypassed), then create the Stripe refund once."""
    if refund.stripe_id or refund.status.phase is RefundPhase.FAILED:
        return
    meta = refund.meta
    amount = refund.spec.amount
    try:
        parent = await parent_of(rt, refund)
        amount = refund_amount(refund.spec, parent)
        assert parent is not None and parent.stripe_id is not None  # a refundable payment has a Stripe intent
        created = await rt.gateway.create_refund(create_params(meta, refund.spec, parent.stripe_id, amount),
                                                 identity.refund_idempotency_key(meta.uid))
    except RefundRefused as exc:
        await _refuse(rt, body, refund, "RefundRefused", exc.code, str(exc), amount)
        raise GiveUp(str(exc)) from None
    except StripeRejected as exc:
        await _refuse(rt, body, refund, "StripeRejected", exc.code, f"Stripe refused the refund: {exc.message}",
                      amount)
        raise GiveUp(str(exc)) from None
    always = {
        "refundId": str(identity.refund_id(meta.uid)),
        **observed(set_condition(refund.status.conditions, "Synced", True, "StripeRefundCreated",
                                 f"Stripe refund {created['id']} exists.", meta.generation), meta.generation),
    }
    obs = observe_refund(created, created.get("created") or None)
    await apply_observation(rt.kube, PAYMENT_REFUNDS, meta, obs, always)
    k8s_events.info(body, "StripeRefundCreated",
                    f"Created Stripe refund {created['id']} of {created['amount']} {created['currency']}")


async def _refuse(rt: Runtime, body: Mapping[str, Any], refund: PaymentRefund, reason: str, code: str, message: str,
                  amount: int | None) -> None:
    """Phase Failed for good, with the amount asked for (so `kubectl get pr` shows it), and a Warning."""
    extra: dict[str, Any] = {"phase": RefundPhase.FAILED.value, "failure": {"code": code, "message": message}}
    if amount is not None:
        extra["amount"] = amount
    await write_not_synced(rt.kube, refund, reason, message, extra, failed=True)
    k8s_events.warn(body, reason, message)


async def step(rt: Runtime, body: Mapping[str, Any], refund: PaymentRefund, state: LoopState) -> bool:
    """One reconcile step: resync when idle, refresh the parent on a transition, mirror downstream."""
    if state.resync:
        await resync(rt, refund, state.resync)
        state.resync = None
    parent = await parent_of(rt, refund)
    if parent is None:
        return True
    phase = refund.status.phase
    if phase and phase != state.phase:
        # Stripe's charge knows the refunded total: the parent's status (and the phase it implies) follows.
        await resync(rt, parent, Resync.REFUND)
        k8s_events.post(body, phase is RefundPhase.FAILED, f"Refund{phase.value}",
                        f"The refund's phase changed from {state.phase} to {phase}" if state.phase
                        else f"The refund's phase is {phase}")
        state.phase = phase.value
    await downstream.sync(refund, rt.store, rt.publisher, rt.kube, rt.settings, state.published, parent)
    return True


KIND = Kind(parse=PaymentRefund.parse, phases=RefundPhase, plural=PAYMENT_REFUNDS, needs_creation=needs_stripe_refund,
            create=ensure_stripe_refund, step=step, finalize=None, resync_at_start=False)
