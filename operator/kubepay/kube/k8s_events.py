"""The k8s events kubepay posts: reported by `kubepay-controller`, every message a sentence.

Handlers only queue an event (posting never slows a payment down, nor fails it); one task posts the queue.
Each event is logged too; one that cannot be posted is dropped with a warning, as client-go's recorders do.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubepay import logs
from kubepay.kube.client import KubeClient
from kubepay.model.conditions import sentence

log = logging.getLogger(__name__)

REPORTING_COMPONENT = "kubepay-controller"
MAX_MESSAGE = 1024  # the API server refuses longer messages


@dataclass(frozen=True)
class K8sEvent:
    involved: dict[str, str]
    type: str  # Normal or Warning
    reason: str
    message: str


Sink = Callable[[K8sEvent], None]
_sink: Sink | None = None


def info(body: Mapping[str, Any], reason: str, message: str) -> None:
    post(body, False, reason, message)


def warn(body: Mapping[str, Any], reason: str, message: str) -> None:
    post(body, True, reason, message)


def post(body: Mapping[str, Any], warning: bool, reason: str, message: str) -> None:
    meta = body["metadata"]
    involved = {"apiVersion": body["apiVersion"], "kind": body["kind"], "namespace": meta["namespace"],
                "name": meta["name"], "uid": meta["uid"]}
    text = sentence(message)
    if len(text) > MAX_MESSAGE:
        text = f"{text[:MAX_MESSAGE // 2 - 3]}...{text[-(MAX_MESSAGE // 2 - 3):]}"
    event = K8sEvent(involved, "Warning" if warning else "Normal", reason, text)
    # The log says it too, for whoever reads logs rather than events (events expire after an hour).
    log.log(logging.WARNING if warning else logging.INFO, "%s: %s", reason, text,
            extra=logs.about(meta, involved["kind"]))
    if _sink is not None:
        _sink(event)


def capture(sink: Sink | None) -> Sink | None:
    """Send events to `sink` from now on (None: nowhere); the sink before."""
    global _sink
    before, _sink = _sink, sink
    return before


class Poster:
    """Posts the queued events, one at a time, as core/v1 Events."""

    def __init__(self, kube: KubeClient) -> None:
        self._kube = kube
        self._queue: asyncio.Queue[K8sEvent] = asyncio.Queue()
        self._instance = socket.gethostname()[:128]

    def put(self, event: K8sEvent) -> None:
        self._queue.put_nowait(event)

    async def run(self) -> None:
        while True:
            event = await self._queue.get()
            now = datetime.datetime.now(datetime.UTC).isoformat()
            namespace = event.involved["namespace"]
            try:
                await self._kube.create_event(namespace, {
                    "metadata": {"namespace": namespace, "generateName": "kubepay-event-"},
                    "type": event.type, "reason": event.reason, "message": event.message,
                    "involvedObject": event.involved, "action": event.reason,
                    "reportingComponent": REPORTING_COMPONENT, "reportingInstance": self._instance,
                    "source": {"component": REPORTING_COMPONENT},  # `kubectl describe`'s From column
                    "firstTimestamp": now, "lastTimestamp": now, "eventTime": now, "count": 1,
                })
            except Exception as exc:  # an event is advice: never let one stop the poster
                log.warning("could not post k8s event %s for %s/%s to the Kubernetes API: %s", event.reason,
                            namespace, event.involved["name"], exc,
                            extra=logs.about(event.involved, event.involved["kind"]))
