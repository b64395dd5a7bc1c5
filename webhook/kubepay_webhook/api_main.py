"""`kubepay api`: run the payments HTTP API until SIGTERM (its own Deployment, its own ServiceAccount)."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from kubepay.config import Settings
from kubepay.kube_client import KubeClient
from kubepay.store import Store
from kubepay_webhook.api import ApiConfig, make_api_app

log = logging.getLogger(__name__)


async def serve(settings: Settings) -> None:
    store = await Store.connect(settings.database_url)
    kube = await KubeClient.connect()
    config = ApiConfig(settings.api_token, settings.api_namespace, settings.api_wait_seconds)
    runner = web.AppRunner(make_api_app(store, kube, config), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "0.0.0.0", settings.api_port)
    await site.start()
    log.info("payments API listening on port %d, creating payments in namespace %s",
             settings.api_port, settings.api_namespace)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await kube.close()
        await store.close()
