"""Names and ids derived from a resource, so every retry and every process derives the same ones."""

from __future__ import annotations

import uuid

PAYMENT_ID_NAMESPACE = uuid.UUID("0b3a5f7e-5d0c-4a55-8c1e-6b7562657079")
CLIENT_SECRET_KEY = "clientSecret"
METADATA_NAMESPACE = "kubepay_namespace"
METADATA_NAME = "kubepay_name"
METADATA_UID = "kubepay_uid"
METADATA_KIND = "kubepay_kind"


def payment_id(uid: str) -> uuid.UUID:
    """The payments row id: known before the row exists, the same after any crash."""
    return uuid.uuid5(PAYMENT_ID_NAMESPACE, uid)


def refund_id(uid: str) -> uuid.UUID:
    """The refunds row id, derived like payment_id."""
    return uuid.uuid5(PAYMENT_ID_NAMESPACE, f"refund/{uid}")


def refund_idempotency_key(uid: str) -> str:
    return f"kubepay-refund-create-{uid}"


def intent_idempotency_key(uid: str) -> str:
    return f"kubepay-pi-create-{uid}"


def cancel_idempotency_key(uid: str) -> str:
    return f"kubepay-pi-cancel-{uid}"


def client_secret_name(name: str, uid: str) -> str:
    candidate = f"{name}-client-secret"
    return candidate if len(candidate) <= 253 else f"kubepay-{uid}-client-secret"


def update_idempotency_key(uid: str, generation: int, what: str) -> str:
    """One key per spec generation: a retry repeats the same update, a new spec makes a new one."""
    return f"kubepay-pi-{what}-{uid}-{generation}"


def capture_idempotency_key(uid: str) -> str:
    return f"kubepay-pi-capture-{uid}"
