"""What the receiver and the API processes share: their dependencies, health endpoints and run loop."""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from kubepay import dependencies, health, http_server, logs, metrics
from kubepay.config import Settings
from kubepay.kube.client import KubeClient
from kubepay.store import Store

log = logging.getLogger(__name__)

STORE: web.AppKey[Store] = web.AppKey("store", Store)
KUBE: web.AppKey[KubeClient] = web.AppKey("kube", KubeClient)


async def readyz(request: web.Request) -> web.Response:
    """Ready only when PostgreSQL and the Kubernetes API (with kubepay's CRDs) both answer."""
    return health.readiness(await health.problems({"postgres": request.app[STORE].ping,
                                                   "kubernetes": request.app[KUBE].ping}))


def add_health_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", health.alive)
    app.router.add_get("/readyz", readyz)


async def serve(settings: Settings, command: str, port: int,
                make_app: Callable[[Store, KubeClient], web.Application]) -> None:
    """Connect, serve `make_app` on `port` until SIGTERM or SIGINT, then close everything."""
    metrics.serve(settings.metrics_port)
    store = await dependencies.store(settings)
    try:
        kube = await dependencies.kube()
        try:
            app = make_app(store, kube)
            logs.started(command, settings, port)
            await http_server.serve_until_stopped(app, port, f"kubepay {command}")
        finally:
            await kube.close()
    finally:
        await store.close()
