"""A resource's Stripe PaymentIntent: created (or adopted) exactly once, then kept matching the spec."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubepay.controller.runtime import Runtime
from kubepay.kube.status_writer import apply_observation
from kubepay.model import identity, labels
from kubepay.model.conditions import observed, set_condition
from kubepay.model.money import MoneyError, check_amount, currency_code
from kubepay.model.observations import observe_intent
from kubepay.model.phases import Phase
from kubepay.model.resources import PAYMENT_INTENTS, PaymentIntent

# Stripe accepts amount changes only before the customer has committed to paying.
AMOUNT_UPDATABLE = frozenset({"requires_payment_method", "requires_confirmation", "requires_action"})


class AdoptionRefused(Exception):
    """The named Stripe intent does not match the spec; adopting it would charge the wrong amount."""


class SpecRefused(Exception):
    """Stripe must not be asked for what the spec says (Synced=False says why); `reason` is the condition's."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def spec_problems(spec: Mapping[str, Any]) -> dict[str, str]:
    """What Stripe would refuse in a PaymentIntent spec, by field (admission and controller ask alike)."""
    try:
        currency = currency_code(spec.get("currency"))
    except MoneyError as exc:
        return {"spec.currency": str(exc)}
    problems: dict[str, str] = {}
    for field in ("amount", "amountToCapture"):
        if isinstance(spec.get(field), int):
            try:
                check_amount(spec[field], currency)
            except MoneyError as exc:
                problems[f"spec.{field}"] = str(exc)
    return problems


def describe(problems: Mapping[str, str]) -> str:
    return "; ".join(f"{field}: {problem}" for field, problem in problems.items())


def kubepay_metadata(pi: PaymentIntent) -> dict[str, str]:
    """The spec's metadata plus kubepay's own keys: how webhooks find the resource."""
    metadata = {
        **pi.spec.metadata,
        identity.METADATA_NAMESPACE: pi.meta.namespace,
        identity.METADATA_NAME: pi.meta.name,
        identity.METADATA_UID: pi.meta.uid,
        "order_id": pi.spec.order_id,
    }
    if pi.spec.user_id:
        metadata["user_id"] = pi.spec.user_id
    return metadata


def create_params(pi: PaymentIntent) -> dict[str, Any]:
    params: dict[str, Any] = {
        "amount": pi.spec.amount,
        "currency": pi.spec.currency,
        "capture_method": pi.spec.capture_method,
        "metadata": kubepay_metadata(pi),
        "automatic_payment_methods": {"enabled": True},
    }
    if pi.spec.description:
        params["description"] = pi.spec.description
    return params


async def create_intent(rt: Runtime, pi: PaymentIntent) -> dict[str, Any]:
    """Create (or, after a crash, get back through the idempotency key) the Stripe intent; record it.

    Order: Stripe, then the client-secret Secret, then status. A crash before the status write
    repeats the same keyed create, which Stripe answers with the same intent.
    """
    intent = await rt.gateway.create_intent(create_params(pi), identity.intent_idempotency_key(pi.meta.uid))
    await _record(rt, pi, intent, "StripeIntentCreated", created=int(intent.get("created") or 0))
    return intent


async def adopt_intent(rt: Runtime, pi: PaymentIntent, intent_id: str) -> dict[str, Any]:
    """Take over an intent made outside kubepay: it must agree on amount and currency."""
    intent = await rt.gateway.retrieve_intent(intent_id)
    if (intent["amount"], intent["currency"]) != (pi.spec.amount, pi.spec.currency):
        raise AdoptionRefused(
            f"Stripe PaymentIntent {intent_id} is {intent['amount']} {intent['currency']}, "
            f"the spec says {pi.spec.amount} {pi.spec.currency}"
        )
    owner = (intent.get("metadata") or {}).get(identity.METADATA_UID)
    if owner and owner != pi.meta.uid:
        raise AdoptionRefused(f"Stripe PaymentIntent {intent_id} is already managed by another PaymentIntent")
    # Our metadata on the intent is how webhooks find this resource.
    intent = await rt.gateway.update_intent(
        intent_id, {"metadata": kubepay_metadata(pi)},
        identity.update_idempotency_key(pi.meta.uid, pi.meta.generation, "adopt"),
    )
    await _record(rt, pi, intent, "StripeIntentAdopted", created=None)
    return intent


