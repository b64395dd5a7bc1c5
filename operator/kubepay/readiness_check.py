"""`kubepay check-ready URL [URL...]`: GET each URL once and succeed only if every one answers 2xx in time.

The chart's `helm test` hook runs it in the kubepay image against the receiver's and the API's /readyz through
their Services. It sends no credentials and prints one line per URL (its status, or why it failed) and nothing
of the answers' bodies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiohttp

DEFAULT_TIMEOUT = 10.0


async def check(url: str, session: aiohttp.ClientSession) -> tuple[bool, str]:
    """(2xx?, one line saying what came back)."""
    try:
        async with session.get(url, allow_redirects=False) as response:
            ok = 200 <= response.status < 300
            return ok, f"{url}: {response.status} {response.reason or ''}".rstrip()
    except TimeoutError:
        return False, f"{url}: no answer in time"
    except aiohttp.ClientError as exc:
        return False, f"{url}: {type(exc).__name__}: {exc}"


async def check_all(urls: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> tuple[bool, list[str]]:
    """Every URL at once, each within `timeout` seconds; (all 2xx?, one line per URL in the given order)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        results = await asyncio.gather(*(check(url, session) for url in urls))
    return all(ok for ok, _ in results), [line for _, line in results]


def main(urls: Sequence[str], timeout: float = DEFAULT_TIMEOUT) -> int:
    """Print one line per URL; the exit code: 0 if all answered 2xx, else 1."""
    ok, lines = asyncio.run(check_all(urls, timeout))
    for line in lines:
        print(line, flush=True)
    return 0 if ok else 1
