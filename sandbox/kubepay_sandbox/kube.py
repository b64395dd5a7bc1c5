"""An in-memory Kubernetes API server for tests, ``kubepay-sandbox up``, the demo and benchmarks.

:class:`KubeEmulator` serves the CRDs it is given plus the built-in resources that kopf and
kubepay use (``v1`` namespaces, secrets, configmaps, events) over plain HTTP on 127.0.0.1, and
behaves like a real API server wherever kopf, kubernetes_asyncio and kubectl can tell:
uid/resourceVersion/generation/creationTimestamp (a new generation for a spec change and for a marked
deletion), ``generateName``, 201 on create, 409 on a stale resourceVersion, merge/JSON/strategic patches
(a failed JSON-patch ``test`` is 422),
the status subresource kept apart from the main object, CRD schema validation, pruning and
defaulting, finalizers and ``deletionTimestamp``, garbage collection through ownerReferences,
typed lists, label and field selectors, and watches that resume from a resourceVersion
(410 Gone when it is older than the in-memory history). For kubectl it also serves
``/openapi/v3`` (every group-version: the CRDs' schemas and the object paths, whose writes take
``fieldValidation``, so that kubectl's default ``--validate=strict`` leaves validation to the
server, and ``kubectl explain`` works), honours ``fieldValidation`` (``Strict`` refuses unknown
fields of custom resources, ``Warn``, the default, prunes them with a ``Warning`` header), and
renders tables with the server's columns (CRD printer columns; events, namespaces, secrets and
configmaps as the real server prints them).

How it uses kmock: discovery (``/api``, ``/apis``, ``/apis/GROUP/VERSION``, ``/version``) and
error rendering come from kmock's :class:`kmock.KubernetesScaffold`, subclassed here. The
object requests (``.../PLURAL[/NAME[/status]]``) are handled wholesale by this module rather
than by :class:`kmock.KubernetesEmulator`, because nearly every one of the emulator's object
semantics had to change (it stores every version of every object, parses
``/api/v1/namespaces`` as a broken path, keeps no resourceVersion, mixes status into the main
object, ignores selectors and watch starting points, answers 500 on a failed patch test),
and its per-object history grows without bound, which a benchmark cannot afford.
The handler is served by aiohttp's low-level server directly instead of :class:`kmock.Server`,
because that server must be entered only once, patches aiohttp's DNS resolution process-wide
(which must be exited in LIFO order) and opens a client session we do not need; here
:meth:`KubeEmulator.stop` and :meth:`KubeEmulator.start` can alternate freely on one port.

TokenReview and SubjectAccessReview are answered by :mod:`kubepay_sandbox.kube_reviews`
(``KubeEmulator.reviews``) from the tokens and access rules the harness gives it, not from RBAC objects.

Known gaps against a real API server: CEL rules other than ``self == oldSelf`` transition rules
are not evaluated; no admission webhooks, RBAC, managedFields or server-side-apply field
ownership (``application/apply-patch+yaml`` is served as a create-or-merge); strategic merge
patch is a JSON merge patch (``$``-directives dropped); ``propagationPolicy=Foreground`` acts
like Background; an object whose owners never existed is not collected; a deleted namespace
takes its objects with it but disappears at once instead of staying ``Terminating``; no
``/openapi/v2`` and no protobuf (kubectl's typed commands such as ``kubectl create secret`` send
protobuf and fail; ``kubectl apply`` and ``get``/``patch``/``wait``/``delete`` use JSON); unknown
fields are detected only in custom resources (built-in objects are not schema-checked).
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import collections
import contextlib
import contextvars
import copy
import dataclasses
import datetime
import hashlib
import json
import random
import re
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, cast

import aiohttp.web
import attrs
import jsonschema
import kmock
import yaml

from kubepay_sandbox.kube_reviews import Reviews

__all__ = ["KubeEmulator", "validate_custom_resource"]

JsonDict = dict[str, Any]

_MISSING: Final = object()
_HOST: Final = "127.0.0.1"
_NAME_CHARS: Final = "bcdfghjklmnpqrstvwxz2456789"  # as the real generateName suffix
_DNS1123_SUBDOMAIN: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_KEY: Final = re.compile(r"^([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
# The warnings of the request being served (each request runs in its own task, hence its own context).
_WARNINGS: contextvars.ContextVar[builtins.list[str] | None] = contextvars.ContextVar("_WARNINGS", default=None)
_MAIN_VERBS: Final = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
_STATUS_VERBS: Final = ("get", "patch", "update")


# --------------------------------------------------------------------------------------------------
# Resources
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class _Resource:
    group: str
    version: str
    plural: str
    kind: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False
    crd: Mapping[str, Any] | None = None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def path(self) -> str:  # as in get()/list(): "kubepay.io/v1alpha1/paymentintents", "v1/secrets"
        return f"{self.api_version}/{self.plural}"

    @property
    def store_key(self) -> str:  # objects are shared by all versions of one group+plural
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind


_BUILTINS: Final = (
    _Resource("", "v1", "namespaces", "Namespace", "namespace", False, ("ns",), (), True),
    _Resource("", "v1", "secrets", "Secret", "secret", True),
    _Resource("", "v1", "configmaps", "ConfigMap", "configmap", True, ("cm",)),
    _Resource("", "v1", "events", "Event", "event", True, ("ev",)),
)


def _resources_from_crd(crd: Mapping[str, Any]) -> list[_Resource]:
    spec = crd.get("spec", {})
    names = spec.get("names", {})
    result: list[_Resource] = []
    for version in spec.get("versions", []):
        if not version.get("served", True):
            continue
        result.append(
            _Resource(
                group=spec["group"],
                version=version["name"],
                plural=names["plural"],
                kind=names["kind"],
                singular=names.get("singular") or names["kind"].lower(),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames", ())),
                categories=tuple(names.get("categories", ())),
                status_subresource="status" in (version.get("subresources") or {}),
                crd=crd,
            )
        )
    return result


def _crd_version(crd: Mapping[str, Any], api_version: str | None) -> Mapping[str, Any]:
    versions: list[Mapping[str, Any]] = list(crd.get("spec", {}).get("versions", []))
    wanted = (api_version or "").rsplit("/", 1)[-1]
    for version in versions:
        if version.get("name") == wanted:
            return version
    for version in versions:
        if version.get("storage"):
            return version
    return versions[0] if versions else {}


def _crd_schema(crd: Mapping[str, Any], api_version: str | None) -> Mapping[str, Any]:
    schema = _crd_version(crd, api_version).get("schema", {}).get("openAPIV3Schema")
    return cast(Mapping[str, Any], schema or {"type": "object", "x-kubernetes-preserve-unknown-fields": True})


# --------------------------------------------------------------------------------------------------
# Validation of custom resources (the API server's structural-schema validation)
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _FieldError:
    field: str  # e.g. "spec.amount"; "" for the root
    reason: str  # FieldValueInvalid, FieldValueRequired, ...
    detail: str  # the message without the field: "Invalid value: 0: spec.amount in body ..."

    @property
    def text(self) -> str:
        return f"{self.field}: {self.detail}" if self.field else self.detail


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _go_value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value, separators=(",", ":"))


def _field_path(parts: Sequence[str | int]) -> str:
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


_OPENAPI_ANNOTATIONS: Final = frozenset(
    {
        "nullable",
        "default",
        "description",
        "example",
        "externalDocs",
        "title",
        "format",
        "deprecated",
        "readOnly",
        "writeOnly",
    }
)


def _to_jsonschema(schema: Any) -> Any:
    """Translate an OpenAPI v3 structural schema (as in CRDs) to a JSON Schema draft 4."""
    if not isinstance(schema, Mapping):
        return schema
    out: JsonDict = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {name: _to_jsonschema(sub) for name, sub in value.items()}
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [_to_jsonschema(sub) for sub in value]
        elif key in ("items", "not", "additionalProperties", "additionalItems"):
            out[key] = [_to_jsonschema(sub) for sub in value] if isinstance(value, list) else _to_jsonschema(value)
        elif key.startswith("x-kubernetes-") or key in _OPENAPI_ANNOTATIONS:
            continue
        else:
            out[key] = value
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        int_or_string = [{"type": "integer"}, {"type": "string"}]
        if "anyOf" in out:
            out["allOf"] = [*out.get("allOf", []), {"anyOf": out.pop("anyOf")}]
        out["anyOf"] = int_or_string
        out["x-int-or-string"] = True
    if schema.get("nullable"):
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if isinstance(out.get("enum"), list) and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        if "anyOf" in out:
            out["anyOf"] = [*out["anyOf"], {"type": "null"}]
    return out


def _schema_error(error: jsonschema.ValidationError) -> list[_FieldError]:
    parts: list[str | int] = list(error.absolute_path)
    field = _field_path(parts)
    value = error.instance
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    keyword = error.validator
    limit = error.validator_value
    where = f"{field} in body" if field else "body"
    if keyword == "required":
        present = value if isinstance(value, Mapping) else {}
        return [
            _FieldError(_field_path([*parts, name]), "FieldValueRequired", "Required value")
            for name in limit
            if name not in present
        ]
    if keyword == "type" or (keyword == "anyOf" and schema.get("x-int-or-string")):
        types = [t for t in ([limit] if isinstance(limit, str) else list(limit)) if t != "null"]
        if keyword == "anyOf":
            types = ["integer", "string"]
        actual = _type_name(value)
        return [
            _FieldError(
                field,
                "FieldValueTypeInvalid",
                f'Invalid value: "{actual}": {where} must be of type {",".join(types)}: "{actual}"',
            )
        ]
    if keyword == "enum":
        supported = ", ".join(_go_value(v) for v in limit if v is not None)
        return [
            _FieldError(
                field, "FieldValueNotSupported", f"Unsupported value: {_go_value(value)}: supported values: {supported}"
            )
        ]
    messages = {
        "minimum": (
            f"should be greater than {_go_value(limit)}"
            if schema.get("exclusiveMinimum") is True
            else f"should be greater than or equal to {_go_value(limit)}"
        ),
        "maximum": (
            f"should be less than {_go_value(limit)}"
            if schema.get("exclusiveMaximum") is True
            else f"should be less than or equal to {_go_value(limit)}"
        ),
        "pattern": f"should match '{limit}'",
        "minLength": f"should be at least {limit} chars long",
        "maxLength": f"should be at most {limit} chars long",
        "minItems": f"should have at least {limit} items",
        "maxItems": f"should have at most {limit} items",
        "minProperties": f"should have at least {limit} properties",
        "maxProperties": f"should have at most {limit} properties",
        "multipleOf": f"should be a multiple of {_go_value(limit)}",
        "uniqueItems": "shouldn't contain duplicates",
    }
    if keyword == "maxItems":
        return [_FieldError(field, "FieldValueTooMany", f"Too many: {len(value)}: must have at most {limit} items")]
    if keyword == "uniqueItems":
        return [_FieldError(field, "FieldValueDuplicate", f"Duplicate value: {_go_value(value)}")]
    if keyword in messages:
        shown = len(value) if keyword in ("minItems", "minProperties", "maxProperties") else value
        return [
            _FieldError(
                field, "FieldValueInvalid", f"Invalid value: {_go_value(shown)}: {where} {messages[str(keyword)]}"
            )
        ]
    return [_FieldError(field, "FieldValueInvalid", f"Invalid value: {_go_value(value)}: {error.message}")]


def _go_regex(pattern: str) -> str:
    """A Go RE2 pattern (what the API server evaluates) as a Python one: Go's `$` is the end of the text,
    Python's also matches before a final newline, so `^[a-z]{3}$` would let "usd\\n" through."""
    out: list[str] = []
    escaped = in_class = False
    for char in pattern:
        if escaped:
            out.append("Z" if char == "z" else char)  # Go's \z is Python's \Z
            escaped = False
        elif char == "\\":
            out.append(char)
            escaped = True
        elif in_class:
            in_class = char != "]"
            out.append(char)
        else:
            in_class = char == "["
            out.append(r"\Z" if char == "$" else char)
    return "".join(out)


