"""Stripe webhook verification: the signature over the raw body, then the shape of the event."""

from __future__ import annotations

import json
import logging
from typing import Any

import stripe

log = logging.getLogger(__name__)

SIGNATURE_TOLERANCE = 300

class BadRequest(Exception):
    """The delivery is not a valid, signed Stripe event (answered 400)."""


def verify(payload: bytes, signature: str | None, secret: str) -> dict[str, Any]:
    """Check `Stripe-Signature` over the raw body with the SDK; return the event as a plain dict."""
    if not signature:
        raise BadRequest("missing Stripe-Signature header")
    try:
        stripe.WebhookSignature.verify_header(payload.decode("utf-8"), signature, secret, SIGNATURE_TOLERANCE)
    except stripe.SignatureVerificationError as exc:
        raise BadRequest(f"signature verification failed: {exc.user_message or 'invalid signature'}") from None
    except UnicodeDecodeError:
        raise BadRequest("body is not UTF-8") from None
    try:
        event = json.loads(payload)
    except json.JSONDecodeError:
        raise BadRequest("body is not JSON") from None
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not isinstance(
        event.get("type"), str
    ) or not isinstance((event.get("data") or {}).get("object"), dict):
        raise BadRequest("body is not a Stripe event (id, type and data.object are required)")
    return event
