"""The Stripe event ids one receiver process saw lately, so a first sight can read ahead."""

from __future__ import annotations

from collections import OrderedDict


class SeenEvents:
    """A bounded memory of event ids, the oldest forgotten first.

    Most deliveries are first deliveries: for those the receiver reads the resource while the ledger records
    the event, one round trip less. A redelivery usually reaches the same process and is a duplicate, so it
    skips the read; one that reaches another replica, or comes after a restart, reads once for nothing.
    """

    def __init__(self, size: int = 10_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def first_sight(self, event_id: str) -> bool:
        """Whether this process has not seen the id lately; remembers it."""
        if event_id in self._ids:
            return False
        self._ids[event_id] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)
        return True
