"""PaymentIntent: create or adopt the Stripe intent, follow the spec, mirror each step, cancel on deletion.

`controller.handling` calls these through `KIND`; they take the body and the parsed resource.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

from kubepay import metrics
from kubepay.controller.intents import (
    AdoptionRefused,
    SpecRefused,
    adopt_intent,
    create_intent,
    describe,
    reconcile_spec,
    spec_problems,
)
from kubepay.controller.outcomes import GiveUp, Retry
from kubepay.controller.reconcile import Kind, LoopState, Resync, resync
from kubepay.controller.runtime import Runtime
from kubepay.kube import k8s_events
from kubepay.kube.status_writer import apply_observation, write_not_synced
from kubepay.mirror import downstream
from kubepay.mirror.rows import PaymentRow
from kubepay.model import identity
from kubepay.model.conditions import sentence
from kubepay.model.observations import observe_intent
from kubepay.model.phases import Phase
from kubepay.model.resources import PAUSED_ANNOTATION, PAYMENT_INTENTS, PaymentIntent, StripeIntent
from kubepay.retry import RETRYABLE, backoff
from kubepay.stripe.gateway import StripeRejected

CANCELABLE = {"requires_payment_method", "requires_capture", "requires_confirmation", "requires_action"}
# The finalizer gives up (and says so in a Warning event) rather than block deletion forever.
FINALIZER_MAX_TRIES = 5


def needs_stripe_intent(status: Mapping[str, Any]) -> bool:
    """Only a payment without a Stripe intent, and not failed for good, needs one (read on every change, so it
    reads two fields alone)."""
    return not StripeIntent.parse(status.get("stripe")).payment_intent_id and status.get("phase") != Phase.FAILED


async def ensure_stripe_intent(rt: Runtime, body: Mapping[str, Any], pi: PaymentIntent, retry: int) -> None:
    """Create (or adopt) the Stripe intent unless status already names one."""
    if pi.stripe_id or pi.meta.deleting:
        return
    if pi.meta.paused:
        raise Retry("paused: the Stripe intent will be created when resumed", delay=10)
    adopt = pi.spec.adopt
    if not adopt and (problems := spec_problems(pi.raw.get("spec") or {})):
        message = f"Stripe would refuse the spec, so it was not sent: {describe(problems)}"
        await _fail_for_good(rt, body, pi, "SpecInvalid", message,
                             {"code": "spec_invalid", "message": describe(problems)})
    try:
        if not adopt and (earlier := await _paid_under_this_name(rt, pi)):
            await _refuse_repeat(rt, body, pi, earlier)
        intent = await (adopt_intent(rt, pi, adopt) if adopt else create_intent(rt, pi))
    except AdoptionRefused as exc:
        await write_not_synced(rt.kube, pi, "AdoptionRefused", str(exc))
        k8s_events.warn(body, "AdoptionRefused", str(exc))
        raise GiveUp(str(exc)) from None
    except StripeRejected as exc:
        message = f"Stripe refused the PaymentIntent: {exc}"
        if not adopt:
            await _fail_for_good(rt, body, pi, "StripeRejected", message, exc.failure())
        await write_not_synced(rt.kube, pi, "StripeRejected", message)
        k8s_events.warn(body, "StripeRejected", message)
        raise GiveUp(message) from None
    except RETRYABLE as exc:
        k8s_events.warn(body, "Retrying", f"The Stripe PaymentIntent is not created yet: {exc}")
        raise
    verb = "Adopted" if adopt else "Created"
    k8s_events.info(body, f"StripeIntent{verb}",
                    f"{verb} Stripe PaymentIntent {intent['id']} for {intent['amount']} {intent['currency']}")


async def _refuse_repeat(rt: Runtime, body: Mapping[str, Any], pi: PaymentIntent, earlier: PaymentRow) -> NoReturn:
    message = (f"Payment {earlier.id} for order {pi.spec.order_id} under this name was paid already (Stripe "
               f"PaymentIntent {earlier.provider_payment_id}); a PaymentIntent re-created under the same name "
               "(e.g. by GitOps after retention deleted it) is not charged again. Use a new name to charge again.")
    await write_not_synced(rt.kube, pi, "AlreadyPaid", message)
    k8s_events.warn(body, "AlreadyPaid", message)
    raise GiveUp(message)


async def _paid_under_this_name(rt: Runtime, pi: PaymentIntent) -> PaymentRow | None:
    """The row of an earlier, paid resource with this namespace, name and order: its re-creation is no new order."""
    for row in await rt.store.rows.find_by_order(pi.spec.order_id):
        if (row.resource_namespace, row.resource_name) == (pi.meta.namespace, pi.meta.name) \
                and row.resource_uid != pi.meta.uid and row.paid:
            return row
    return None


async def _fail_for_good(rt: Runtime, body: Mapping[str, Any], pi: PaymentIntent, reason: str, message: str,
                         failure: dict[str, str]) -> NoReturn:
    """The payment can never be made from this spec: phase Failed, Failed=True, a Warning; no retries."""
    await write_not_synced(rt.kube, pi, reason, message, failed=True,
                           extra={"phase": Phase.FAILED.value, "failure": failure,
                                  "paymentId": str(identity.payment_id(pi.meta.uid))})
    k8s_events.warn(body, reason, message)
    raise GiveUp(message)


async def step(rt: Runtime, body: Mapping[str, Any], pi: PaymentIntent, state: LoopState) -> bool:
    """One reconcile step: pause or resume, announce the phase, resync, follow the spec, mirror downstream."""
    if pi.meta.paused != state.paused:
        await _announce_pause(rt, body, pi, not state.paused)
        state.paused = not state.paused
        # Webhooks applied while paused are in status already; what Stripe did meanwhile may not be.
        state.resync = None if state.paused else Resync.RESUME
    if state.paused:
        return False
    state.phase = _announce_transition(body, pi, state.phase)
    if state.resync and not pi.status.final:
        await resync(rt, pi, state.resync)
    state.resync = None
    await _follow_spec(rt, body, pi)
    await downstream.sync(pi, rt.store, rt.publisher, rt.kube, rt.settings, state.published)
    return True


async def _announce_pause(rt: Runtime, body: Mapping[str, Any], pi: PaymentIntent, paused: bool) -> None:
    await rt.kube.patch_status(PAYMENT_INTENTS, pi.meta.namespace, pi.meta.name, {"paused": paused or None}, None)
    if paused:
        k8s_events.info(body, "Paused", f"{PAUSED_ANNOTATION} is true: kubepay leaves this payment alone")
    else:
        k8s_events.info(body, "Resumed", "Reconciling again; catching up with Stripe")


def _announce_transition(body: Mapping[str, Any], pi: PaymentIntent, last_phase: str | None) -> str | None:
    phase = pi.status.phase
    if not phase or phase == last_phase:
        return last_phase
    metrics.TRANSITIONS.labels(phase.value).inc()
    stripe_status = pi.status.stripe.status
    message = f"The phase changed from {last_phase} to {phase}" if last_phase else f"The phase is {phase}"
    message += f" (Stripe: {stripe_status})." if stripe_status else "."
    if pi.status.failure and pi.status.failure.message:
        message = f"{message} {sentence(pi.status.failure.message)}"
    k8s_events.post(body, phase is Phase.FAILED, phase.value, message)
    return phase.value


async def _follow_spec(rt: Runtime, body: Mapping[str, Any], pi: PaymentIntent) -> None:
    try:
        done = await reconcile_spec(rt, pi)
    except SpecRefused as exc:
        k8s_events.warn(body, exc.reason, str(exc))
        return
    except StripeRejected as exc:
        message = f"Stripe refused the change: {exc}"
        k8s_events.warn(body, "StripeRejected", message)
        await write_not_synced(rt.kube, pi, "StripeRejected", message)
        return
    if done:
        k8s_events.info(body, "SpecApplied", done)


async def finalize(rt: Runtime, body: Mapping[str, Any], pi: PaymentIntent, retry: int, state: LoopState) -> None:
    """Cancel a still-cancelable Stripe intent (deletionPolicy Cancel) and mirror the outcome.

    The mirror step shares the resource's LoopState (its lock and what it published) with the watch-event
    step the cancellation also triggers, so the canceled milestone is published once.
    """
    intent_id = pi.stripe_id
    if not intent_id or pi.status.final:
        return
    if pi.spec.deletion_policy == "Orphan":
        k8s_events.info(body, "Orphaned", f"Left Stripe PaymentIntent {intent_id} in Stripe as it is")
        return
    meta = pi.meta
    try:
        intent = await rt.gateway.retrieve_intent(intent_id)
        if intent["status"] in CANCELABLE:
            intent = await rt.gateway.cancel_intent(intent_id, identity.cancel_idempotency_key(meta.uid))
            k8s_events.info(body, "Canceled", f"Canceled Stripe PaymentIntent {intent_id}")
        await apply_observation(rt.kube, PAYMENT_INTENTS, meta, observe_intent(intent))
        async with state.lock:
            fresh = PaymentIntent.parse(await rt.kube.get_custom(PAYMENT_INTENTS, meta.namespace, meta.name))
            await downstream.sync(fresh, rt.store, rt.publisher, rt.kube, rt.settings, state.published)
    except (StripeRejected, *RETRYABLE) as exc:
        if retry + 1 >= FINALIZER_MAX_TRIES:
            k8s_events.warn(body, "CancelFailed", f"Gave up after {retry + 1} tries; Stripe PaymentIntent "
                                                  f"{intent_id} is left in Stripe as it was: {exc}")
            return
        raise Retry(str(exc), delay=backoff(retry)) from None


KIND = Kind(parse=PaymentIntent.parse, phases=Phase, plural=PAYMENT_INTENTS, needs_creation=needs_stripe_intent,
            create=ensure_stripe_intent, step=step, finalize=finalize, resync_at_start=True)
