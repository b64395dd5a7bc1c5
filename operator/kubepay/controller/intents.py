"""A resource's Stripe PaymentIntent: created (or adopted) exactly once, then kept matching the spec."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from kubepay.controller.runtime import Runtime
from kubepay.kube.client import PAYMENT_INTENTS
from kubepay.kube.status_writer import apply_observation
from kubepay.model import identity, labels
from kubepay.model.conditions import observed, set_condition
from kubepay.model.money import MoneyError, check_amount, currency_code
from kubepay.model.phases import Phase, observe_intent

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


def kubepay_metadata(body: dict[str, Any]) -> dict[str, str]:
    meta, spec = body["metadata"], body["spec"]
    metadata = {
        **(spec.get("metadata") or {}),
        identity.METADATA_NAMESPACE: meta["namespace"],
        identity.METADATA_NAME: meta["name"],
        identity.METADATA_UID: meta["uid"],
        "order_id": spec["orderId"],
    }
    if spec.get("userId"):
        metadata["user_id"] = spec["userId"]
    return metadata


def create_params(body: dict[str, Any]) -> dict[str, Any]:
    spec = body["spec"]
    metadata = kubepay_metadata(body)
    params: dict[str, Any] = {
        "amount": int(spec["amount"]),
        "currency": spec["currency"],
        "capture_method": spec.get("captureMethod", "automatic"),
        "metadata": metadata,
        "automatic_payment_methods": {"enabled": True},
    }
    if spec.get("description"):
        params["description"] = spec["description"]
    return params


async def create_intent(rt: Runtime, body: dict[str, Any]) -> dict[str, Any]:
    """Create (or, after a crash, get back through the idempotency key) the Stripe intent; record it.

    Order: Stripe, then the client-secret Secret, then status. A crash before the status write
    repeats the same keyed create, which Stripe answers with the same intent.
    """
    meta = body["metadata"]
    intent = await rt.gateway.create_intent(create_params(body), identity.intent_idempotency_key(meta["uid"]))
    await _record(rt, body, intent, "StripeIntentCreated", created=int(intent.get("created") or 0))
    return intent


async def adopt_intent(rt: Runtime, body: dict[str, Any], intent_id: str) -> dict[str, Any]:
    """Take over an intent made outside kubepay: it must agree on amount and currency."""
    meta, spec = body["metadata"], body["spec"]
    intent = await rt.gateway.retrieve_intent(intent_id)
    if (intent["amount"], intent["currency"]) != (int(spec["amount"]), spec["currency"]):
        raise AdoptionRefused(
            f"Stripe PaymentIntent {intent_id} is {intent['amount']} {intent['currency']}, "
            f"the spec says {spec['amount']} {spec['currency']}"
        )
    owner = (intent.get("metadata") or {}).get(identity.METADATA_UID)
    if owner and owner != meta["uid"]:
        raise AdoptionRefused(f"Stripe PaymentIntent {intent_id} is already managed by another PaymentIntent")
    # Our metadata on the intent is how webhooks find this resource.
    intent = await rt.gateway.update_intent(
        intent_id, {"metadata": kubepay_metadata(body)},
        identity.update_idempotency_key(meta["uid"], int(meta.get("generation") or 1), "adopt"),
    )
    await _record(rt, body, intent, "StripeIntentAdopted", created=int(time.time()))
    return intent


async def _record(rt: Runtime, body: dict[str, Any], intent: dict[str, Any], reason: str, created: int) -> None:
    meta = body["metadata"]
    secret_name = identity.client_secret_name(meta["name"], meta["uid"])
    parent_labels, parent_annotations = labels.naming(labels.PAYMENT_INTENT, meta["name"])
    await rt.kube.apply_secret(
        meta["namespace"],
        secret_name,
        {identity.CLIENT_SECRET_KEY: intent["client_secret"]},
        owner=body,
        labels={"app.kubernetes.io/managed-by": "kubepay", **parent_labels},
        annotations=parent_annotations,
    )
    generation = meta.get("generation")
    always: dict[str, Any] = {
        "paymentId": str(identity.payment_id(meta["uid"])),
        "clientSecretRef": {"name": secret_name, "key": identity.CLIENT_SECRET_KEY},
        **observed(set_condition(
            (body.get("status") or {}).get("conditions"), "Synced", True, reason,
            f"Stripe PaymentIntent {intent['id']} exists.", generation,
        ), generation),
    }
    obs = observe_intent(intent, created=created)
    await apply_observation(rt.kube, meta["namespace"], meta["name"], meta["uid"], obs, always)


async def reconcile_spec(rt: Runtime, body: dict[str, Any]) -> str | None:
    """Make Stripe follow spec changes (amount, capture). Returns a message when something was done."""
    meta, spec, status = body["metadata"], body["spec"], body.get("status") or {}
    if meta.get("deletionTimestamp"):
        # Marking a deletion is a new generation to the API server, not a spec change: the finalizer
        # alone decides what Stripe gets now.
        return None
    intent_id = (status.get("stripe") or {}).get("paymentIntentId")
    generation = int(meta.get("generation") or 1)
    if not intent_id:
        if status.get("phase") == Phase.FAILED.value and status.get("observedGeneration") != generation:
            # Refused for good before Stripe, and a spec change does not retry: still Failed at this generation.
            await rt.kube.patch_status(PAYMENT_INTENTS, meta["namespace"], meta["name"],
                                       observed(status.get("conditions"), generation), None)
        return None
    done: str | None = None
    problems = spec_problems(spec)
    if status.get("observedGeneration") != generation:
        done = await _follow_amount(rt, body, intent_id, generation, problems)
    if spec.get("capture") and status.get("phase") == Phase.REQUIRES_CAPTURE.value and not problems:
        amount = spec.get("amountToCapture")
        intent = await rt.gateway.capture_intent(intent_id, amount, identity.capture_idempotency_key(meta["uid"]))
        await apply_observation(rt.kube, meta["namespace"], meta["name"], meta["uid"],
                                observe_intent(intent, created=int(time.time())))
        done = f"Captured {intent.get('amount_received')} {intent['currency']} of Stripe PaymentIntent {intent_id}."
    return done


async def _follow_amount(rt: Runtime, body: dict[str, Any], intent_id: str, generation: int,
                         problems: Mapping[str, str]) -> str | None:
    meta, spec, status = body["metadata"], body["spec"], body.get("status") or {}
    intent = await rt.gateway.retrieve_intent(intent_id)
    wanted = int(spec["amount"])
    message: str | None = None
    synced, reason, text = True, "SpecApplied", f"Stripe PaymentIntent {intent_id} matches generation {generation}."
    if problems:
        synced, reason = False, "SpecInvalid"
        text = f"Stripe would refuse the spec, so it was not sent: {describe(problems)}."
    elif intent["amount"] != wanted:
        if intent["status"] in AMOUNT_UPDATABLE:
            intent = await rt.gateway.update_intent(
                intent_id, {"amount": wanted}, identity.update_idempotency_key(meta["uid"], generation, "amount"))
            message = f"Changed the amount of Stripe PaymentIntent {intent_id} to {wanted} {intent['currency']}."
        else:
            synced, reason = False, "AmountLocked"
            text = (f"Stripe no longer allows changing the amount: the payment is {intent['status']}; "
                    f"it stays {intent['amount']} {intent['currency']}.")
    conditions = set_condition(status.get("conditions"), "Synced", synced, reason, text, generation)
    await apply_observation(rt.kube, meta["namespace"], meta["name"], meta["uid"],
                            observe_intent(intent, created=int(time.time())), always=observed(conditions, generation))
    if not synced:
        raise SpecRefused(reason, text)
    return message
