"""The one place that knows the shape of the Stripe events kubepay reads, checked once at the edge.

A verified body that is not an event at all (no id) is refused; a signed event whose fields kubepay
cannot use is `InvalidEvent`: the receiver records it in the ledger with the reason and answers 2xx,
since Stripe would otherwise redeliver it for days and every delivery would fail the same way.
Everything past this module may trust the types it reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

INT64_MAX = 2**63 - 1
MAX_DEPTH = 32  # Stripe's events nest a handful of levels; far deeper is not an event we can apply
INTENT_TYPES = frozenset({
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "payment_intent.processing",
    "payment_intent.requires_action",
    "payment_intent.amount_capturable_updated",
})
REFUND_TYPES = frozenset({"refund.created", "refund.updated", "refund.failed", "charge.refund.updated"})
CHARGE_TYPES = frozenset({"charge.refunded"})
_ID = re.compile(r'"id"\s*:\s*"([A-Za-z0-9_]{1,255})"')
_TYPE = re.compile(r'"type"\s*:\s*"([a-z0-9_.]{1,255})"')


class NotAnEvent(Exception):
    """The body has no event id to record it under (answered 400)."""


class InvalidEvent(Exception):
    """A signed event kubepay cannot apply; recorded in the ledger with `reason`."""

    def __init__(self, event_id: str, event_type: str, reason: str, body: str) -> None:
        super().__init__(reason)
        self.event_id, self.event_type, self.reason, self.body = event_id, event_type, reason, body


Check = Callable[[Any], str | None]  # a problem, or None


def _optional(check: Check) -> Check:
    return lambda value: None if value is None else check(value)


def _integer(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return "must be an integer"
    return None if 0 <= value <= INT64_MAX else "must be between 0 and 2^63-1"


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) else "must be a string"


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _object(fields: dict[str, Check]) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, dict):
            return "must be an object"
        for name, field_check in fields.items():
            problem = field_check(value.get(name))
            if problem:
                return f"{name} {problem}"
        return None
    return check


def _string_map(value: Any) -> str | None:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        return "must be an object of strings"
    return None


def _id_or_object(value: Any) -> str | None:
    return None if isinstance(value, str) else _object({"id": _optional(_string)})(value)


_required = {"id": _string}
_INTENT = _object({
    **_required, "status": _string, "metadata": _optional(_string_map), "livemode": _optional(_boolean),
    "amount": _optional(_integer), "amount_received": _optional(_integer),
    "amount_capturable": _optional(_integer), "payment_method": _optional(_id_or_object),
    "last_payment_error": _optional(_object({name: _optional(_string)
                                             for name in ("code", "decline_code", "message")})),
    "latest_charge": _optional(lambda v: None if isinstance(v, str)
                               else _object({"amount_refunded": _optional(_integer)})(v)),
})
_CHARGE = _object({
    **_required, "payment_intent": _string, "livemode": _optional(_boolean), "amount": _optional(_integer),
    "amount_captured": _optional(_integer), "amount_refunded": _optional(_integer),
})
_REFUND = _object({
    **_required, "payment_intent": _optional(_string), "status": _optional(_string),
    "amount": _optional(_integer), "currency": _optional(_string), "failure_reason": _optional(_string),
    "metadata": _optional(_string_map),
})
_OBJECTS: dict[str, Check] = {
    **dict.fromkeys(INTENT_TYPES, _INTENT), **dict.fromkeys(CHARGE_TYPES, _CHARGE),
    **dict.fromkeys(REFUND_TYPES, _REFUND),
}
_ENVELOPE = _object({"created": _integer, "livemode": _optional(_boolean), "data": _object({"object": _object({})})})


def _nul_or_too_deep(value: Any, depth: int = 0) -> str | None:
    """PostgreSQL's jsonb refuses NUL characters; no Stripe event nests this deep."""
    if depth > MAX_DEPTH:
        return f"nests deeper than {MAX_DEPTH} levels"
    if isinstance(value, str):
        return "contains a NUL character" if "\x00" in value else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        problem = ("contains a NUL character" if isinstance(key, str) and "\x00" in key
                   else _nul_or_too_deep(item, depth + 1))
        if problem:
            return problem
    return None


def parse(body: bytes) -> dict[str, Any]:
    """A verified body as an event kubepay can apply; NotAnEvent or InvalidEvent otherwise."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise NotAnEvent("body is not UTF-8") from None
    try:
        event = json.loads(text)
    except RecursionError:  # deeper than the parser goes: the id can still be read off the text
        found_id, found_type = _ID.search(text), _TYPE.search(text)
        if not found_id:
            raise NotAnEvent("body is not a Stripe event (nested too deeply to read)") from None
        raise InvalidEvent(found_id.group(1), found_type.group(1) if found_type else "unknown",
                           "the event nests too deeply to parse", text) from None
    except ValueError:
        raise NotAnEvent("body is not JSON") from None
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str):
        raise NotAnEvent("body is not a Stripe event (id and type are required)")
    event_id, event_type = event["id"], event["type"]
    if not event_id or len(event_id) > 255 or "\x00" in event_id or "\x00" in event_type:
        raise NotAnEvent("body is not a Stripe event (its id is not usable)")
    problem = _nul_or_too_deep(event)
    if problem is None:
        problem = _ENVELOPE(event)
    if problem is None and event_type in _OBJECTS:
        problem = _OBJECTS[event_type](event["data"]["object"])
        problem = f"data.object.{problem}" if problem else None
    if problem:
        raise InvalidEvent(event_id, event_type[:255], problem, text)
    return event
