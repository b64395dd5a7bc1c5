"""Lists as tables (``Accept: ...;as=Table``, what ``kubectl get`` asks for): a CRD's printer columns, or the
columns the real server prints for the built-in resources."""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from kubepay_sandbox.kube_emulator.resources import JsonDict, Resource, crd_version


def _human_age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    created = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    seconds = int((datetime.datetime.now(datetime.UTC) - created).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * 2 or (unit == "m" and seconds >= size):
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


_JSON_PATH_PART: Final = re.compile(r"""\[\?\(@\.([\w.-]+)\s*==\s*["']([^"']*)["']\)\]|\[(\d+)\]|([^.\[\]]+)""")


def _json_path(obj: Any, path: str) -> Any:
    """The printer columns' JSONPath: fields, indexes and `[?(@.type=="Ready")]` filters (first match)."""
    node = obj
    for match in _JSON_PATH_PART.finditer(path.strip().strip("{}").lstrip(".")):
        key, wanted, index, field = match.groups()
        if key is not None:
            found = [item for item in node if isinstance(item, Mapping) and str(item.get(key)) == wanted] if (
                isinstance(node, list)) else []
            node = found[0] if found else None
        elif index is not None:
            node = node[int(index)] if isinstance(node, list) and int(index) < len(node) else None
        else:
            node = node.get(field) if isinstance(node, Mapping) else None
    return node


# The server's own table columns (name, priority) of the built-in resources, as kubectl get prints them.
_BUILTIN_COLUMNS: Final[dict[str, tuple[tuple[str, int], ...]]] = {
    "namespaces": (("Name", 0), ("Status", 0), ("Age", 0)),
    "secrets": (("Name", 0), ("Type", 0), ("Data", 0), ("Age", 0)),
    "configmaps": (("Name", 0), ("Data", 0), ("Age", 0)),
    "events": (
        ("Last Seen", 0),
        ("Type", 0),
        ("Reason", 0),
        ("Object", 0),
        ("Subobject", 1),
        ("Source", 1),
        ("Message", 0),
        ("First Seen", 1),
        ("Count", 1),
        ("Name", 1),
    ),
}


def _builtin_cells(plural: str, obj: Mapping[str, Any]) -> list[Any]:
    meta = obj.get("metadata") or {}
    age = _human_age(meta.get("creationTimestamp"))
    if plural == "namespaces":
        return [meta.get("name"), (obj.get("status") or {}).get("phase", ""), age]
    if plural == "secrets":
        return [meta.get("name"), obj.get("type", ""), len(obj.get("data") or {}), age]
    if plural == "configmaps":
        return [meta.get("name"), len(obj.get("data") or {}) + len(obj.get("binaryData") or {}), age]
    # events, as the API server's event printer renders them
    first = obj.get("firstTimestamp") or obj.get("eventTime")
    series = obj.get("series") or {}
    last = series.get("lastObservedTime") or obj.get("lastTimestamp") or first
    involved = obj.get("involvedObject") or {}
    kind = str(involved.get("kind", "")).lower()
    source = obj.get("source") or {}
    component = source.get("component") or obj.get("reportingComponent") or ""
    host = source.get("host") or obj.get("reportingInstance") or ""
    return [
        _human_age(_whole_seconds(last)),
        obj.get("type", ""),
        obj.get("reason", ""),
        f"{kind}/{involved['name']}" if involved.get("name") else kind,
        involved.get("fieldPath", ""),
        f"{component}, {host}" if host else component,
        str(obj.get("message", "")).strip(),
        _human_age(_whole_seconds(first)),
        int(series.get("count") or obj.get("count") or 1),
        meta.get("name"),
    ]


def _whole_seconds(timestamp: Any) -> str | None:
    """RFC 3339 with or without fractions or an offset (events' eventTime is micro-precise) -> "...Z" seconds."""
    if not timestamp:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(str(timestamp).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def table(resources: Iterable[Resource], listing: JsonDict) -> JsonDict:
    """The list as a Table of the resource's columns (the first of ``resources`` whose list it is)."""
    res = next(
        (r for r in resources if f"{r.kind}List" == listing["kind"] and r.api_version == listing["apiVersion"]),
        None,
    )
    if res is not None and res.plural in _BUILTIN_COLUMNS:
        builtin_columns = [
            {"name": n, "type": "string", "format": "name" if n == "Name" else "", "description": n, "priority": p}
            for n, p in _BUILTIN_COLUMNS[res.plural]
        ]
        builtin_rows = [_builtin_cells(res.plural, item) for item in listing["items"]]
        return _table_of(listing, builtin_columns, builtin_rows)
    columns: list[JsonDict] = [
        {"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}
    ]
    paths: list[str] = [".metadata.name"]
    if res is not None and res.crd is not None:
        for column in crd_version(res.crd, res.api_version).get("additionalPrinterColumns", []):
            columns.append(
                {
                    "name": column["name"],
                    "type": column.get("type", "string"),
                    "format": column.get("format", ""),
                    "description": column.get("description", ""),
                    "priority": column.get("priority", 0),
                }
            )
            paths.append(column["jsonPath"])
    if not any(c["name"] == "Age" for c in columns):
        columns.append({"name": "Age", "type": "date", "format": "", "description": "Age", "priority": 0})
        paths.append(".metadata.creationTimestamp")
    rows = []
    for item in listing["items"]:
        cells: list[Any] = []
        for column, path in zip(columns, paths, strict=True):
            value = _json_path(item, path)
            cells.append(_human_age(value) if column["type"] == "date" else value)
        rows.append(cells)
    return _table_of(listing, columns, rows)


def _table_of(listing: JsonDict, columns: list[JsonDict], cells: list[list[Any]]) -> JsonDict:
    rows = []
    for item, row in zip(listing["items"], cells, strict=True):
        rows.append(
            {
                "cells": row,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": item["metadata"],
                },
            }
        )
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": listing["metadata"],
        "columnDefinitions": columns,
        "rows": rows,
    }
