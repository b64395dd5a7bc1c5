"""`kubepay webhook`: run the receiver until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from kubepay import migrate
from kubepay.config import Settings
from kubepay.kube_client import KubeClient
from kubepay.store import Store
from kubepay_webhook.app import make_app

log = logging.getLogger(__name__)


async def serve(settings: Settings) -> None:
    if settings.migrate_on_start:
        await asyncio.to_thread(migrate.upgrade, settings.database_url)
    store = await Store.connect(settings.database_url)
    kube = await KubeClient.connect()
    runner = web.AppRunner(make_app(store, kube, settings.stripe_webhook_secret), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "0.0.0.0", settings.http_port)
    await site.start()
    log.info("webhook receiver listening on port %d", settings.http_port)
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
