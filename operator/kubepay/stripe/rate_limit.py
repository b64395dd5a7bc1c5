"""A client-side token bucket so the controller uses Stripe's rate limit fully and never exceeds it."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from typing import Any

# Refilling by elapsed time * rate leaves float dust (0.9999999999999998 tokens): that is a token.
_EPSILON = 1e-9
# The window is this much longer than Stripe's second: requests sent a second apart may arrive closer.
WINDOW_MARGIN = 0.02


class TokenBucket:
    """`rate` operations per second, at most `burst` of them at once; waiters are served in arrival order.

    Any one-second window holds at most `burst + rate - 1` operations, and at most `rate` with `window`:
    then the bucket also remembers the last `rate` operations and lets one through only when the oldest
    of them is a second (and `WINDOW_MARGIN`) old. The default burst of 1 paces operations evenly, so no
    second ever holds more than `rate` of them; but a busy event loop wakes a waiter late, and every late
    wake-up is budget lost, since a bucket of depth 1 cannot save it. A deeper bucket with the window
    catches up after a late wake-up and still never puts more than `rate` into any second.
    """

    def __init__(
        self,
        rate: float,
        burst: float = 1.0,
        *,
        window: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"need rate > 0 and burst >= 1, got rate={rate}, burst={burst}")
        self._rate = rate
        self._capacity = float(burst)
        self._clock, self._sleep = clock, sleep
        self._tokens = self._capacity
        self._updated = clock()
        self._lock = asyncio.Lock()
        self._recent: collections.deque[float] | None = (
            collections.deque(maxlen=max(1, int(rate))) if window else None)

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
        self._updated = now

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                self._refill()
                wait = max((1 - self._tokens) / self._rate, self._window_wait())
                if wait <= _EPSILON:
                    self._tokens -= 1
                    if self._recent is not None:
                        self._recent.append(self._clock())
                    return
                await self._sleep(wait)

    def _window_wait(self) -> float:
        """How long until one more operation keeps every one-second window within the rate."""
        recent = self._recent
        if recent is None or len(recent) < (recent.maxlen or 0):
            return 0.0
        return recent[0] + 1.0 + WINDOW_MARGIN - self._clock()

    def pause(self, seconds: float) -> None:
        """Drain the bucket after a 429 so every caller backs off together for `seconds` from now."""
        self._refill()  # else the time since the last acquire would be credited after the pause
        self._tokens = min(self._tokens, 0.0) - seconds * self._rate


class StripeBudget:
    """Stripe's rate limit shared by urgent work and background reads, so background never starves urgent work.

    Urgent requests (creating, changing or canceling a payment, a new refund) take a token from the one
    bucket at the full rate. Background requests (catch-up and periodic resync reads, the Events API
    backfill) first take a token from a second bucket at `background_share` of the rate, so together they
    never hold more than that share of any second, and an urgent request waits behind at most one of them.
    """

    def __init__(self, rate: float, background_share: float = 0.5, **bucket: Any) -> None:
        if not 0 < background_share <= 1:
            raise ValueError(f"need 0 < background_share <= 1, got {background_share}")
        self.rate = rate
        # A tenth of a second of budget saved for a late wake-up; the window keeps every second within the rate.
        self._all = TokenBucket(rate, **{"burst": max(1.0, rate / 10), "window": True, **bucket})
        self._background = TokenBucket(rate * background_share, **bucket)

    async def acquire(self, background: bool = False) -> None:
        if background:
            await self._background.acquire()
        await self._all.acquire()

    def pause(self, seconds: float) -> None:
        """After a 429 every caller backs off together."""
        self._all.pause(seconds)
