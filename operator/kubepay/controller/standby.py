"""With peering, only the active controller of a shard works; the others keep their watches warm and wait.

kopf keeps each controller's keep-alive in the peering object (`controller.peering` sets its priority). A
controller is active while no live peer outranks it or shares its priority, kopf's own rule, which this
reads from the peering object every `PERIOD` seconds.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Mapping
from typing import Any

from kubepay.kube.client import KubeClient, KubeUnavailable, NotFound

log = logging.getLogger(__name__)

PERIOD = 1.0


def outranked(peers: Mapping[str, Any], identity: str, priority: int, now: datetime.datetime) -> list[str]:
    """The live peers that keep this controller on standby (kopf's rule: a higher or the same priority)."""
    blocking = []
    for peer, info in peers.items():
        if peer == identity or not isinstance(info, Mapping):
            continue
        seen = info.get("lastseen")
        lastseen = datetime.datetime.fromisoformat(seen) if seen else now
        alive = lastseen + datetime.timedelta(seconds=int(info.get("lifetime", 60))) > now
        if alive and int(info.get("priority", 0)) >= priority:
            blocking.append(peer)
    return blocking


class Standby:
    """Whether this controller may work now. Without peering it always may."""

    def __init__(self, kube: KubeClient | None, name: str | None, namespace: str | None, identity: str,
                 priority: int) -> None:
        self._kube, self._name, self._namespace = kube, name, namespace
        self._identity, self._priority = identity, priority
        self._active = asyncio.Event()
        if name is None:
            self._active.set()

    @property
    def is_active(self) -> bool:
        return self._active.is_set()

    async def active(self) -> None:
        """Return when this controller may work."""
        await self._active.wait()

    async def run(self) -> None:
        if self._kube is None or self._name is None:
            return
        while True:
            try:
                peering = await self._kube.get_peering(self._name, self._namespace)
            except (KubeUnavailable, NotFound) as exc:
                if self._active.is_set():
                    log.warning("peering object %s unreadable: paused until it is: %s", self._name, exc)
                self._active.clear()
            else:
                now = datetime.datetime.now(datetime.UTC)
                blocking = outranked(peering.get("status") or {}, self._identity, self._priority, now)
                if blocking and self._active.is_set():
                    log.info("on standby: peer %s is active", ", ".join(blocking))
                    self._active.clear()
                elif not blocking and not self._active.is_set():
                    log.info("active: no live peer outranks this controller")
                    self._active.set()
            await asyncio.sleep(PERIOD)
