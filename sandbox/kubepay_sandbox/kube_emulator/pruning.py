"""What a structural schema does to a custom resource before validation: unknown fields and nulls pruned, defaults
applied; and the unknown fields that ``fieldValidation`` reports."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

from kubepay_sandbox.kube_emulator.errors import field_path
from kubepay_sandbox.kube_emulator.resources import JsonDict, crd_schema


def _normalize(schema: Any, value: Any) -> Any:
    """Prune unknown fields and nulls, and apply defaults, as the server does for structural schemas."""
    if not isinstance(schema, Mapping):
        return value
    if isinstance(value, dict):
        properties: Mapping[str, Any] = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields")) or additional is True
        out: JsonDict = {}
        for key, item in value.items():
            sub = properties.get(key, additional if isinstance(additional, Mapping) else None)
            if sub is None:
                if preserve:
                    out[key] = item
                continue
            if item is None and not sub.get("nullable"):
                continue
            out[key] = _normalize(sub, item)
        for key, sub in properties.items():
            if key not in out and isinstance(sub, Mapping) and "default" in sub:
                out[key] = _normalize(sub, copy.deepcopy(sub["default"]))
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [_normalize(schema["items"], item) for item in value]
    return value


def unknown_fields(schema: Any, value: Any, parts: list[str | int]) -> Iterator[str]:
    """The fields pruning would drop (what ``fieldValidation=Strict`` refuses), as "spec.foo" paths."""
    if not isinstance(schema, Mapping):
        return
    if isinstance(value, dict):
        properties: Mapping[str, Any] = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields")) or additional is True
        for key, item in value.items():
            sub = properties.get(key, additional if isinstance(additional, Mapping) else None)
            if sub is None:
                if not preserve:
                    yield field_path([*parts, key])
            else:
                yield from unknown_fields(sub, item, [*parts, key])
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            yield from unknown_fields(schema["items"], item, [*parts, index])


def normalize_custom_resource(crd: Mapping[str, Any], obj: JsonDict) -> JsonDict:
    schema = crd_schema(crd, obj.get("apiVersion"))
    body = {key: value for key, value in obj.items() if key not in ("apiVersion", "kind", "metadata")}
    normalized = _normalize(schema, body)
    return {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": obj.get("metadata", {}),
        **normalized,
    }
