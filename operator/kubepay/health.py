"""Liveness and readiness answers shared by every kubepay process that serves them.

Liveness says the process loop runs (a restart cures a wedged loop); readiness says start-up finished and every
dependency answers (an unready pod gets no traffic, and a restart would not help).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

Check = Callable[[], Awaitable[None]]
TIMEOUT = 5.0


async def alive(_: web.Request) -> web.Response:
    """Liveness as the Go payment-service answered it: 200, `ok`, text/plain."""
    return web.Response(text="ok", content_type="text/plain")


async def problems(checks: Mapping[str, Check]) -> dict[str, str]:
    """Run every check at once; each failing dependency by name, with its error (never a secret: the clients'
    errors name hosts and reasons only)."""
    async def run(check: Check) -> None:
        await asyncio.wait_for(check(), TIMEOUT)

    results = await asyncio.gather(*(run(check) for check in checks.values()), return_exceptions=True)
    return {name: str(result) or type(result).__name__
            for name, result in zip(checks, results, strict=True) if isinstance(result, Exception)}


def readiness(found: Mapping[str, str]) -> web.Response:
    if found:
        return web.json_response({"status": "unavailable", "problems": dict(found)}, status=503)
    return web.json_response({"status": "ready"})
