"""What the receiver and the API processes share: their dependencies, health endpoints and run loop."""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from kubepay import dependencies, http_server
from kubepay.config import Settings
from kubepay.kube.client import KubeClient, KubeUnavailable
from kubepay.postgres import StoreUnavailable
from kubepay.store import Store

log = logging.getLogger(__name__)

STORE: web.AppKey[Store] = web.AppKey("store", Store)
KUBE: web.AppKey[KubeClient] = web.AppKey("kube", KubeClient)


async def healthz(_: web.Request) -> web.Response:
    """Liveness as the Go payment-service answered it: 200, `ok`, text/plain."""
    return web.Response(text="ok", content_type="text/plain")


async def readyz(request: web.Request) -> web.Response:
    """Ready only when PostgreSQL and the Kubernetes API (with kubepay's CRDs) both answer."""
    problems: dict[str, str] = {}
    try:
        await request.app[STORE].ping()
    except StoreUnavailable as exc:
        problems["postgres"] = str(exc)
    try:
        await request.app[KUBE].ping()
    except KubeUnavailable as exc:
        problems["kubernetes"] = str(exc)
    if problems:
        return web.json_response({"status": "unavailable", "problems": problems}, status=503)
    return web.json_response({"status": "ready"})


def add_health_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


async def serve(settings: Settings, port: int, make_app: Callable[[Store, KubeClient], web.Application],
                what: str) -> None:
    """Connect, serve `make_app` on `port` until SIGTERM or SIGINT, then close everything."""
    store = await dependencies.store(settings)
    try:
        kube = await dependencies.kube()
        try:
            await http_server.serve_until_stopped(make_app(store, kube), port, what)
        finally:
            await kube.close()
    finally:
        await store.close()
