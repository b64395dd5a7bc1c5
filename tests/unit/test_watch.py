"""The watch stream: a paged list, a watch from its version, resumed, relisted on 410, outages waited out;
and the peering rule that keeps a standby controller waiting."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from kubepay.controller.standby import outranked
from kubepay.kube import watch
from kubepay.kube.client import KubeClient, KubeUnavailable
from kubepay.kube.watch import Change, Seen


def _obj(name: str, rv: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "shop", "name": name, "resourceVersion": rv}}


class ScriptedKube:
    """Answers list pages and watches from scripts; records the versions watches started from."""

    def __init__(self, pages: list[list[dict[str, Any]]], watches: list[list[dict[str, Any]] | Exception]) -> None:
        self.pages, self.watches = pages, watches
        self.lists = 0
        self.watched_from: list[str] = []

    async def list_page(self, plural: str, namespace: str | None, limit: int, token: str | None) -> dict[str, Any]:
        index = int(token or 0)
        self.lists += index == 0
        meta: dict[str, Any] = {"resourceVersion": f"{10 * self.lists + index}"}
        if index + 1 < len(self.pages):
            meta["continue"] = str(index + 1)
        return {"metadata": meta, "items": self.pages[index]}

    async def watch(self, plural: str, namespace: str | None, resource_version: str,
                    timeout_seconds: int) -> AsyncIterator[dict[str, Any]]:
        self.watched_from.append(resource_version)
        script = self.watches.pop(0) if self.watches else []
        if isinstance(script, Exception):
            raise script
        for event in script:
            yield event


async def _first(kube: ScriptedKube, count: int) -> list[Change]:
    seen: list[Change] = []
    async for change in watch.changes(cast(KubeClient, kube), "paymentintents", None):
        seen.append(change)
        if len(seen) == count:
            break
    return seen


async def test_a_paged_list_then_a_watch_from_the_first_pages_version_resumed_from_the_last_seen(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch, "backoff", lambda failures: 0.0)
    kube = ScriptedKube([[_obj("a", "3")], [_obj("b", "4")]],
                        [[{"type": "MODIFIED", "object": _obj("a", "12")}],  # the server ends this watch
                         KubeUnavailable("Kubernetes API unreachable"),  # an outage: waited out
                         [{"type": "BOOKMARK", "object": _obj("", "15")},
                          {"type": "DELETED", "object": _obj("b", "16")}]])
    seen = await _first(kube, 6)
    assert [(c.seen, c.body.get("metadata", {}).get("name")) for c in seen] == [
        (Seen.RELISTING, None), (Seen.LISTED, "a"), (Seen.LISTED, "b"), (Seen.SYNCED, None),
        (Seen.MODIFIED, "a"), (Seen.DELETED, "b")]
    assert kube.watched_from == ["10", "12", "12"]  # the list's snapshot, then the last version seen


async def test_an_expired_version_lists_again() -> None:
    expired = [{"type": "ERROR", "object": {"code": 410, "message": "too old resource version"}}]
    kube = ScriptedKube([[_obj("a", "3")]], [expired, expired])
    seen = await _first(kube, 8)
    assert [c.seen for c in seen] == [Seen.RELISTING, Seen.LISTED, Seen.SYNCED] * 2 + [Seen.RELISTING, Seen.LISTED]
    assert kube.lists == 3


def test_a_controller_waits_while_a_live_peer_has_a_higher_or_the_same_priority() -> None:
    now = datetime.datetime(2026, 12, 7, 12, 0, tzinfo=datetime.UTC)
    recent, old = (now - datetime.timedelta(seconds=5)).isoformat(), (now - datetime.timedelta(seconds=90)).isoformat()
    peers = {"me": {"priority": -200, "lastseen": recent, "lifetime": 60},
             "older": {"priority": -100, "lastseen": recent, "lifetime": 60},
             "younger": {"priority": -300, "lastseen": recent, "lifetime": 60},
             "dead": {"priority": 0, "lastseen": old, "lifetime": 60}}
    assert outranked(peers, "me", -200, now) == ["older"]
    assert outranked({**peers, "twin": {"priority": -200, "lastseen": recent}}, "me", -200, now) == ["older", "twin"]
    assert outranked(peers, "older", -100, now) == []
