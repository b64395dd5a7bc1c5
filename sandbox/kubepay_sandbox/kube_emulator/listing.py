"""The list verb: the selected objects, a page at a time (``limit`` and ``continue`` tokens)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping

from kubepay_sandbox.kube_emulator.errors import ApiError
from kubepay_sandbox.kube_emulator.resources import JsonDict, Resource
from kubepay_sandbox.kube_emulator.selectors import selector_from
from kubepay_sandbox.kube_emulator.storage import Store


def list_objects(store: Store, res: Resource, namespace: str | None, params: Mapping[str, str]) -> JsonDict:
    items = store.select(res, namespace, selector_from(res, params))
    meta: JsonDict = {"resourceVersion": str(store.rv)}
    start = 0
    if params.get("continue"):
        try:
            token = json.loads(base64.urlsafe_b64decode(params["continue"].encode()))
            start = int(token["start"])
        except (ValueError, KeyError, TypeError):
            raise ApiError.bad_request("invalid continue token") from None
    limit = int(params.get("limit") or 0)
    page = items[start : start + limit] if limit > 0 else items[start:]
    if limit > 0 and start + limit < len(items):
        meta["continue"] = base64.urlsafe_b64encode(json.dumps({"start": start + limit}).encode()).decode()
        meta["remainingItemCount"] = len(items) - start - limit
    return {
        "kind": f"{res.kind}List",
        "apiVersion": res.api_version,
        "metadata": meta,
        "items": [store.output(res, obj) for obj in page],
    }
