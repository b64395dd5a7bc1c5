"""The run loop of every kubepay process that serves HTTP: serve until SIGTERM or SIGINT, then clean up."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

log = logging.getLogger(__name__)


async def start(app: web.Application, port: int) -> web.AppRunner:
    """Serve `app` on `port` in the background; the caller cleans the runner up."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "0.0.0.0", port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def serve_until_stopped(app: web.Application, port: int, what: str,
                              worker: asyncio.Task[None] | None = None) -> None:
    """Serve `app` on `port` until a stop signal or until `worker` ends; a failed worker exits with status 1."""
    runner = await start(app, port)
    stop = asyncio.Event()
    waiter = asyncio.create_task(stop.wait())
    try:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await asyncio.wait({waiter} | ({worker} if worker else set()), return_when=asyncio.FIRST_COMPLETED)
        if worker is not None and worker.done() and not worker.cancelled() and worker.exception() is not None:
            log.error("%s stopped: %r", what, worker.exception())
            raise SystemExit(1)
    finally:
        waiter.cancel()
        await runner.cleanup()