async def _record(rt: Runtime, pi: PaymentIntent, intent: dict[str, Any], reason: str, created: int | None) -> None:
    meta = pi.meta
    secret_name = identity.client_secret_name(meta.name, meta.uid)
    parent_labels, parent_annotations = labels.naming(labels.PAYMENT_INTENT, meta.name)
    await rt.kube.apply_secret(
        meta.namespace,
        secret_name,
        {identity.CLIENT_SECRET_KEY: intent["client_secret"]},
        owner=dict(pi.raw),
        labels={"app.kubernetes.io/managed-by": "kubepay", **parent_labels},
        annotations=parent_annotations,
    )
    always: dict[str, Any] = {
        "paymentId": str(identity.payment_id(meta.uid)),
        "clientSecretRef": {"name": secret_name, "key": identity.CLIENT_SECRET_KEY},
        **observed(set_condition(pi.status.conditions, "Synced", True, reason,
                                 f"Stripe PaymentIntent {intent['id']} exists.", meta.generation), meta.generation),
    }
    await apply_observation(rt.kube, PAYMENT_INTENTS, meta, observe_intent(intent, created), always)


async def reconcile_spec(rt: Runtime, pi: PaymentIntent) -> str | None:
    """Make Stripe follow spec changes (amount, capture). Returns a message when something was done."""
    meta, spec, status = pi.meta, pi.spec, pi.status
    if meta.deleting:
        # Marking a deletion is a new generation to the API server, not a spec change: the finalizer
        # alone decides what Stripe gets now.
        return None
    intent_id = pi.stripe_id
    if not intent_id:
        if status.phase is Phase.FAILED and status.observed_generation != meta.generation:
            # Refused for good before Stripe, and a spec change does not retry: still Failed at this generation.
            await rt.kube.patch_status(PAYMENT_INTENTS, meta.namespace, meta.name,
                                       observed(status.conditions, meta.generation), None)
        return None
    done: str | None = None
    problems = spec_problems(pi.raw.get("spec") or {})
    if status.observed_generation != meta.generation:
        done = await _follow_amount(rt, pi, intent_id, problems)
    if spec.capture and status.phase is Phase.REQUIRES_CAPTURE and not problems:
        intent = await rt.gateway.capture_intent(intent_id, spec.amount_to_capture,
                                                 identity.capture_idempotency_key(meta.uid))
        await apply_observation(rt.kube, PAYMENT_INTENTS, meta, observe_intent(intent))
        done = f"Captured {intent.get('amount_received')} {intent['currency']} of Stripe PaymentIntent {intent_id}."
    return done


async def _follow_amount(rt: Runtime, pi: PaymentIntent, intent_id: str, problems: Mapping[str, str]) -> str | None:
    meta, generation = pi.meta, pi.meta.generation
    intent = await rt.gateway.retrieve_intent(intent_id)
    wanted = pi.spec.amount
    message: str | None = None
    synced, reason, text = True, "SpecApplied", f"Stripe PaymentIntent {intent_id} matches generation {generation}."
    if problems:
        synced, reason = False, "SpecInvalid"
        text = f"Stripe would refuse the spec, so it was not sent: {describe(problems)}."
    elif intent["amount"] != wanted:
        if intent["status"] in AMOUNT_UPDATABLE:
            intent = await rt.gateway.update_intent(
                intent_id, {"amount": wanted}, identity.update_idempotency_key(meta.uid, generation, "amount"))
            message = f"Changed the amount of Stripe PaymentIntent {intent_id} to {wanted} {intent['currency']}."
        else:
            synced, reason = False, "AmountLocked"
            text = (f"Stripe no longer allows changing the amount: the payment is {intent['status']}; "
                    f"it stays {intent['amount']} {intent['currency']}.")
    conditions = set_condition(pi.status.conditions, "Synced", synced, reason, text, generation)
    await apply_observation(rt.kube, PAYMENT_INTENTS, meta, observe_intent(intent),
                            always=observed(conditions, generation))
    if not synced:
        raise SpecRefused(reason, text)
    return message
