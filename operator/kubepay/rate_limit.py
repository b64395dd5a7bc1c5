"""A client-side token bucket so the controller uses Stripe's rate limit fully and never exceeds it."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """`rate` operations per second with bursts of up to `burst`; waiters are served in arrival order."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self._rate = rate
        self._capacity = burst if burst is not None else max(1.0, rate)
        self._tokens = self._capacity
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self._rate)

    def pause(self, seconds: float) -> None:
        """Drain the bucket after a 429 so every caller backs off together."""
        self._tokens = min(self._tokens, 0.0) - seconds * self._rate
