"""Stripe webhook signatures: checked over the raw body with the timestamp bounded both ways, then the event parsed."""

from __future__ import annotations

import time
from typing import Any

import stripe

from kubepay.stripe import event_shape

SIGNATURE_TOLERANCE = 300  # seconds into the past, as Stripe's libraries
CLOCK_SKEW = 30  # seconds into the future: clocks differ a little, a replayed capture from the future does not


class BadRequest(Exception):
    """The delivery is not a valid, signed Stripe event (answered 400)."""


def _timestamp(signature: str) -> int | None:
    for item in signature.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def verify(payload: bytes, signature: str | None, secret: str) -> dict[str, Any]:
    """Check `Stripe-Signature` over the raw body, bound its timestamp both ways, and parse the event.

    Raises BadRequest, or event_shape.InvalidEvent for a signed event kubepay cannot apply.
    """
    if not signature:
        raise BadRequest("missing Stripe-Signature header")
    try:
        stripe.WebhookSignature.verify_header(payload.decode("utf-8"), signature, secret, SIGNATURE_TOLERANCE)
    except stripe.SignatureVerificationError as exc:
        raise BadRequest(f"signature verification failed: {exc.user_message or 'invalid signature'}") from None
    except UnicodeDecodeError:
        raise BadRequest("body is not UTF-8") from None
    timestamp = _timestamp(signature)
    if timestamp is None or timestamp > time.time() + CLOCK_SKEW:
        raise BadRequest(f"signature verification failed: timestamp more than {CLOCK_SKEW}s in the future")
    try:
        return event_shape.parse(payload)
    except event_shape.NotAnEvent as exc:
        raise BadRequest(str(exc)) from None
