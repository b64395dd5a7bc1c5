"""The one retry policy: which failures are outages (try again later), and how long to wait before trying.

An outage of Stripe, the Kubernetes API, PostgreSQL or Kafka, or a write that lost an optimistic-
concurrency race, is retried with a capped, jittered exponential backoff; every other failure is not.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from kubepay.kube.client import Conflict, KubeUnavailable
from kubepay.mirror.publisher import PublishFailed
from kubepay.postgres import StoreUnavailable
from kubepay.stripe.gateway import StripeUnavailable

RETRYABLE = (StripeUnavailable, KubeUnavailable, StoreUnavailable, PublishFailed, Conflict)
MAX_BACKOFF = 30.0  # after an outage, every resource catches up within this long of the return

T = TypeVar("T")


def backoff(retry: int, base: float = 1.0, cap: float = MAX_BACKOFF) -> float:
    """Exponential, capped, jittered so that callers failing together retry apart."""
    return float(min(cap, base * 2 ** min(retry, 10)) * random.uniform(0.8, 1.2))


def jittered(seconds: float) -> float:
    """Spread periodic work so resources created together do not all call Stripe together."""
    return seconds * random.uniform(0.9, 1.1)


async def until_done(call: Callable[[], Awaitable[T]], retry_on: tuple[type[BaseException], ...],
                     log: logging.Logger, what: str, base: float = 0.5, cap: float = MAX_BACKOFF) -> T:
    """Call until it succeeds, retrying `retry_on` failures with backoff; each failure is one log line."""
    attempt = 0
    while True:
        try:
            return await call()
        except retry_on as exc:
            delay = backoff(attempt, base, cap)
            attempt += 1
            log.warning("%s: %s; retrying in %.1fs", what, str(exc) or type(exc).__name__, delay)
        await asyncio.sleep(delay)
