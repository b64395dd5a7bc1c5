"""Creating the Stripe PaymentIntent for a resource: exactly one, whatever crashes in between."""

from __future__ import annotations

from typing import Any

from kubepay import identity
from kubepay.conditions import set_condition
from kubepay.phases import observe_intent
from kubepay.runtime import Runtime
from kubepay.status_writer import apply_observation


def create_params(body: dict[str, Any]) -> dict[str, Any]:
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
    secret_name = identity.client_secret_name(meta["name"], meta["uid"])
    await rt.kube.apply_secret(
        meta["namespace"],
        secret_name,
        {identity.CLIENT_SECRET_KEY: intent["client_secret"]},
        owner=body,
        labels={"app.kubernetes.io/managed-by": "kubepay", "kubepay.io/payment-intent": meta["name"]},
    )
    generation = meta.get("generation")
    always: dict[str, Any] = {
        "paymentId": str(identity.payment_id(meta["uid"])),
        "clientSecretRef": {"name": secret_name, "key": identity.CLIENT_SECRET_KEY},
        "observedGeneration": generation,
        "conditions": set_condition(
            (body.get("status") or {}).get("conditions"), "Synced", True, "StripeIntentCreated",
            f"Stripe PaymentIntent {intent['id']} exists", generation,
        ),
    }
    obs = observe_intent(intent, created=int(intent.get("created") or 0))
    await apply_observation(rt.kube, meta["namespace"], meta["name"], meta["uid"], obs, always)
    return intent