def _go_pattern(
    validator: jsonschema.protocols.Validator, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    if validator.is_type(instance, "string") and not re.search(_go_regex(pattern), instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


_SCHEMA_VALIDATOR: Final = jsonschema.validators.extend(jsonschema.Draft4Validator, {"pattern": _go_pattern})
_TRANSITION_RULES: Final = frozenset({"self==oldSelf", "oldSelf==self"})


def _rule_errors(schema: Any, new: Any, old: Any, parts: list[str | int]) -> Iterator[_FieldError]:
    """Evaluate the ``self == oldSelf`` transition rules (the only CEL form this emulator knows)."""
    if not isinstance(schema, Mapping) or new is _MISSING or old is _MISSING:
        return
    for rule in schema.get("x-kubernetes-validations", ()):
        text = re.sub(r"\s+", "", str(rule.get("rule", "")))
        if text in _TRANSITION_RULES and new != old:
            field_parts = list(parts)
            if rule.get("fieldPath"):
                field_parts += [p for p in str(rule["fieldPath"]).strip(".").split(".") if p]
            message = rule.get("message") or f"failed rule: {rule.get('rule')}"
            yield _FieldError(
                _field_path(field_parts), "FieldValueInvalid", f"Invalid value: {_go_value(new)}: {message}"
            )  # the value itself, as kube-apiserver 1.37 prints it (older releases printed its type)
    if isinstance(new, Mapping) and isinstance(old, Mapping):
        properties = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        for key, value in new.items():
            sub = properties.get(key, additional if isinstance(additional, Mapping) else None)
            if sub is not None and key in old:
                yield from _rule_errors(sub, value, old[key], [*parts, key])


def _validation_errors(
    crd: Mapping[str, Any],
    obj: Mapping[str, Any],
    old: Mapping[str, Any] | None = None,
) -> list[_FieldError]:
    schema = dict(_crd_schema(crd, obj.get("apiVersion")))
    properties = dict(schema.get("properties") or {})
    properties.pop("metadata", None)  # ObjectMeta is validated by the server's own rules
    schema["properties"] = properties
    instance = {key: value for key, value in obj.items() if key != "metadata"}
    validator = _SCHEMA_VALIDATOR(_to_jsonschema(schema))
    errors: list[_FieldError] = []
    for error in sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path]):
        for field_error in _schema_error(error):
            if field_error not in errors:
                errors.append(field_error)
    if old is not None:
        old_instance = {key: value for key, value in old.items() if key != "metadata"}
        errors.extend(_rule_errors(schema, instance, old_instance, []))
    return errors


def validate_custom_resource(
    crd: Mapping[str, Any],
    obj: Mapping[str, Any],
    old: Mapping[str, Any] | None = None,
) -> list[str]:
    """
    Validate a custom resource as the API server does, and return its messages (empty if valid).

    The object is checked against the openAPIV3Schema of the CRD version named by its
    apiVersion (or the storage version), translated from OpenAPI v3 to JSON Schema: ``nullable``,
    ``x-kubernetes-int-or-string`` and ``x-kubernetes-preserve-unknown-fields`` are honoured,
    other ``x-kubernetes-*`` keys are ignored. With ``old``, the ``self == oldSelf`` transition
    rules of ``x-kubernetes-validations`` are checked too and fail with the rule's message.
    ``metadata`` is not checked against the schema (the server validates ObjectMeta itself).
    """
    return [error.text for error in _validation_errors(crd, obj, old)]


_LABEL_VALUE: Final = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_QUALIFIED_NAME: Final = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_ANNOTATIONS_MAX_BYTES: Final = 256 * 1024


def _regex_error(message: str, pattern: str, *examples: str) -> str:
    """apimachinery's validation.RegexError, byte for byte (its doubled spaces included)."""
    shown = "".join(f"'{example}', " + (" or " if i < len(examples) - 1 else "") for i, example in enumerate(examples))
    return f"{message} (e.g. {shown}regex used for validation is '{pattern}')"


_QUALIFIED_NAME_ERROR: Final = _regex_error(
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric "
    "character", _QUALIFIED_NAME.pattern, "MyName", "my.name", "123-abc")
_LABEL_VALUE_ERROR: Final = _regex_error(
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
    "start and end with an alphanumeric character", _LABEL_VALUE.pattern, "MyValue", "my_value", "12345")
