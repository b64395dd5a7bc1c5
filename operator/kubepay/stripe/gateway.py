"""Stripe calls with idempotency keys, a client-side rate limit and errors sorted into retry or give up."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import stripe

from kubepay import __version__, metrics
from kubepay.stripe.api_version import STRIPE_API_VERSION
from kubepay.stripe.rate_limit import StripeBudget

log = logging.getLogger(__name__)
T = TypeVar("T")
ATTEMPTS = 3
DEFAULT_RETRY_AFTER = 2.0


def _retry_after(exc: stripe.StripeError) -> float:
    """Stripe's Retry-After header when it sends one, else a couple of seconds."""
    try:
        return max(0.1, float((exc.headers or {}).get("Retry-After", DEFAULT_RETRY_AFTER)))
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER


@dataclass
class StripeRejected(Exception):
    """Stripe refused the request for a reason retrying cannot fix (bad spec, declined card, ...)."""

    code: str
    message: str
    decline_code: str = ""

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def failure(self) -> dict[str, str]:
        result = {"code": self.code, "declineCode": self.decline_code, "message": self.message}
        return {key: value for key, value in result.items() if value}


@dataclass
class StripeUnavailable(Exception):
    """Network trouble, 5xx or 429: retry after `retry_after` seconds."""

    message: str
    retry_after: float
    rate_limited: bool = False  # a 429

    def __str__(self) -> str:
        return self.message


def _observe(operation: str, failure: StripeRejected | StripeUnavailable | None, started: float) -> None:
    """Count one Stripe call and its duration under its outcome: ok, rate_limited, unavailable or rejected."""
    if failure is None:
        outcome = "ok"
    elif isinstance(failure, StripeRejected):
        outcome = "rejected"
    else:
        outcome = "rate_limited" if failure.rate_limited else "unavailable"
    metrics.STRIPE_REQUESTS.labels(operation, outcome).inc()
    metrics.STRIPE_REQUEST_DURATION.labels(operation, outcome).observe(time.monotonic() - started)


class StripeGateway:
    """The Stripe operations kubepay performs, as plain dicts."""

    def __init__(self, api_key: str, api_base: str | None = None, rate_limit: float = 20.0,
                 background_share: float = 0.5) -> None:
        self._http = stripe.AIOHTTPClient(timeout=30)
        stripe.set_app_info("kubepay", version=__version__)
        self._client = stripe.StripeClient(
            api_key,
            stripe_version=STRIPE_API_VERSION,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=0,  # retried in _call, so that every attempt goes through the rate limiter
            http_client=self._http,
        )
        self._budget = StripeBudget(rate_limit, background_share)

    async def close(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

    async def _call(self, operation: str, fn: Callable[[], Awaitable[T]], background: bool = False) -> T:
        """One Stripe call; transient failures are retried here, each attempt taking a token from the budget.

        `background`: a read that may wait (a resync, the backfill); it never delays urgent work.
        """
        waiting = metrics.STRIPE_LIMITER_WAITING.labels("background" if background else "urgent")
        for attempt in range(1, ATTEMPTS + 1):
            with waiting.track_inprogress():
                await self._budget.acquire(background)
            started = time.monotonic()
            try:
                result = await fn()
            except stripe.StripeError as exc:
                failure = self._classify(exc)
                _observe(operation, failure, started)
                if isinstance(failure, StripeRejected) or attempt == ATTEMPTS:
                    raise failure from exc
                await asyncio.sleep(min(failure.retry_after, 0.5 * 2**attempt))
                continue
            _observe(operation, None, started)
            return result
        raise AssertionError("unreachable")

    def _classify(self, exc: stripe.StripeError) -> StripeRejected | StripeUnavailable:
        status = exc.http_status or 0
        if isinstance(exc, stripe.RateLimitError):
            wait = _retry_after(exc)
            self._budget.pause(wait)  # everyone backs off, not just this caller
            return StripeUnavailable("Stripe rate limit reached", wait, rate_limited=True)
        transient = isinstance(exc, stripe.APIConnectionError | stripe.APIError) or status >= 500 or (
            status == 409 and not isinstance(exc, stripe.IdempotencyError))
        if transient:
            return StripeUnavailable(f"Stripe unavailable: {type(exc).__name__} {status or ''}".strip(), 5.0)
        error = exc.error
        return StripeRejected(
            code=str(getattr(error, "code", None) or exc.code or type(exc).__name__),
            message=str(getattr(error, "message", None) or exc.user_message or "Stripe refused the request"),
            decline_code=str(getattr(error, "decline_code", None) or ""),
        )

    async def _object(self, operation: str, fn: Callable[[], Awaitable[stripe.StripeObject]],
                      background: bool = False) -> dict[str, Any]:
        return (await self._call(operation, fn, background)).to_dict()

    async def create_intent(self, params: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        intents, options = self._client.v1.payment_intents, {"idempotency_key": idempotency_key}
        return await self._object("create_intent", lambda: intents.create_async(params, options))  # type: ignore[arg-type]

    async def retrieve_intent(self, intent_id: str, background: bool = False) -> dict[str, Any]:
        """With the latest charge expanded, so refunds are visible."""
        intents = self._client.v1.payment_intents
        return await self._object("retrieve_intent",
                                  lambda: intents.retrieve_async(intent_id, {"expand": ["latest_charge"]}), background)

    async def update_intent(self, intent_id: str, params: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        intents, options = self._client.v1.payment_intents, {"idempotency_key": idempotency_key}
        return await self._object("update_intent",
                                  lambda: intents.update_async(intent_id, params, options))  # type: ignore[arg-type]

    async def capture_intent(self, intent_id: str, amount: int | None, idempotency_key: str) -> dict[str, Any]:
        params: dict[str, Any] = {"amount_to_capture": amount} if amount else {}
        intents, options = self._client.v1.payment_intents, {"idempotency_key": idempotency_key}
        return await self._object("capture_intent",
                                  lambda: intents.capture_async(intent_id, params, options))  # type: ignore[arg-type]

    async def cancel_intent(self, intent_id: str, idempotency_key: str) -> dict[str, Any]:
        intents = self._client.v1.payment_intents
        return await self._object("cancel_intent",
                                  lambda: intents.cancel_async(intent_id, options={"idempotency_key": idempotency_key}))

    async def create_refund(self, params: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        refunds, options = self._client.v1.refunds, {"idempotency_key": idempotency_key}
        return await self._object("create_refund", lambda: refunds.create_async(params, options))  # type: ignore[arg-type]

    async def retrieve_refund(self, refund_id: str, background: bool = False) -> dict[str, Any]:
        refunds = self._client.v1.refunds
        return await self._object("retrieve_refund", lambda: refunds.retrieve_async(refund_id), background)

    async def events_since(self, created_gte: int, types: frozenset[str]) -> AsyncIterator[dict[str, Any]]:
        """Stripe's Events API, newest first, filtered here by type; callers must not depend on order."""
        starting_after: str | None = None
        while True:
            params: dict[str, Any] = {"created": {"gte": created_gte}, "limit": 100}
            if starting_after:
                params["starting_after"] = starting_after
            listing = functools.partial(self._client.v1.events.list_async, params)  # type: ignore[arg-type]
            page = await self._call("list_events", listing, background=True)
            for event in page.data:
                if event.type in types:
                    yield event.to_dict()
            if not page.has_more or not page.data:
                return
            starting_after = page.data[-1].id
