"""`kubepay-sandbox up --forward-to URL`: which URL gets the Stripe fake's signed webhooks, and a line per delivery
attempt for the terminal, as `stripe listen --forward-to` prints them."""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from typing import Any

from kubepay_sandbox.stripe_fake import StripeFake

__all__ = ["check_url", "describe", "local_port", "print_deliveries"]

EXAMPLE = "http://127.0.0.1:8080/payments/webhook"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def check_url(url: str) -> str:
    """``url`` if it is an http(s) URL with a host and a valid port; ValueError saying what is wrong otherwise."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL such as {EXAMPLE}, not {url!r}")
    try:
        parts.port  # noqa: B018  (parsing the port is the check)
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port") from None
    return url


def local_port(url: str) -> int | None:
    """The port of a URL on this machine, where a `kubepay webhook` started from the env file should listen;
    None for another host."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname not in LOCAL_HOSTS:
        return None
    return parts.port or (443 if parts.scheme == "https" else 80)


def describe(attempt: dict[str, Any]) -> str:
    """One delivery attempt as a terminal line."""
    when = time.strftime("%H:%M:%S", time.localtime(attempt["time"]))
    answer = f"[{attempt['status']}]" if attempt["status"] is not None else f"({attempt['error']})"
    line = f"{when} --> {attempt['type']} [{attempt['event_id']}] <-- {answer} POST {attempt['url']}"
    if attempt["retry_in"] is not None:
        return f"{line}; retry in {attempt['retry_in']:g} s"
    if attempt["status"] is None or not 200 <= attempt["status"] < 300:
        return f"{line}; gave up after {attempt['attempt']} attempts"
    return line


async def print_deliveries(fake: StripeFake, interval: float = 0.5) -> None:
    """Print every delivery attempt of ``fake`` as it happens, until cancelled."""
    seen = 0
    while True:
        attempts = await fake.deliveries()
        for attempt in attempts[seen:]:
            print(describe(attempt), flush=True)
        seen = len(attempts)
        await asyncio.sleep(interval)
