"""A write the Kubernetes API server refuses (422 Invalid) ends in Synced=False and a Warning event.

Repeating the same write cannot succeed, so nothing retries it: kopf handlers stop (`reports_invalid`),
the per-resource daemons wait for the next change (`daemons.reconcile_forever`). Both report here.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import kopf

from kubepay import k8s_events
from kubepay.conditions import sentence, set_condition
from kubepay.kube_client import Invalid, KubeClient
from kubepay.status_writer import write_status

log = logging.getLogger(__name__)

REASON = "Invalid"
Handler = Callable[..., Awaitable[Any]]


def message_of(exc: Invalid) -> str:
    return sentence(f"The Kubernetes API server refused a write: {exc}")


async def report(kube: KubeClient, plural: str, body: Mapping[str, Any], exc: Invalid) -> None:
    """Warning event, then Synced=False with the API server's message (unless the status write is refused too)."""
    meta = body["metadata"]
    message = message_of(exc)
    k8s_events.warn(body, REASON, message)

    def compute(current: dict[str, Any]) -> dict[str, Any]:
        generation = current["metadata"].get("generation")
        conditions = (current.get("status") or {}).get("conditions")
        return {"conditions": set_condition(conditions, "Synced", False, REASON, message, generation)}

    try:
        await write_status(kube, plural, meta["namespace"], meta["name"], meta.get("uid"), compute)
    except Invalid as again:
        log.error("%s/%s: the API server refuses its status too: %s", meta["namespace"], meta["name"], again)


def reports_invalid(plural: str) -> Callable[[Handler], Handler]:
    """For kopf handlers: an Invalid write is reported once and the handler fails permanently (no retries)."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(**kwargs: Any) -> Any:
            try:
                return await handler(**kwargs)
            except Invalid as exc:
                await report(kwargs["memo"]["runtime"].kube, plural, kwargs["body"], exc)
                raise kopf.PermanentError(message_of(exc)) from None

        return wrapper

    return decorate
