"""A write refused for good ends in Synced=False, a Warning event and a metric, never in a retry loop.

Refused for good: the Kubernetes API server's 422 (Invalid), PostgreSQL refusing a row's data
(StoreRejected), Kafka refusing a message (PublishRejected). Repeating the same write cannot succeed, so
nothing retries it: a one-off handler gives up (`guarded`), a reconcile step waits for the next change.
Both report here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

from kubepay import logs, metrics
from kubepay.controller.outcomes import GiveUp, Retry
from kubepay.kube import k8s_events
from kubepay.kube.client import Invalid, KubeClient
from kubepay.kube.status_writer import write_status
from kubepay.mirror.publisher import PublishRejected
from kubepay.model.conditions import sentence, set_condition
from kubepay.postgres import StoreRejected
from kubepay.retry import RETRYABLE, backoff

log = logging.getLogger(__name__)

T = TypeVar("T")
REFUSED = (Invalid, StoreRejected, PublishRejected)
Refused = Invalid | StoreRejected | PublishRejected
# The condition's reason and the metric's target for each kind of refusal.
_KINDS: dict[type[Exception], tuple[str, str]] = {
    Invalid: ("Invalid", "kubernetes"), StoreRejected: ("MirrorRefused", "postgres"),
    PublishRejected: ("MirrorRefused", "kafka"),
}


def message_of(exc: Refused) -> str:
    if isinstance(exc, Invalid):
        return sentence(f"The Kubernetes API server refused a write: {exc}")
    return sentence(str(exc))


async def report(kube: KubeClient, plural: str, body: Mapping[str, Any], exc: Refused) -> None:
    """Warning event, then Synced=False with the refusal's message (unless the status write is refused too)."""
    meta = body["metadata"]
    reason, target = _KINDS[type(exc)]
    message = message_of(exc)
    metrics.REFUSED_WRITES.labels(target).inc()
    k8s_events.warn(body, reason, message)

    def compute(current: dict[str, Any]) -> dict[str, Any]:
        generation = current["metadata"].get("generation")
        conditions = (current.get("status") or {}).get("conditions")
        return {"conditions": set_condition(conditions, "Synced", False, reason, message, generation)}

    try:
        await write_status(kube, plural, meta["namespace"], meta["name"], meta.get("uid"), compute)
    except Invalid as again:
        log.error("%s/%s: the Kubernetes API refuses its status too: %s", meta["namespace"], meta["name"], again,
                  extra=logs.about(meta, str(body.get("kind"))))


async def guarded(call: Awaitable[T], kube: KubeClient, plural: str, body: Mapping[str, Any], retry: int) -> T:
    """The one error policy for the one-off handlers (creation, finalizer): a write refused for good is
    reported once and gives up; an outage is retried with `kubepay.retry`'s backoff."""
    try:
        return await call
    except REFUSED as exc:
        await report(kube, plural, body, exc)
        raise GiveUp(message_of(exc)) from None
    except RETRYABLE as exc:
        raise Retry(str(exc), delay=backoff(retry)) from None
