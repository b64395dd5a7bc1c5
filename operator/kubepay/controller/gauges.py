"""The controller's gauges an SRE alerts on: stuck payments, the oldest unpublished milestone and the ledger's
unprocessed events, refreshed every `INTERVAL` seconds on the event loop (the scrape runs in prometheus_client's
thread, which must not walk the controller's dicts); whether this replica works is read at each scrape."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kubepay import metrics
from kubepay.mirror.publisher import Publisher
from kubepay.model.phases import Phase
from kubepay.model.resources import PAYMENT_INTENTS, epoch
from kubepay.postgres import StoreUnavailable
from kubepay.stripe.ledger import Ledger

log = logging.getLogger(__name__)

INTERVAL = 15.0
IN_FLIGHT = 60.0  # a ledgered event younger than this may still be being applied
NON_FINAL = tuple(p.value for p in Phase if not p.final)

Bodies = Callable[[], Iterable[tuple[str, Mapping[str, Any]]]]  # (plural, body) of each resource with work


def stuck(bodies: Iterable[tuple[str, Mapping[str, Any]]], stuck_after: float, now: float) -> Counter[str]:
    """PaymentIntents in a non-final phase created more than `stuck_after` seconds before `now`, by phase."""
    found: Counter[str] = Counter()
    for plural, body in bodies:
        phase = (body.get("status") or {}).get("phase")
        if plural != PAYMENT_INTENTS or phase not in NON_FINAL:
            continue
        created = epoch(body["metadata"].get("creationTimestamp"))
        if created is not None and now - created > stuck_after:
            found[phase] += 1
    return found


class Gauges:
    def __init__(self, bodies: Bodies, ledger: Ledger, publisher: Publisher, is_active: Callable[[], bool],
                 stuck_after: float, clock: Callable[[], float] = time.time) -> None:
        self._bodies, self._ledger, self._publisher = bodies, ledger, publisher
        self._stuck_after, self._clock = stuck_after, clock
        self._ledger_down = False
        metrics.CONTROLLER_ACTIVE.set_function(lambda: float(is_active()))  # an Event's flag: safe from any thread

    async def refresh(self) -> None:
        counts = stuck(self._bodies(), self._stuck_after, self._clock())
        for phase in NON_FINAL:
            metrics.PAYMENTS_STUCK.labels(phase).set(counts[phase])
        metrics.OLDEST_UNPUBLISHED.set(self._publisher.oldest_unacknowledged_age())
        try:
            metrics.LEDGER_UNPROCESSED.set(await self._ledger.unprocessed(IN_FLIGHT))
        except StoreUnavailable as exc:
            if not self._ledger_down:  # one line per outage; the workers' own lines say more
                log.warning("kubepay_ledger_unprocessed_events is stale, PostgreSQL is unavailable: %s", exc)
            self._ledger_down = True
        else:
            self._ledger_down = False

    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(INTERVAL)
