"""Watches: a replay from the requested resourceVersion (or the current objects), 410 Gone when it is older than the
history, bookmarks, then the writes as they happen until the timeout, the client leaving or the server stopping."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json

import aiohttp.web

from kubepay_sandbox.kube_emulator.errors import ApiError
from kubepay_sandbox.kube_emulator.query import is_true
from kubepay_sandbox.kube_emulator.resources import JsonDict, Resource
from kubepay_sandbox.kube_emulator.selectors import Selector
from kubepay_sandbox.kube_emulator.storage import Event, Store, Subscription


@dataclasses.dataclass(frozen=True)
class WatchScope:
    """What one watch sees: a namespace (or all) and a selector."""

    namespace: str | None
    selector: Selector

    def render(self, event: Event) -> JsonDict | None:
        """The watch event a write is to this watch (a MODIFIED that enters or leaves the selection is an ADDED or
        a DELETED), or None if the watch does not see it."""
        obj_ns = event.obj["metadata"].get("namespace")
        if self.namespace is not None and obj_ns != self.namespace:
            return None
        now_matches = self.selector.matches(event.obj)
        was_matching = event.old is not None and self.selector.matches(event.old)
        kind = event.type
        if kind == "MODIFIED":
            if now_matches and not was_matching:
                kind = "ADDED"
            elif was_matching and not now_matches:
                kind = "DELETED"
            elif not now_matches:
                return None
        elif not now_matches:
            return None
        return {"type": kind, "object": event.obj}


async def watch(
    store: Store, raw: aiohttp.web.BaseRequest, res: Resource, namespace: str | None, selector: Selector
) -> aiohttp.web.StreamResponse:
    params = raw.query
    try:
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
    except ValueError:
        raise ApiError.bad_request("invalid timeoutSeconds") from None
    since = params.get("resourceVersion") or ""
    bookmarks = is_true(params.get("allowWatchBookmarks"))
    send_initial = is_true(params.get("sendInitialEvents"))

    # Synchronously (no awaits): compute the replay and subscribe, so that nothing is lost between.
    scope = WatchScope(namespace, selector)
    initial: list[JsonDict] = []
    gone = False
    if since in ("", "0") or send_initial:
        initial = [{"type": "ADDED", "object": obj} for obj in store.select(res, namespace, selector)]
    else:
        try:
            start_rv = int(since)
        except ValueError:
            raise ApiError.bad_request(f"invalid resource version: {since}") from None
        if start_rv < store.history_floor:
            gone = True
        else:
            for event in store.history:
                if event.rv > start_rv and event.store_key == res.store_key:
                    rendered = scope.render(event)
                    if rendered is not None:
                        initial.append(rendered)
    if send_initial and bookmarks:
        initial.append(
            {
                "type": "BOOKMARK",
                "object": {
                    "kind": res.kind,
                    "apiVersion": res.api_version,
                    "metadata": {
                        "resourceVersion": str(store.rv),
                        "annotations": {"k8s.io/initial-events-end": "true"},
                    },
                },
            }
        )
    subscription: Subscription | None = None if gone else store.subscribe(res.store_key)

    response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    try:
        await response.prepare(raw)
        if subscription is None:
            await _write(
                response,
                res,
                {
                    "type": "ERROR",
                    "object": {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Failure",
                        "message": f"too old resource version: {since} ({store.history_floor + 1})",
                        "reason": "Expired",
                        "code": 410,
                    },
                },
            )
            return response
        for item in initial:
            await _write(response, res, item)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout is not None else None
        while True:
            remaining = deadline - loop.time() if deadline is not None else None
            if remaining is not None and remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    queued = await subscription.queue.get()
            except TimeoutError:
                break
            if queued is None:
                break
            rendered = scope.render(queued)
            if rendered is not None:
                await _write(response, res, rendered)
    except (ConnectionError, RuntimeError):
        pass  # the client went away
    finally:
        if subscription is not None:
            store.unsubscribe(subscription)
    with contextlib.suppress(ConnectionError, RuntimeError):
        await response.write_eof()
    return response


async def _write(response: aiohttp.web.StreamResponse, res: Resource, event: JsonDict) -> None:
    obj = event["object"]
    if obj.get("apiVersion") != res.api_version and event["type"] != "ERROR":
        event = {"type": event["type"], "object": {**obj, "apiVersion": res.api_version}}
    await response.write(json.dumps(event).encode() + b"\n")
