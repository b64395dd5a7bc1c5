"""What the receiver and the API processes share: their dependencies, health endpoints and run loop."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from aiohttp import web

from kubepay import dependencies, migrate
from kubepay.config import Settings
from kubepay.kube.client import KubeClient, KubeUnavailable
from kubepay.store import Store, StoreUnavailable

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
    store = await dependencies.store(settings.database_url)
    if settings.migrate_on_start:
        await asyncio.to_thread(migrate.upgrade, settings.database_url)
    kube = await dependencies.kube()
    runner = web.AppRunner(make_app(store, kube), access_log=None)
    try:
        await runner.setup()
        await web.TCPSite(runner, "0.0.0.0", port).start()
        log.info("%s listening on port %d", what, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
        await kube.close()
        await store.close()
