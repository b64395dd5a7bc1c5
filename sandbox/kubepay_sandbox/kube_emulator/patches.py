"""The patches a PATCH request carries: JSON merge patch (RFC 7386, also standing in for strategic merge patch and
server-side apply, their ``$`` directives dropped) and JSON patch (RFC 6902)."""

from __future__ import annotations

import copy
from typing import Any

from kubepay_sandbox.kube_emulator.resources import JsonDict


class PatchError(Exception):
    pass


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: JsonDict = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strip_directives(patch: Any) -> Any:
    if isinstance(patch, dict):
        return {k: strip_directives(v) for k, v in patch.items() if not str(k).startswith("$")}
    if isinstance(patch, list):
        return [strip_directives(v) for v in patch if not (isinstance(v, dict) and "$patch" in v)]
    return patch


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer: {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _resolve_parent(doc: Any, parts: list[str]) -> tuple[Any, str]:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise PatchError(f"doc is missing path: /{'/'.join(parts)}")
    return node, parts[-1]


def _get_at(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return doc
    parent, last = _resolve_parent(doc, parts)
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise PatchError(f"doc is missing path: {path}")


def _remove_at(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        raise PatchError("cannot remove the whole document")
    parent, last = _resolve_parent(doc, parts)
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise PatchError(f"unable to remove nonexistent key: {last}: missing value")


def _add_at(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent, last = _resolve_parent(doc, parts)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise PatchError(f"add operation does not apply: index {last} out of bounds")
    else:
        raise PatchError(f"add operation does not apply: doc is missing path: {path}")
    return doc


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch."""
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "path" not in op:
            raise PatchError(f"invalid operation: {op!r}")
        kind, path = op.get("op"), str(op["path"])
        if kind == "add":
            doc = _add_at(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove_at(doc, path)
        elif kind == "replace":
            _get_at(doc, path)
            if _pointer(path):
                _remove_at(doc, path)
            doc = _add_at(doc, path, copy.deepcopy(op.get("value")))
        elif kind in ("move", "copy"):
            source = str(op.get("from", ""))
            value = _remove_at(doc, source) if kind == "move" else copy.deepcopy(_get_at(doc, source))
            doc = _add_at(doc, path, value)
        elif kind == "test":
            if _get_at(doc, path) != op.get("value"):
                raise PatchError(f"testing value {path} failed: test failed")
        else:
            raise PatchError(f"Unexpected kind: {kind}")
    return doc
