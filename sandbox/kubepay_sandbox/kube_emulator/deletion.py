"""Deletion: preconditions, finalizers (a marked deletion until the last one is removed), garbage collection of the
dependents through ownerReferences, a namespace taking its objects with it, and deletecollection."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from kubepay_sandbox.kube_emulator.errors import ApiError
from kubepay_sandbox.kube_emulator.query import dry_run
from kubepay_sandbox.kube_emulator.resources import JsonDict, Resource
from kubepay_sandbox.kube_emulator.selectors import Selector, selector_from
from kubepay_sandbox.kube_emulator.storage import Store, now


def delete(
    store: Store, res: Resource, namespace: str | None, name: str, options: Any, params: Mapping[str, str]
) -> JsonDict:
    old = store.stored(res, namespace, name)
    options = options if isinstance(options, dict) else {}
    preconditions = options.get("preconditions") or {}
    if preconditions.get("uid") and preconditions["uid"] != old["metadata"]["uid"]:
        raise ApiError(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {res.store_key} "{name}": '
            f"Precondition failed: UID in precondition: {preconditions['uid']}, "
            f"UID in object meta: {old['metadata']['uid']}",
        )
    if (
        preconditions.get("resourceVersion")
        and preconditions["resourceVersion"] != old["metadata"]["resourceVersion"]
    ):
        raise ApiError.conflict(res, name)
    if dry_run(params):
        return store.output(res, old)
    policy = options.get("propagationPolicy") or params.get("propagationPolicy") or "Background"
    orphan = policy == "Orphan" or options.get("orphanDependents") is True
    if res.plural == "namespaces":
        for other in store.stored_resources():
            if other.namespaced:
                for obj in store.select(other, name, Selector()):
                    current = store.current(other, obj)
                    if current is not None:
                        delete_object(store, other, current, orphan=False)
    result = delete_object(store, res, old, orphan=orphan)
    if result is not None:
        return store.output(res, result)
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "group": res.group, "kind": res.plural, "uid": old["metadata"]["uid"]},
    }


def delete_object(store: Store, res: Resource, old: JsonDict, *, orphan: bool) -> JsonDict | None:
    """Delete now, or mark for deletion if there are finalizers (then return the marked object)."""
    if old["metadata"].get("finalizers"):
        if old["metadata"].get("deletionTimestamp"):
            return old
        new = copy.deepcopy(old)
        new["metadata"]["deletionTimestamp"] = now()
        new["metadata"]["deletionGracePeriodSeconds"] = 0
        if new["metadata"].get("generation"):  # as the API server's markAsDeleting does
            new["metadata"]["generation"] += 1
        return store.commit(res, "MODIFIED", new, old)
    remove(store, res, copy.deepcopy(old), old, orphan=orphan)
    return None


def remove(store: Store, res: Resource, final: JsonDict, old: JsonDict, *, orphan: bool = False) -> JsonDict:
    """Make the object disappear (DELETED), then collect its dependents (ownerReferences)."""
    store.commit(res, "DELETED", final, old)
    if not orphan:
        uid = old["metadata"]["uid"]
        namespace = old["metadata"].get("namespace") if res.namespaced else None
        for other in store.stored_resources():
            for obj in store.all(other):
                if namespace is not None and obj["metadata"].get("namespace") != namespace:
                    continue
                owners = obj["metadata"].get("ownerReferences") or []
                if any(owner.get("uid") == uid for owner in owners):
                    current = store.current(other, obj)
                    if current is not None:
                        delete_object(store, other, current, orphan=False)
    return final


def delete_collection(store: Store, res: Resource, namespace: str | None, params: Mapping[str, str]) -> JsonDict:
    deleted = []
    for obj in store.select(res, namespace, selector_from(res, params)):
        current = store.current(res, obj)
        if current is not None:
            marked = delete_object(store, res, current, orphan=False)
            deleted.append(marked if marked is not None else current)
    return {
        "kind": f"{res.kind}List",
        "apiVersion": res.api_version,
        "metadata": {"resourceVersion": str(store.rv)},
        "items": [store.output(res, o) for o in deleted],
    }