_SUBDOMAIN_ERROR: Final = _regex_error(
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character", _DNS1123_SUBDOMAIN.pattern.strip("^$"), "example.com")


def _qualified_name_problems(key: str) -> builtins.list[str]:
    """apimachinery's IsQualifiedName: label keys and (lower-cased) annotation keys."""
    parts = key.split("/")
    if len(parts) > 2:
        return [f"a qualified name {_QUALIFIED_NAME_ERROR} with an optional DNS subdomain prefix and '/' "
                "(e.g. 'example.com/MyName')"]
    problems: builtins.list[str] = []
    name = parts[-1]
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            problems.append("prefix part must be non-empty")
        else:
            if len(prefix) > 253:
                problems.append("prefix part must be no more than 253 characters")
            if not _DNS1123_SUBDOMAIN.fullmatch(prefix):
                problems.append(f"prefix part {_SUBDOMAIN_ERROR}")
    if not name:
        problems.append("name part must be non-empty")
    elif len(name) > 63:
        problems.append("name part must be no more than 63 characters")
    if not _QUALIFIED_NAME.fullmatch(name):
        problems.append(f"name part {_QUALIFIED_NAME_ERROR}")
    return problems


def _metadata_errors(meta: Mapping[str, Any]) -> builtins.list[_FieldError]:
    """The API server's ObjectMeta rules for labels and annotations (ValidateLabels, ValidateAnnotations)."""
    errors: builtins.list[_FieldError] = []
    labels = meta.get("labels") or {}
    for key in sorted(labels):
        value = str(labels[key])
        for problem in _qualified_name_problems(key):
            errors.append(_FieldError("metadata.labels", "FieldValueInvalid", f"Invalid value: {_go_value(key)}: "
                                      f"{problem}"))
        value_problems = ["must be no more than 63 characters"] if len(value) > 63 else []
        if not _LABEL_VALUE.fullmatch(value):
            value_problems.append(_LABEL_VALUE_ERROR)
        for problem in value_problems:
            errors.append(_FieldError("metadata.labels", "FieldValueInvalid", f"Invalid value: {_go_value(value)}: "
                                      f"{problem}"))
    annotations = meta.get("annotations") or {}
    for key in sorted(annotations):
        for problem in _qualified_name_problems(key.lower()):
            errors.append(_FieldError("metadata.annotations", "FieldValueInvalid",
                                      f"Invalid value: {_go_value(key)}: {problem}"))
    if sum(len(k) + len(str(v)) for k, v in annotations.items()) > _ANNOTATIONS_MAX_BYTES:
        errors.append(_FieldError("metadata.annotations", "FieldValueTooLong",
                                  f"Too long: may not be more than {_ANNOTATIONS_MAX_BYTES} bytes"))
    return errors


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


def _unknown_fields(schema: Any, value: Any, parts: builtins.list[str | int]) -> Iterator[str]:
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
                    yield _field_path([*parts, key])
            else:
                yield from _unknown_fields(sub, item, [*parts, key])
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            yield from _unknown_fields(schema["items"], item, [*parts, index])


def _normalize_custom_resource(crd: Mapping[str, Any], obj: JsonDict) -> JsonDict:
    schema = _crd_schema(crd, obj.get("apiVersion"))
    body = {key: value for key, value in obj.items() if key not in ("apiVersion", "kind", "metadata")}
    normalized = _normalize(schema, body)
    return {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": obj.get("metadata", {}),
        **normalized,
    }


# --------------------------------------------------------------------------------------------------
# Patches
# --------------------------------------------------------------------------------------------------


class _PatchError(Exception):
    pass


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: JsonDict = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _strip_directives(patch: Any) -> Any:
    if isinstance(patch, dict):
        return {k: _strip_directives(v) for k, v in patch.items() if not str(k).startswith("$")}
    if isinstance(patch, list):
        return [_strip_directives(v) for v in patch if not (isinstance(v, dict) and "$patch" in v)]
    return patch


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _PatchError(f"invalid JSON pointer: {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _resolve_parent(doc: Any, parts: list[str]) -> tuple[Any, str]:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise _PatchError(f"doc is missing path: /{'/'.join(parts)}")
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
    raise _PatchError(f"doc is missing path: {path}")


def _remove_at(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        raise _PatchError("cannot remove the whole document")
    parent, last = _resolve_parent(doc, parts)
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise _PatchError(f"unable to remove nonexistent key: {last}: missing value")


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
            raise _PatchError(f"add operation does not apply: index {last} out of bounds")
    else:
        raise _PatchError(f"add operation does not apply: doc is missing path: {path}")
    return doc


def _json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch."""
    if not isinstance(ops, list):
        raise _PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "path" not in op:
            raise _PatchError(f"invalid operation: {op!r}")
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
                raise _PatchError(f"testing value {path} failed: test failed")
        else:
            raise _PatchError(f"Unexpected kind: {kind}")
    return doc


# --------------------------------------------------------------------------------------------------
# Selectors
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!":
            return self.key not in labels
        if self.op in ("=", "in"):
            return self.key in labels and labels[self.key] in self.values
        return self.key not in labels or labels[self.key] not in self.values  # != and notin


def _split_selector(text: str) -> list[str]:
    terms: list[str] = []
    depth, current = 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        terms.append(current.strip())
    return [term for term in terms if term]


def _parse_label_selector(text: str) -> list[_Requirement]:
    requirements: list[_Requirement] = []
    for term in _split_selector(text):
        match = re.fullmatch(r"(\S+)\s+(in|notin)\s*\(([^)]*)\)", term)
        if match:
            values = frozenset(v.strip() for v in match.group(3).split(",") if v.strip())
            requirements.append(_Requirement(match.group(1), match.group(2), values))
            continue
        match = re.fullmatch(r"([^=!\s]+)\s*(==|=|!=)\s*(\S*)", term)
        if match:
            op = "!=" if match.group(2) == "!=" else "="
            requirements.append(_Requirement(match.group(1), op, frozenset({match.group(3)})))
            continue
        match = re.fullmatch(r"(!?)\s*([^=!\s()]+)", term)
        if match:
            requirements.append(_Requirement(match.group(2), "!" if match.group(1) else "exists"))
            continue
        raise _ApiError.bad_request(f"unable to parse requirement: {term!r}")
    for requirement in requirements:
        if not _LABEL_KEY.match(requirement.key):
            raise _ApiError.bad_request(f"unable to parse requirement: invalid label key {requirement.key!r}")
    return requirements


def _parse_field_selector(text: str, res: _Resource) -> list[tuple[str, str, str]]:
    result: list[tuple[str, str, str]] = []
    for term in _split_selector(text):
        match = re.fullmatch(r"([^=!\s]+)\s*(==|=|!=)\s*(.*)", term)
        if not match:
            raise _ApiError.bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        field, op, value = match.group(1), ("!=" if match.group(2) == "!=" else "="), match.group(3)
        if res.crd is not None and field not in ("metadata.name", "metadata.namespace"):
            raise _ApiError.bad_request(
                f'"{field}" is not a known field selector: only "metadata.name", "metadata.namespace"'
            )
        result.append((field, op, value))
    return result


@dataclasses.dataclass(frozen=True)
class _Selector:
    labels: tuple[_Requirement, ...] = ()
    fields: tuple[tuple[str, str, str], ...] = ()

    def matches(self, obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata", {})
        labels = meta.get("labels") or {}
        if not all(requirement.matches(labels) for requirement in self.labels):
            return False
        for field, op, value in self.fields:
            node: Any = obj
            for part in field.split("."):
                node = node.get(part) if isinstance(node, Mapping) else None
            actual = "" if node is None else str(node).lower() if isinstance(node, bool) else str(node)
            if (actual == value) != (op == "="):
                return False
        return True


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


class _ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: JsonDict | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> JsonDict:
        status: JsonDict = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            status["details"] = self.details
        return status

    def response(self) -> aiohttp.web.Response:
        return aiohttp.web.json_response(self.status(), status=self.code)

    @classmethod
    def bad_request(cls, message: str) -> _ApiError:
        return cls(400, "BadRequest", message)

    @classmethod
    def not_found(cls, res: _Resource, name: str) -> _ApiError:
        return cls(
            404,
            "NotFound",
            f'{res.store_key} "{name}" not found',
            {"name": name, "group": res.group, "kind": res.plural},
        )

    @classmethod
    def conflict(cls, res: _Resource, name: str) -> _ApiError:
        return cls(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {res.store_key} "{name}": the object has '
            "been modified; please apply your changes to the latest version and try again",
            {"name": name, "group": res.group, "kind": res.plural},
        )

    @classmethod
    def invalid(cls, res: _Resource, name: str, errors: Sequence[_FieldError]) -> _ApiError:
        texts = [error.text for error in errors]
        joined = texts[0] if len(texts) == 1 else f"[{', '.join(texts)}]"
        causes = [{"reason": e.reason, "message": e.detail, "field": e.field} for e in errors]
        return cls(
            422,
            "Invalid",
            f'{res.qualified_kind} "{name}" is invalid: {joined}',
            {"name": name, "group": res.group, "kind": res.kind, "causes": causes},
        )


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_float(text: str) -> int | float:
    # Like the API server's JSON decoding of unstructured objects: whole numbers become integers.
    value = float(text)
    return int(value) if value.is_integer() and "e" not in text.lower() else value


def _loads(body: bytes, content_type: str) -> Any:
    if not body.strip():
        raise _ApiError.bad_request("the request body is empty")
    try:
        if "yaml" in content_type:
            return yaml.safe_load(body)
        return json.loads(body, parse_float=_parse_float)
    except (ValueError, yaml.YAMLError) as exc:
        raise _ApiError.bad_request(f"the body of the request was in an unknown format: {exc}") from None


def _is_true(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


def _without(obj: Mapping[str, Any], *keys: str) -> JsonDict:
    return {key: value for key, value in obj.items() if key not in keys}


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


def _builtin_cells(plural: str, obj: Mapping[str, Any]) -> builtins.list[Any]:
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


@dataclasses.dataclass(frozen=True)
class _Event:
    rv: int
    store_key: str
    type: str  # ADDED, MODIFIED, DELETED
    obj: JsonDict  # a snapshot: never mutated after it is recorded
    old: JsonDict | None


@dataclasses.dataclass(eq=False)
class _Watcher:
    store_key: str
    namespace: str | None
    selector: _Selector
    queue: asyncio.Queue[_Event | None]


@dataclasses.dataclass(frozen=True)
class _Route:
    res: _Resource
    namespace: str | None
    name: str | None
    subresource: str | None


# --------------------------------------------------------------------------------------------------
# The kmock handler: discovery by kmock, everything about objects by the emulator
# --------------------------------------------------------------------------------------------------


@attrs.define(kw_only=True)
class _Handler(kmock.KubernetesScaffold):
    emulator: KubeEmulator | None = None

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # Render errors as Kubernetes Status responses, as kmock does inside ``async with`` — without
        # entering it, whose live-stream feeder is bound to one event loop (we restart on new ones).
        self._errors.append([])

    async def _serve_version(self, request: kmock.Request) -> Any:
        # kmock lists a subresource like its resource (short names, categories, every verb); a real server lists
        # "plural/status" with get/patch/update only. Otherwise kubectl warns that "pi" could also mean
        # "paymentintents/status", and `kubectl get <category>` fails on the subresource.
        # And it names the core group-version "/v1" instead of "v1", which hides every core resource from kubectl.
        payload = await super()._serve_version(request)
        if isinstance(payload, dict) and str(payload.get("groupVersion", "")).startswith("/"):
            payload["groupVersion"] = payload["groupVersion"][1:]
        for entry in payload.get("resources", []) if isinstance(payload, dict) else []:
            if "/" in entry.get("name", ""):
                entry.update(singularName="", verbs=list(_STATUS_VERBS))
                entry.pop("shortNames", None)
                entry.pop("categories", None)
        return payload

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if self.emulator is not None:
            response = await self.emulator._serve(raw_request)
            if response is not None:
                return response
        try:
            return await super().__call__(raw_request)
        finally:
            # Keep kmock's request log and error log from growing in long runs (benchmarks).
            del self._requests[:-100]
            if self._errors:
                self._errors[-1].clear()


# --------------------------------------------------------------------------------------------------
# The emulator
# --------------------------------------------------------------------------------------------------


class KubeEmulator:
    """
    A stateful Kubernetes API server in memory, served over HTTP on 127.0.0.1.

    ``crd_paths`` are CRD YAML files (several documents per file are fine) whose served
    versions become resources. Objects survive :meth:`stop`; :meth:`start` resumes on the
    same port with the same cluster state, as after an API server outage.
    """

    def __init__(self, crd_paths: Sequence[Path] = (), *, history_limit: int = 10_000) -> None:
        self._resources: dict[tuple[str, str, str], _Resource] = {}
        self._objects: dict[str, dict[tuple[str | None, str], JsonDict]] = collections.defaultdict(dict)
        self._history: collections.deque[_Event] = collections.deque(maxlen=max(1, history_limit))
        self._history_floor = 0  # the newest resourceVersion dropped from the history
        self._watchers: set[_Watcher] = set()
        self._denials: dict[tuple[str, str], str] = {}  # (plural, namespace) -> an admission policy's message
        self._rv = 0
        self._port: int | None = None
        self._runner: aiohttp.web.ServerRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._handler = _Handler(emulator=self)
        self._url: str | None = None
        self.reviews = Reviews()  # TokenReview and SubjectAccessReview; tests issue tokens and rules here
        for group, version, plural, kind in self.reviews.apis():
            self._handler.resources[kmock.resource(group, version, plural)] = kmock.ResourceInfo(
                namespaced=False, kind=kind, singular=kind.lower(), verbs={"create"})

        for res in _BUILTINS:
            self._register(res)
        for path in crd_paths:
            for doc in yaml.safe_load_all(Path(path).read_text()):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    for res in _resources_from_crd(doc):
                        self._register(res)
        for namespace in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self._ensure_namespace(namespace)

    # ----------------------------------------------------------------------------------------------
    # Public API
    # ----------------------------------------------------------------------------------------------

    async def start(self, port: int = 0) -> str:
        """Listen on 127.0.0.1 (a free port if 0, or the previous one after :meth:`stop`)."""
        if self._loop is not None:
            return self.url
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=self._run_loop, args=(loop,), name="kube-emulator", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._start(port), loop))
        except BaseException:
            await self._stop_thread()
            raise
        return self.url

    async def stop(self) -> None:
        """Stop listening and close all watch streams; the objects are kept."""
        if self._loop is None:
            return
        try:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._stop(), self._loop))
        finally:
            await self._stop_thread()

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _stop_thread(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            await asyncio.to_thread(thread.join)

    async def _start(self, port: int) -> None:
        # Runs in the emulator's own thread and event loop, so that the server stays responsive when the
        # caller's loop is busy or blocked (sync clients, kubectl), and its tasks never mix with the
        # caller's (kopf waits for all tasks spawned while it runs, e.g. server-side keep-alive connections).
        if port == 0 and self._port is not None:
            port = self._port
        server = aiohttp.web.Server(self._handler, handler_cancellation=True)
        runner = aiohttp.web.ServerRunner(server, shutdown_timeout=1.0)
        await runner.setup()
        site = aiohttp.web.TCPSite(runner, _HOST, port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        self._url = f"http://{_HOST}:{self._port}"

    async def _stop(self) -> None:
        for watcher in list(self._watchers):
            watcher.queue.put_nowait(None)
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("The emulator has not been started yet.")
        return self._url

    @property
    def kmock_handler(self) -> kmock.KubernetesScaffold:
        """The underlying kmock handler (for extra reactions or discovery tweaks)."""
        return self._handler

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """Write a kubeconfig (plain http, no auth) for kopf, kubernetes(_asyncio) and kubectl."""
        name = "kubepay-sandbox"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [{"name": name, "cluster": {"server": self.url}}],
            "users": [{"name": name, "user": {}}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}],
            "current-context": name,
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def get(self, group_version_plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """A copy of a stored object, or None; e.g. ``get("v1/secrets", "ns", "x")``."""
        res = self._lookup(group_version_plural)
        with self._lock:
            obj = self._objects[res.store_key].get((namespace if res.namespaced else None, name))
            return self._output(res, obj) if obj is not None else None

    def list(self, group_version_plural: str, namespace: str | None = None) -> builtins.list[dict[str, Any]]:
        """Copies of the stored objects of a resource, all namespaces if ``namespace`` is None."""
        res = self._lookup(group_version_plural)
        with self._lock:
            return [self._output(res, obj) for obj in self._select(res, namespace, _Selector())]

    @property
    def resource_version(self) -> str:
        """The current (latest) resourceVersion of the whole cluster."""
        return str(self._rv)

    # ----------------------------------------------------------------------------------------------
    # Resources & storage
    # ----------------------------------------------------------------------------------------------

    def _register(self, res: _Resource) -> None:
        self._resources[(res.group, res.version, res.plural)] = res
        self._handler.resources[kmock.resource(res.group, res.version, res.plural)] = kmock.ResourceInfo(
            namespaced=res.namespaced,
            kind=res.kind,
            singular=res.singular,
            verbs=set(_MAIN_VERBS),
            shortnames=set(res.short_names),
            categories=set(res.categories),
            subresources={"status"} if res.status_subresource else set(),
        )

    def _lookup(self, group_version_plural: str) -> _Resource:
        parts = group_version_plural.strip("/").split("/")
        if len(parts) == 2:
            parts = ["", *parts]
        if len(parts) != 3 or tuple(parts) not in self._resources:
            raise KeyError(f"Unknown resource: {group_version_plural!r}")
        return self._resources[(parts[0], parts[1], parts[2])]

    def _output(self, res: _Resource, obj: Mapping[str, Any]) -> JsonDict:
        out = copy.deepcopy(dict(obj))
        out["apiVersion"] = res.api_version
        return out

    def _select(self, res: _Resource, namespace: str | None, selector: _Selector) -> builtins.list[JsonDict]:
        items = self._objects[res.store_key]
        return [
            items[key]
            for key in sorted(items, key=lambda k: (k[0] or "", k[1]))
            if (namespace is None or key[0] == namespace) and selector.matches(items[key])
        ]

    def _ensure_namespace(self, namespace: str) -> None:
        if (None, namespace) not in self._objects["namespaces"]:
            res = self._resources[("", "v1", "namespaces")]
            obj: JsonDict = {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": namespace, "labels": {"kubernetes.io/metadata.name": namespace}},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            }
            self._stamp_new(obj)
            self._commit(res, "ADDED", obj, None)

    def _stamp_new(self, obj: JsonDict) -> None:
        meta = obj["metadata"]
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta["generation"] = 1

    def _commit(self, res: _Resource, kind: str, obj: JsonDict, old: JsonDict | None) -> JsonDict:
        """Record a write: bump the resourceVersion, store (or drop), notify the watchers."""
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        key = (obj["metadata"].get("namespace") if res.namespaced else None, obj["metadata"]["name"])
        event = _Event(self._rv, res.store_key, kind, obj, old)
        with self._lock:  # only for the readers in other threads: get() and list()
            if kind == "DELETED":
                self._objects[res.store_key].pop(key, None)
            else:
                self._objects[res.store_key][key] = obj
            if len(self._history) == self._history.maxlen:
                self._history_floor = self._history[0].rv
            self._history.append(event)
        for watcher in self._watchers:
            if watcher.store_key == res.store_key:
                watcher.queue.put_nowait(event)
        return obj

    # ----------------------------------------------------------------------------------------------
    # HTTP routing
    # ----------------------------------------------------------------------------------------------

    def _route(self, path: str) -> _Route | None:
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 2 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        if not rest:
            return None  # discovery: kmock's business
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3 and (group, version, rest[2]) in self._resources:
            namespace, rest = rest[1], rest[2:]
        res = self._resources.get((group, version, rest[0]))
        if res is None:
            raise _ApiError(
                404, "NotFound", "the server could not find the requested resource", {"kind": rest[0], "group": group}
            )
        name = rest[1] if len(rest) >= 2 else None
        subresource = "/".join(rest[2:]) or None
        if namespace is not None and not res.namespaced:
            raise _ApiError(404, "NotFound", "the server could not find the requested resource")
        if subresource is not None and not (subresource == "status" and res.status_subresource):
            raise _ApiError(404, "NotFound", "the server could not find the requested resource")
        return _Route(res, namespace, name, subresource)

    async def _serve(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse | None:
        try:
            if raw.path == "/openapi/v3" or raw.path.startswith("/openapi/v3/"):
                return self._serve_openapi(raw.path)
            if (review := await self.reviews.serve(raw)) is not None:
                return review
            route = self._route(raw.path)
            if route is None:
                return None
            body = await raw.read()
            _WARNINGS.set([])
            return await self._dispatch(raw, route, body)
        except _ApiError as exc:
            return exc.response()

    async def _dispatch(self, raw: aiohttp.web.BaseRequest, route: _Route, body: bytes) -> aiohttp.web.StreamResponse:
        method, params = raw.method.upper(), raw.query
        res, namespace, name = route.res, route.namespace, route.name
        content_type = raw.headers.get("Content-Type", "application/json").split(";")[0].strip().lower()
        if method == "GET" and _is_true(params.get("watch")):
            selector = self._selector(res, params)
            if name is not None:
                selector = dataclasses.replace(selector, fields=(*selector.fields, ("metadata.name", "=", name)))
            return await self._watch(raw, res, namespace, selector)
        if name is None:
            if method == "GET":
                return self._respond(raw, self._list(res, namespace, params))
            if method == "POST":
                return self._respond(raw, self._create(res, namespace, _loads(body, content_type), params), 201)
            if method == "DELETE":
                return self._respond(raw, self._delete_collection(res, namespace, params))
            raise _ApiError(
                405,
                "MethodNotAllowed",
                f"the server does not allow this method on the requested resource ({method} {res.store_key})",
            )
        if res.namespaced and namespace is None:
            raise _ApiError(404, "NotFound", "the server could not find the requested resource")
        if method == "GET":
            return self._respond(raw, self._output(res, self._stored(res, namespace, name)))
        if method == "PUT":
            return self._respond(
                raw, self._replace(res, namespace, name, route.subresource, _loads(body, content_type), params)
            )
        if method == "PATCH":
            obj, created = self._patch(
                res, namespace, name, route.subresource, content_type, _loads(body, content_type), params
            )
            return self._respond(raw, obj, 201 if created else 200)
        if method == "DELETE":
            options = _loads(body, content_type) if body.strip() else {}
            return self._respond(raw, self._delete(res, namespace, name, options, params))
        raise _ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    # ----------------------------------------------------------------------------------------------
    # OpenAPI v3 (what kubectl reads to learn that the server validates fields itself, and for explain)
    # ----------------------------------------------------------------------------------------------

    def _group_versions(self) -> dict[str, builtins.list[_Resource]]:
        """OpenAPI v3 path ("api/v1", "apis/GROUP/VERSION") -> the resources served there."""
        result: dict[str, builtins.list[_Resource]] = {}
        for res in self._resources.values():
            key = f"apis/{res.group}/{res.version}" if res.group else f"api/{res.version}"
            result.setdefault(key, []).append(res)
        return result

    def _serve_openapi(self, path: str) -> aiohttp.web.Response:
        documents = {key: self._openapi_document(resources) for key, resources in self._group_versions().items()}
        if path.rstrip("/") == "/openapi/v3":
            paths = {}
            for key, document in documents.items():
                digest = hashlib.sha512(json.dumps(document, sort_keys=True).encode()).hexdigest().upper()
                paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest}"}
            return aiohttp.web.json_response({"paths": paths})
        wanted = path[len("/openapi/v3/") :].strip("/")
        if wanted not in documents:
            raise _ApiError(404, "NotFound", "the server could not find the requested resource")
        return aiohttp.web.json_response(documents[wanted])

    @staticmethod
    def _openapi_document(resources: Sequence[_Resource]) -> JsonDict:
        """The group-version's document as a real API server shapes it, as far as clients look: one schema per
        kind (a CRD's openAPIV3Schema) and the object paths, every write taking ``fieldValidation``."""
        query = [
            {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
            for name in ("dryRun", "fieldManager", "fieldValidation")
        ]
        patch_types = ["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"]
        schemas: JsonDict = {}
        paths: JsonDict = {}
        for res in sorted(resources, key=lambda r: r.plural):
            gvk = [{"group": res.group, "version": res.version, "kind": res.kind}]
            reverse = ".".join(reversed(res.group.split("."))) if res.group else "io.k8s.api.core"
            name = f"{reverse}.{res.version}.{res.kind}"
            schema = dict(_crd_schema(res.crd, res.api_version)) if res.crd is not None else {"type": "object"}
            schemas[name] = {**schema, "x-kubernetes-group-version-kind": gvk}
            ref = {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}

            def operation(
                verb: str,
                action: str,
                body: JsonDict | None,
                params: builtins.list[JsonDict],
                gvk: builtins.list[JsonDict] = gvk,
                ref: JsonDict = ref,
                res: _Resource = res,
            ) -> JsonDict:
                op: JsonDict = {
                    "operationId": f"{verb}{res.kind}",
                    "parameters": params,
                    "responses": {"200": {"description": "OK", "content": ref}},
                    "x-kubernetes-action": action,
                    "x-kubernetes-group-version-kind": gvk[0],
                }
                if body is not None:
                    op["requestBody"] = {"content": body, "required": True}
                return op

            patch_body = {t: {"schema": {"type": "object"}} for t in patch_types}
            prefix = f"/apis/{res.group}/{res.version}" if res.group else f"/api/{res.version}"
            collection = (
                f"{prefix}/namespaces/{{namespace}}/{res.plural}" if res.namespaced else f"{prefix}/{res.plural}"
            )
            paths[collection] = {
                "get": operation("list", "list", None, []),
                "post": operation("create", "post", ref, query),
                "delete": operation("deletecollection", "deletecollection", None, []),
            }
            paths[f"{collection}/{{name}}"] = {
                "get": operation("read", "get", None, []),
                "put": operation("replace", "put", ref, query),
                "patch": operation("patch", "patch", patch_body, query),
                "delete": operation("delete", "delete", None, []),
            }
            if res.status_subresource:
                paths[f"{collection}/{{name}}/status"] = {
                    "get": operation("read", "get", None, []),
                    "put": operation("replace", "put", ref, query),
                    "patch": operation("patch", "patch", patch_body, query),
                }
            if res.namespaced:
                paths[f"{prefix}/{res.plural}"] = {"get": operation("list", "list", None, [])}
        return {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": "v1.35.0"},
            "paths": paths,
            "components": {"schemas": schemas},
        }

    def _respond(self, raw: aiohttp.web.BaseRequest, payload: JsonDict, status: int = 200) -> aiohttp.web.Response:
        if payload.get("kind", "").endswith("List") and "as=Table" in raw.headers.get("Accept", ""):
            payload = self._table(payload)
        response = aiohttp.web.Response(
            body=json.dumps(payload).encode(), status=status, content_type="application/json"
        )
        for warning in _WARNINGS.get() or ():
            response.headers.add("Warning", f"299 - {json.dumps(warning)}")
        return response

    def _selector(self, res: _Resource, params: Mapping[str, str]) -> _Selector:
        return _Selector(
            tuple(_parse_label_selector(params.get("labelSelector", ""))),
            tuple(_parse_field_selector(params.get("fieldSelector", ""), res)),
        )

    def _stored(self, res: _Resource, namespace: str | None, name: str) -> JsonDict:
        obj = self._objects[res.store_key].get((namespace if res.namespaced else None, name))
        if obj is None:
            raise _ApiError.not_found(res, name)
        return obj

    # ----------------------------------------------------------------------------------------------
    # Verbs
    # ----------------------------------------------------------------------------------------------

    def _list(self, res: _Resource, namespace: str | None, params: Mapping[str, str]) -> JsonDict:
        items = self._select(res, namespace, self._selector(res, params))
        meta: JsonDict = {"resourceVersion": str(self._rv)}
        start = 0
        if params.get("continue"):
            try:
                token = json.loads(base64.urlsafe_b64decode(params["continue"].encode()))
                start = int(token["start"])
            except (ValueError, KeyError, TypeError):
                raise _ApiError.bad_request("invalid continue token") from None
        limit = int(params.get("limit") or 0)
        page = items[start : start + limit] if limit > 0 else items[start:]
        if limit > 0 and start + limit < len(items):
            meta["continue"] = base64.urlsafe_b64encode(json.dumps({"start": start + limit}).encode()).decode()
            meta["remainingItemCount"] = len(items) - start - limit
        return {
            "kind": f"{res.kind}List",
            "apiVersion": res.api_version,
            "metadata": meta,
            "items": [self._output(res, obj) for obj in page],
        }

    def _table(self, listing: JsonDict) -> JsonDict:
        res = next(
            (
                r
                for r in self._resources.values()
                if f"{r.kind}List" == listing["kind"] and r.api_version == listing["apiVersion"]
            ),
            None,
        )
        if res is not None and res.plural in _BUILTIN_COLUMNS:
            builtin_columns = [
                {"name": n, "type": "string", "format": "name" if n == "Name" else "", "description": n, "priority": p}
                for n, p in _BUILTIN_COLUMNS[res.plural]
            ]
            builtin_rows = [_builtin_cells(res.plural, item) for item in listing["items"]]
            return self._table_of(listing, builtin_columns, builtin_rows)
        columns: builtins.list[JsonDict] = [
            {"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}
        ]
        paths: builtins.list[str] = [".metadata.name"]
        if res is not None and res.crd is not None:
            for column in _crd_version(res.crd, res.api_version).get("additionalPrinterColumns", []):
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
            cells: builtins.list[Any] = []
            for column, path in zip(columns, paths, strict=True):
                value = _json_path(item, path)
                cells.append(_human_age(value) if column["type"] == "date" else value)
            rows.append(cells)
        return self._table_of(listing, columns, rows)

    @staticmethod
    def _table_of(
        listing: JsonDict, columns: builtins.list[JsonDict], cells: builtins.list[builtins.list[Any]]
    ) -> JsonDict:
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

    def _create(self, res: _Resource, namespace: str | None, body: Any, params: Mapping[str, str]) -> JsonDict:
        if not isinstance(body, dict):
            raise _ApiError.bad_request("the body of the request must be an object")
        obj: JsonDict = copy.deepcopy(body)
        self._check_type(res, obj)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise _ApiError.bad_request("metadata must be an object")
        if res.namespaced:
            body_ns = meta.get("namespace")
            if namespace is None:
                raise _ApiError(
                    405,
                    "MethodNotAllowed",
                    f"the server does not allow this method on the requested resource (post {res.store_key})",
                )
            if body_ns and body_ns != namespace:
                raise _ApiError.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if meta.get("resourceVersion"):
            raise _ApiError.bad_request("resourceVersion should not be set on objects to be created")
        for key in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "selfLink",
            "managedFields",
        ):
            meta.pop(key, None)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise _ApiError.invalid(
                    res,
                    "",
                    [
                        _FieldError(
                            "metadata.name", "FieldValueRequired", "Required value: name or generateName is required"
                        )
                    ],
                )
            for _ in range(100):
                name = meta["generateName"] + "".join(random.choice(_NAME_CHARS) for _ in range(5))
                if (namespace if res.namespaced else None, name) not in self._objects[res.store_key]:
                    break
            meta["name"] = name
        name = meta["name"]
        self._check_name(res, name)
        if (namespace if res.namespaced else None, name) in self._objects[res.store_key]:
            raise _ApiError(
                409,
                "AlreadyExists",
                f'{res.store_key} "{name}" already exists',
                {"name": name, "group": res.group, "kind": res.plural},
            )
        if res.status_subresource and res.crd is not None:
            obj.pop("status", None)
        obj = self._prepare(res, obj, None, params=params)
        if res.plural == "namespaces":
            obj["status"] = {"phase": "Active"}
            obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        if _is_true(params.get("dryRun")) or params.get("dryRun") == "All":
            return self._output(res, obj)
        self._stamp_new(obj)
        if res.namespaced and namespace is not None:
            self._ensure_namespace(namespace)
        return self._output(res, self._commit(res, "ADDED", obj, None))

    def _check_type(self, res: _Resource, obj: JsonDict) -> None:
        if obj.get("kind") not in (None, "", res.kind) or obj.get("apiVersion") not in (None, "", res.api_version):
            # The server accepts another version of the same group (conversion), nothing else.
            same_group = str(obj.get("apiVersion", "")).rsplit("/", 1)[0] == res.group if res.group else False
            if obj.get("kind") != res.kind or not same_group:
                raise _ApiError.bad_request(
                    f"the API version in the data ({obj.get('apiVersion')}) does not match "
                    f"the expected API version ({res.api_version})"
                    if obj.get("kind") == res.kind
                    else f'{obj.get("kind")} in version "{res.version}" cannot be handled as a {res.kind}'
                )
        obj["apiVersion"] = res.api_version
        obj["kind"] = res.kind

    def _check_name(self, res: _Resource, name: str) -> None:
        label = res.plural == "namespaces"
        pattern, limit = (_DNS1123_LABEL, 63) if label else (_DNS1123_SUBDOMAIN, 253)
        if len(name) > limit or not pattern.fullmatch(name):
            kind = "RFC 1123 label" if label else "RFC 1123 subdomain"
            chars = "'-'" if label else "'-' or '.'"
            detail = (
                f'Invalid value: "{name}": a lowercase {kind} must consist of lower case alphanumeric '
                f"characters, {chars}, and must start and end with an alphanumeric "
                f"character (regex used for validation is '{pattern.pattern.strip('^$')}')"
            )
            raise _ApiError.invalid(res, name, [_FieldError("metadata.name", "FieldValueInvalid", detail)])

    def deny(self, plural: str, namespace: str, message: str | None) -> None:
        """Refuse creates and updates of `plural` objects in `namespace` as a ValidatingAdmissionPolicy denying
        them would (422 Invalid with the policy's message); `None` lifts the denial."""
        if message is None:
            self._denials.pop((plural, namespace), None)
        else:
            self._denials[(plural, namespace)] = message

    def _check_policies(self, res: _Resource, obj: JsonDict) -> None:
        meta = obj["metadata"]
        message = self._denials.get((res.plural, str(meta.get("namespace"))))
        if message is not None:
            name = meta.get("name", "")
            raise _ApiError(
                422,
                "Invalid",
                f'{res.store_key} "{name}" is forbidden: ValidatingAdmissionPolicy \'kubepay-test\' with binding '
                f"'kubepay-test' denied request: {message}",
                {"name": name, "group": res.group, "kind": res.plural},
            )

    def _prepare(
        self,
        res: _Resource,
        obj: JsonDict,
        old: JsonDict | None,
        status_only: bool = False,
        params: Mapping[str, str] | None = None,
    ) -> JsonDict:
        """The server-side processing common to creates and updates: conversions, pruning, validation."""
        if errors := _metadata_errors(obj["metadata"]):
            raise _ApiError.invalid(res, obj["metadata"].get("name", ""), errors)
        if not status_only:
            self._check_policies(res, obj)
        if res.crd is not None:
            self._check_fields(res, obj, status_only, (params or {}).get("fieldValidation") or "Warn")
        if res.plural == "secrets":
            string_data = obj.pop("stringData", None) or {}
            data = dict(obj.get("data") or {})
            for key, value in string_data.items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            for key, value in data.items():
                try:
                    base64.b64decode(str(value), validate=True)
                except ValueError:
                    raise _ApiError.invalid(
                        res,
                        obj["metadata"].get("name", ""),
                        [_FieldError(f"data[{key}]", "FieldValueInvalid", "Invalid value: illegal base64 data")],
                    ) from None
            if data or "data" in obj:
                obj["data"] = data
            obj.setdefault("type", "Opaque")
        if res.crd is not None:
            obj = _normalize_custom_resource(res.crd, obj)
            errors = _validation_errors(res.crd, obj, old)
            if status_only:
                errors = [e for e in errors if e.field == "status" or e.field.startswith(("status.", "status["))]
            if errors:
                raise _ApiError.invalid(res, obj["metadata"].get("name", ""), errors)
        return obj

    def _check_fields(self, res: _Resource, obj: JsonDict, status_only: bool, directive: str) -> None:
        """Server-side field validation (``?fieldValidation=``): unknown fields fail, warn or are just pruned."""
        if directive not in ("Strict", "Warn", "Ignore"):
            raise _ApiError.bad_request(
                f"fieldValidation parameter unsupported: {directive}; supported values are Ignore, Warn, Strict"
            )
        if directive == "Ignore":
            return
        schema = _crd_schema(res.crd or {}, obj.get("apiVersion"))
        body = {key: value for key, value in obj.items() if key not in ("apiVersion", "kind", "metadata")}
        unknown = builtins.list(_unknown_fields(schema, body, []))
        # What the request cannot change anyway is not looked at: status on the main resource, the rest on status.
        if res.status_subresource:
            unknown = [f for f in unknown if f.startswith(("status.", "status[")) == status_only]
        if not unknown:
            return
        if directive == "Strict":
            joined = ", ".join(f"unknown field {json.dumps(f)}" for f in unknown)
            raise _ApiError.bad_request(
                f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}: strict decoding error: '
                f"{joined}"
            )
        warnings = _WARNINGS.get()
        if warnings is not None:
            warnings.extend(f"unknown field {json.dumps(f)}" for f in unknown)

    def _replace(
        self,
        res: _Resource,
        namespace: str | None,
        name: str,
        subresource: str | None,
        body: Any,
        params: Mapping[str, str],
    ) -> JsonDict:
        if not isinstance(body, dict):
            raise _ApiError.bad_request("the body of the request must be an object")
        old = self._stored(res, namespace, name)
        new = copy.deepcopy(body)
        self._check_type(res, new)
        meta = new.setdefault("metadata", {})
        if meta.get("name") and meta["name"] != name:
            raise _ApiError.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        if res.namespaced and meta.get("namespace") and meta["namespace"] != namespace:
            raise _ApiError.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        return self._update(res, old, new, subresource, meta.get("resourceVersion"), params)

    def _patch(
        self,
        res: _Resource,
        namespace: str | None,
        name: str,
        subresource: str | None,
        content_type: str,
        patch: Any,
        params: Mapping[str, str],
    ) -> tuple[JsonDict, bool]:
        key = (namespace if res.namespaced else None, name)
        old = self._objects[res.store_key].get(key)
        if content_type == "application/apply-patch+yaml":
            if not isinstance(patch, dict):
                raise _ApiError.bad_request("the body of the request must be an object")
            if old is None:
                if subresource is not None:
                    raise _ApiError.not_found(res, name)
                patch.setdefault("metadata", {})["name"] = name
                return self._create(res, namespace, patch, params), True
            new = _merge_patch(copy.deepcopy(old), _strip_directives(patch))
        else:
            if old is None:
                raise _ApiError.not_found(res, name)
            if content_type == "application/json-patch+json":
                if not isinstance(patch, list):
                    raise _ApiError.bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
                try:
                    new = _json_patch(old, patch)
                except _PatchError as exc:
                    raise _ApiError(
                        422,
                        "Invalid",
                        f"the server rejected our request due to an error in our request: {exc}",
                        {"causes": [{"reason": "FieldValueInvalid", "message": str(exc), "field": "patch"}]},
                    ) from None
            elif content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                if not isinstance(patch, dict):
                    raise _ApiError.bad_request("the body of a merge patch must be an object")
                new = _merge_patch(copy.deepcopy(old), _strip_directives(patch))
            else:
                raise _ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - "
                    f"accepted media types include: application/json-patch+json, "
                    f'application/merge-patch+json, application/apply-patch+yaml (got "{content_type}")',
                )
        if not isinstance(new, dict):
            raise _ApiError.bad_request("the patched object is not an object")
        new_meta = new.get("metadata") if isinstance(new.get("metadata"), dict) else {}
        precondition = new_meta.get("resourceVersion") if isinstance(new_meta, dict) else None
        if not isinstance(new.get("metadata"), dict):
            new["metadata"] = {}
        self._check_type(res, new)
        return self._update(res, old, new, subresource, precondition, params), False

    def _update(
        self,
        res: _Resource,
        old: JsonDict,
        new: JsonDict,
        subresource: str | None,
        precondition: Any,
        params: Mapping[str, str],
    ) -> JsonDict:
        name = old["metadata"]["name"]
        if precondition not in (None, "") and str(precondition) != old["metadata"]["resourceVersion"]:
            raise _ApiError.conflict(res, name)
        if subresource == "status":
            merged = copy.deepcopy(old)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
            new = merged
        else:
            meta = new["metadata"]
            for key in (
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "resourceVersion",
            ):
                if key in old["metadata"]:
                    meta[key] = old["metadata"][key]
                else:
                    meta.pop(key, None)
            meta.pop("managedFields", None)
            meta.pop("selfLink", None)
            if res.status_subresource:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
        new = self._prepare(res, new, old, status_only=subresource == "status", params=params)
        meta = new["metadata"]
        if old["metadata"].get("deletionTimestamp"):
            added = [f for f in meta.get("finalizers") or [] if f not in (old["metadata"].get("finalizers") or [])]
            if added:
                quoted = ", ".join(json.dumps(f) for f in added)
                raise _ApiError.invalid(
                    res,
                    name,
                    [
                        _FieldError(
                            "metadata.finalizers",
                            "FieldValueForbidden",
                            f"Forbidden: no new finalizers can be added if the object is being deleted, found new "
                            f"finalizers []string{{{quoted}}}",
                        )
                    ],
                )
        ignored = ("metadata", "status") if res.status_subresource or res.crd is None else ("metadata",)
        if _without(new, *ignored) != _without(old, *ignored):
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        if not meta.get("finalizers"):
            meta.pop("finalizers", None)
        if new == old:
            return self._output(res, old)  # a no-op write is no write: no new resourceVersion, no event
        if params.get("dryRun"):
            return self._output(res, new)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._output(res, self._remove(res, new, old))
        return self._output(res, self._commit(res, "MODIFIED", new, old))

    def _delete(
        self, res: _Resource, namespace: str | None, name: str, options: Any, params: Mapping[str, str]
    ) -> JsonDict:
        old = self._stored(res, namespace, name)
        options = options if isinstance(options, dict) else {}
        preconditions = options.get("preconditions") or {}
        if preconditions.get("uid") and preconditions["uid"] != old["metadata"]["uid"]:
            raise _ApiError(
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
            raise _ApiError.conflict(res, name)
        if _is_true(params.get("dryRun")) or params.get("dryRun") == "All":
            return self._output(res, old)
        policy = options.get("propagationPolicy") or params.get("propagationPolicy") or "Background"
        orphan = policy == "Orphan" or options.get("orphanDependents") is True
        if res.plural == "namespaces":
            for other in self._stored_resources():
                if other.namespaced:
                    for obj in self._select(other, name, _Selector()):
                        current = self._objects[other.store_key].get((name, obj["metadata"]["name"]))
                        if current is not None:
                            self._delete_object(other, current, orphan=False)
        result = self._delete_object(res, old, orphan=orphan)
        if result is not None:
            return self._output(res, result)
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "group": res.group, "kind": res.plural, "uid": old["metadata"]["uid"]},
        }

    def _delete_object(self, res: _Resource, old: JsonDict, *, orphan: bool) -> JsonDict | None:
        """Delete now, or mark for deletion if there are finalizers (then return the marked object)."""
        if old["metadata"].get("finalizers"):
            if old["metadata"].get("deletionTimestamp"):
                return old
            new = copy.deepcopy(old)
            new["metadata"]["deletionTimestamp"] = _now()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            if new["metadata"].get("generation"):  # as the API server's markAsDeleting does
                new["metadata"]["generation"] += 1
            return self._commit(res, "MODIFIED", new, old)
        self._remove(res, copy.deepcopy(old), old, orphan=orphan)
        return None

    def _remove(self, res: _Resource, final: JsonDict, old: JsonDict, *, orphan: bool = False) -> JsonDict:
        """Make the object disappear (DELETED), then collect its dependents (ownerReferences)."""
        self._commit(res, "DELETED", final, old)
        if not orphan:
            uid = old["metadata"]["uid"]
            namespace = old["metadata"].get("namespace") if res.namespaced else None
            for other in self._stored_resources():
                for obj in list(self._objects[other.store_key].values()):
                    if namespace is not None and obj["metadata"].get("namespace") != namespace:
                        continue
                    owners = obj["metadata"].get("ownerReferences") or []
                    if any(owner.get("uid") == uid for owner in owners):
                        current = self._objects[other.store_key].get(
                            (obj["metadata"].get("namespace") if other.namespaced else None, obj["metadata"]["name"])
                        )
                        if current is not None:
                            self._delete_object(other, current, orphan=False)
        return final

    def _stored_resources(self) -> builtins.list[_Resource]:
        """One resource per stored group+plural (several served versions share one storage)."""
        unique: dict[str, _Resource] = {}
        for res in self._resources.values():
            unique.setdefault(res.store_key, res)
        return list(unique.values())

    def _delete_collection(self, res: _Resource, namespace: str | None, params: Mapping[str, str]) -> JsonDict:
        selector = self._selector(res, params)
        deleted = []
        for obj in self._select(res, namespace, selector):
            current = self._objects[res.store_key].get(
                (obj["metadata"].get("namespace") if res.namespaced else None, obj["metadata"]["name"])
            )
            if current is not None:
                marked = self._delete_object(res, current, orphan=False)
                deleted.append(marked if marked is not None else current)
        return {
            "kind": f"{res.kind}List",
            "apiVersion": res.api_version,
            "metadata": {"resourceVersion": str(self._rv)},
            "items": [self._output(res, o) for o in deleted],
        }

    # ----------------------------------------------------------------------------------------------
    # Watching
    # ----------------------------------------------------------------------------------------------

    def _event_for(self, watcher: _Watcher, event: _Event) -> JsonDict | None:
        obj_ns = event.obj["metadata"].get("namespace")
        if watcher.namespace is not None and obj_ns != watcher.namespace:
            return None
        now_matches = watcher.selector.matches(event.obj)
        was_matching = event.old is not None and watcher.selector.matches(event.old)
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

    async def _watch(
        self, raw: aiohttp.web.BaseRequest, res: _Resource, namespace: str | None, selector: _Selector
    ) -> aiohttp.web.StreamResponse:
        params = raw.query
        try:
            timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        except ValueError:
            raise _ApiError.bad_request("invalid timeoutSeconds") from None
        since = params.get("resourceVersion") or ""
        bookmarks = _is_true(params.get("allowWatchBookmarks"))
        send_initial = _is_true(params.get("sendInitialEvents"))

        # Synchronously (no awaits): compute the replay and subscribe, so that nothing is lost between.
        watcher = _Watcher(res.store_key, namespace, selector, asyncio.Queue())
        initial: builtins.list[JsonDict] = []
        gone = False
        if since in ("", "0") or send_initial:
            initial = [{"type": "ADDED", "object": obj} for obj in self._select(res, namespace, selector)]
        else:
            try:
                start_rv = int(since)
            except ValueError:
                raise _ApiError.bad_request(f"invalid resource version: {since}") from None
            if start_rv < self._history_floor:
                gone = True
            else:
                for event in self._history:
                    if event.rv > start_rv and event.store_key == res.store_key:
                        rendered = self._event_for(watcher, event)
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
                            "resourceVersion": str(self._rv),
                            "annotations": {"k8s.io/initial-events-end": "true"},
                        },
                    },
                }
            )
        if not gone:
            self._watchers.add(watcher)

        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            await response.prepare(raw)
            if gone:
                await self._write(
                    response,
                    res,
                    {
                        "type": "ERROR",
                        "object": {
                            "kind": "Status",
                            "apiVersion": "v1",
                            "metadata": {},
                            "status": "Failure",
                            "message": f"too old resource version: {since} ({self._history_floor + 1})",
                            "reason": "Expired",
                            "code": 410,
                        },
                    },
                )
                return response
            for item in initial:
                await self._write(response, res, item)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout if timeout is not None else None
            while True:
                remaining = deadline - loop.time() if deadline is not None else None
                if remaining is not None and remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        queued = await watcher.queue.get()
                except TimeoutError:
                    break
                if queued is None:
                    break
                rendered = self._event_for(watcher, queued)
                if rendered is not None:
                    await self._write(response, res, rendered)
        except (ConnectionError, RuntimeError):
            pass  # the client went away
        finally:
            self._watchers.discard(watcher)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write_eof()
        return response

    async def _write(self, response: aiohttp.web.StreamResponse, res: _Resource, event: JsonDict) -> None:
        obj = event["object"]
        if obj.get("apiVersion") != res.api_version and event["type"] != "ERROR":
            event = {"type": event["type"], "object": {**obj, "apiVersion": res.api_version}}
        await response.write(json.dumps(event).encode() + b"\n")
