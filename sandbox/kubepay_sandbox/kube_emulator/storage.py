"""The emulator's storage: the served resources, the objects by resource and (namespace, name), the cluster's
resourceVersion, the recent history of writes (for watches that resume) and who is subscribed to new writes."""

from __future__ import annotations

import asyncio
import collections
import copy
import dataclasses
import datetime
import threading
import uuid
from collections.abc import Mapping
from typing import Any

from kubepay_sandbox.kube_emulator.errors import ApiError
from kubepay_sandbox.kube_emulator.resources import JsonDict, Resource
from kubepay_sandbox.kube_emulator.selectors import Selector


def now() -> str:
    """A server timestamp (creationTimestamp, deletionTimestamp): RFC 3339, whole seconds, UTC."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass(frozen=True)
class Event:
    rv: int
    store_key: str
    type: str  # ADDED, MODIFIED, DELETED
    obj: JsonDict  # a snapshot: never mutated after it is recorded
    old: JsonDict | None


@dataclasses.dataclass(eq=False)
class Subscription:
    """A watch's queue of the writes to one storage (group+plural); None ends the watch."""

    store_key: str
    queue: asyncio.Queue[Event | None]


class Store:
    """Objects in memory. Written only from the emulator's event loop; :attr:`lock` guards what readers in other
    threads (the emulator's ``get`` and ``list``) see."""

    def __init__(self, history_limit: int) -> None:
        self.resources: dict[tuple[str, str, str], Resource] = {}
        self._objects: dict[str, dict[tuple[str | None, str], JsonDict]] = collections.defaultdict(dict)
        self.history: collections.deque[Event] = collections.deque(maxlen=max(1, history_limit))
        self.history_floor = 0  # the newest resourceVersion dropped from the history
        self._subscriptions: set[Subscription] = set()
        self.rv = 0
        self.lock = threading.Lock()

    # ----------------------------------------------------------------------------------------------
    # Resources
    # ----------------------------------------------------------------------------------------------

    def register(self, res: Resource) -> None:
        self.resources[(res.group, res.version, res.plural)] = res

    def lookup(self, group_version_plural: str) -> Resource:
        parts = group_version_plural.strip("/").split("/")
        if len(parts) == 2:
            parts = ["", *parts]
        if len(parts) != 3 or tuple(parts) not in self.resources:
            raise KeyError(f"Unknown resource: {group_version_plural!r}")
        return self.resources[(parts[0], parts[1], parts[2])]

    def stored_resources(self) -> list[Resource]:
        """One resource per stored group+plural (several served versions share one storage)."""
        unique: dict[str, Resource] = {}
        for res in self.resources.values():
            unique.setdefault(res.store_key, res)
        return list(unique.values())

    # ----------------------------------------------------------------------------------------------
    # Objects
    # ----------------------------------------------------------------------------------------------

    def find(self, res: Resource, namespace: str | None, name: str) -> JsonDict | None:
        """The stored object itself (not a copy), or None; ``namespace`` is ignored for cluster-scoped resources."""
        return self._objects[res.store_key].get((namespace if res.namespaced else None, name))

    def stored(self, res: Resource, namespace: str | None, name: str) -> JsonDict:
        obj = self.find(res, namespace, name)
        if obj is None:
            raise ApiError.not_found(res, name)
        return obj

    def current(self, res: Resource, obj: Mapping[str, Any]) -> JsonDict | None:
        """The stored version of ``obj`` (found by its metadata's namespace and name), or None once it is gone."""
        return self.find(res, obj["metadata"].get("namespace"), obj["metadata"]["name"])

    def all(self, res: Resource) -> list[JsonDict]:
        """Every object of the resource's storage, in no particular order."""
        return list(self._objects[res.store_key].values())

    def select(self, res: Resource, namespace: str | None, selector: Selector) -> list[JsonDict]:
        items = self._objects[res.store_key]
        return [
            items[key]
            for key in sorted(items, key=lambda k: (k[0] or "", k[1]))
            if (namespace is None or key[0] == namespace) and selector.matches(items[key])
        ]

    @staticmethod
    def output(res: Resource, obj: Mapping[str, Any]) -> JsonDict:
        """A copy to answer with, in the requested version."""
        out = copy.deepcopy(dict(obj))
        out["apiVersion"] = res.api_version
        return out

    # ----------------------------------------------------------------------------------------------
    # Writes
    # ----------------------------------------------------------------------------------------------

    @staticmethod
    def stamp_new(obj: JsonDict) -> None:
        meta = obj["metadata"]
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now()
        meta["generation"] = 1

    def commit(self, res: Resource, kind: str, obj: JsonDict, old: JsonDict | None) -> JsonDict:
        """Record a write: bump the resourceVersion, store (or drop), notify the subscribed watches."""
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        key = (obj["metadata"].get("namespace") if res.namespaced else None, obj["metadata"]["name"])
        event = Event(self.rv, res.store_key, kind, obj, old)
        with self.lock:  # only for the readers in other threads: get() and list()
            if kind == "DELETED":
                self._objects[res.store_key].pop(key, None)
            else:
                self._objects[res.store_key][key] = obj
            if len(self.history) == self.history.maxlen:
                self.history_floor = self.history[0].rv
            self.history.append(event)
        for subscription in self._subscriptions:
            if subscription.store_key == res.store_key:
                subscription.queue.put_nowait(event)
        return obj

    def ensure_namespace(self, namespace: str) -> None:
        if (None, namespace) not in self._objects["namespaces"]:
            res = self.resources[("", "v1", "namespaces")]
            obj: JsonDict = {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": namespace, "labels": {"kubernetes.io/metadata.name": namespace}},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            }
            self.stamp_new(obj)
            self.commit(res, "ADDED", obj, None)

    # ----------------------------------------------------------------------------------------------
    # Subscriptions (watches)
    # ----------------------------------------------------------------------------------------------

    def subscribe(self, store_key: str) -> Subscription:
        subscription = Subscription(store_key, asyncio.Queue())
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def end_watches(self) -> None:
        """Tell every watch to end (the server stops)."""
        for subscription in list(self._subscriptions):
            subscription.queue.put_nowait(None)
