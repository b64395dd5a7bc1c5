"""The receiver's aiohttp application: webhook routes, health and readiness (metrics have their own port)."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from kubepay import metrics
from kubepay.kube.client import KubeClient
from kubepay.postgres import StoreUnavailable
from kubepay.retry import RETRYABLE
from kubepay.store import Store
from kubepay.stripe import event_shape, signature
from kubepay.stripe import events as stripe_events
from kubepay.stripe.seen_events import SeenEvents
from kubepay_webhook.serving import KUBE, STORE, add_health_routes

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
SECRET: web.AppKey[str] = web.AppKey("webhook_secret", str)
# With a namespace, events about resources elsewhere belong to another kubepay release (answered 200).
NAMESPACE: web.AppKey[str | None] = web.AppKey("namespace", str)  # type: ignore[arg-type]
SEEN: web.AppKey[SeenEvents] = web.AppKey("seen_events", SeenEvents)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def webhook(request: web.Request) -> web.Response:
    started = time.monotonic()
    response = await _delivery(request)
    metrics.WEBHOOK_DURATION.labels(str(response.status)).observe(time.monotonic() - started)
    return response


async def _delivery(request: web.Request) -> web.Response:
    try:
        payload = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _rejected(request, 413, f"body larger than {MAX_BODY} bytes")
    try:
        event = signature.verify(payload, request.headers.get("Stripe-Signature"), request.app[SECRET])
    except signature.BadRequest as exc:
        metrics.WEBHOOK_EVENTS.labels("invalid", "rejected").inc()
        return _rejected(request, 400, str(exc))
    except event_shape.InvalidEvent as exc:
        return await _invalid(request, exc)
    try:
        outcome = await stripe_events.handle(event, request.app[STORE], request.app[KUBE],
                                             request.app[NAMESPACE], request.app[SEEN])
    except RETRYABLE as exc:
        log.warning("Stripe event %s deferred (503, Stripe retries): %s", event["id"], exc,
                    extra={"stripe_event_id": event["id"]})
        stripe_events.count(event["type"], "unavailable")
        return _error(503, "temporarily unable to process the event; Stripe will retry")
    return web.json_response({"received": True, "outcome": outcome})


async def _invalid(request: web.Request, exc: event_shape.InvalidEvent) -> web.Response:
    """Signed, but unusable: kept in the ledger (replayable) and answered 2xx, so Stripe stops retrying."""
    try:
        await stripe_events.record_invalid(exc, request.app[STORE])
    except StoreUnavailable as unavailable:
        log.warning("Stripe event %s deferred (503, Stripe retries): %s", exc.event_id, unavailable,
                    extra={"stripe_event_id": exc.event_id})
        return _error(503, "temporarily unable to record the event; Stripe will retry")
    return web.json_response({"received": True, "outcome": "invalid", "error": exc.reason})


def _rejected(request: web.Request, status: int, reason: str) -> web.Response:
    """A delivery refused for good: one warning with the reason and the sender, never the payload."""
    log.warning("webhook delivery rejected (%d): %s", status, reason,
                extra={"remote": request.remote, "path": request.path})
    return _error(status, reason)


def make_app(store: Store, kube: KubeClient, webhook_secret: str, namespace: str | None = None) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[STORE], app[KUBE], app[SECRET], app[NAMESPACE] = store, kube, webhook_secret, namespace
    app[SEEN] = SeenEvents()
    app.router.add_post("/payments/webhook", webhook)
    app.router.add_post("/webhooks/stripe", webhook)
    add_health_routes(app)
    return app
