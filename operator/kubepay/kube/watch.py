"""One kind's objects as a stream of changes: a LIST in pages, then a WATCH from the list's resourceVersion.

The watch is resumed from the last version seen whenever the server ends it, and a new LIST starts over when
the server no longer has that version (410 Gone). An API outage is waited out with one log line and backoff.
Objects arrive as the server's JSON; the controller keeps only what it needs of each.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

from kubepay.kube.client import KubeClient, KubeUnavailable
from kubepay.retry import backoff

log = logging.getLogger(__name__)

PAGE = 500
WATCH_SECONDS = 300


class Seen(Enum):
    LISTED = "LISTED"  # one object of a (re)list
    SYNCED = "SYNCED"  # the (re)list is complete: objects not listed since RELISTING are gone
    RELISTING = "RELISTING"
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


@dataclass(frozen=True)
class Change:
    seen: Seen
    body: dict[str, Any]


class _Expired(Exception):
    """The server no longer has the version the watch asked for: list again."""


async def changes(kube: KubeClient, plural: str, namespace: str | None) -> AsyncIterator[Change]:
    """Every change to `plural` objects, forever."""
    failures = 0
    version: str | None = None
    while True:
        try:
            if version is None:
                yield Change(Seen.RELISTING, {})
                token: str | None = None
                first: str | None = None
                while True:
                    page = await kube.list_page(plural, namespace, PAGE, token)
                    # Real API servers serve every page from the first one's snapshot; watching from it also
                    # replays whatever changed while later pages were read, should a server serve them live.
                    first = first or str(page["metadata"]["resourceVersion"])
                    for item in page.get("items") or ():
                        yield Change(Seen.LISTED, item)
                    token = page["metadata"].get("continue")
                    if not token:
                        break
                version = first
                failures = _recovered(plural, failures)
                yield Change(Seen.SYNCED, {})
            started = asyncio.get_running_loop().time()
            async for event in kube.watch(plural, namespace, version, WATCH_SECONDS):
                kind, body = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if body.get("code") == 410:
                        raise _Expired(body.get("message"))
                    raise KubeUnavailable(f"watch of {plural} failed: {body.get('message')}")
                version = str((body.get("metadata") or {}).get("resourceVersion") or version)
                failures = _recovered(plural, failures)
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    yield Change(Seen(kind), body)
            if asyncio.get_running_loop().time() - started < 1:
                await asyncio.sleep(1)  # a server that ends watches at once is not asked again and again
        except _Expired:
            version = None
        except KubeUnavailable as exc:
            failures += 1
            if failures == 1:
                log.warning("waiting for the Kubernetes API to watch %s: %s", plural, exc)
            await asyncio.sleep(backoff(failures))


def _recovered(plural: str, failures: int) -> int:
    if failures:
        log.info("watching %s again", plural)
    return 0
