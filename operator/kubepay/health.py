"""Liveness and readiness answers shared by every kubepay process that serves them.

Liveness says the process loop runs (a restart cures a wedged loop); readiness says start-up finished and every
dependency answers (an unready pod gets no traffic, and a restart would not help).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from kubepay.retry import RETRYABLE

Check = Callable[[], Awaitable[None]]
TIMEOUT = 5.0


async def alive(_: web.Request) -> web.Response:
    """Liveness as the Go payment-service answered it: 200, `ok`, text/plain."""
    return web.Response(text="ok", content_type="text/plain")


async def _problem(check: Check) -> str | None:
    try:
        await asyncio.wait_for(check(), TIMEOUT)
    except TimeoutError:
        return f"no answer within {TIMEOUT:g} s"
    except RETRYABLE as exc:  # the clients' own words: hosts and reasons, never credentials
        return str(exc)
    return None


async def problems(checks: Mapping[str, Check]) -> dict[str, str]:
    """Run every check at once; each unavailable dependency by name, with why. Anything else is a bug, and
    raises (aiohttp answers 500 and logs it)."""
    found = await asyncio.gather(*(_problem(check) for check in checks.values()))
    return {name: problem for name, problem in zip(checks, found, strict=True) if problem}


def readiness(found: Mapping[str, str]) -> web.Response:
    if found:
        return web.json_response({"status": "unavailable", "problems": dict(found)}, status=503)
    return web.json_response({"status": "ready"})
