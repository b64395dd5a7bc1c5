"""Validation as the API server does it: a custom resource against its CRD's structural schema (messages worded as
the server words them, patterns read as Go reads them), the ``self == oldSelf`` CEL transition rules, ObjectMeta's
label and annotation rules, and object names."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any, Final

import jsonschema

from kubepay_sandbox.kube_emulator.errors import ApiError, FieldError, field_path
from kubepay_sandbox.kube_emulator.resources import JsonDict, Resource, crd_schema

_MISSING: Final = object()
_DNS1123_SUBDOMAIN: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


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


def _schema_error(error: jsonschema.ValidationError) -> list[FieldError]:
    parts: list[str | int] = list(error.absolute_path)
    field = field_path(parts)
    value = error.instance
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    keyword = error.validator
    limit = error.validator_value
    where = f"{field} in body" if field else "body"
    if keyword == "required":
        present = value if isinstance(value, Mapping) else {}
        return [
            FieldError(field_path([*parts, name]), "FieldValueRequired", "Required value")
            for name in limit
            if name not in present
        ]
    if keyword == "type" or (keyword == "anyOf" and schema.get("x-int-or-string")):
        types = [t for t in ([limit] if isinstance(limit, str) else list(limit)) if t != "null"]
        if keyword == "anyOf":
            types = ["integer", "string"]
        actual = _type_name(value)
        return [
            FieldError(
                field,
                "FieldValueTypeInvalid",
                f'Invalid value: "{actual}": {where} must be of type {",".join(types)}: "{actual}"',
            )
        ]
    if keyword == "enum":
        supported = ", ".join(_go_value(v) for v in limit if v is not None)
        return [
            FieldError(
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
        return [FieldError(field, "FieldValueTooMany", f"Too many: {len(value)}: must have at most {limit} items")]
    if keyword == "uniqueItems":
        return [FieldError(field, "FieldValueDuplicate", f"Duplicate value: {_go_value(value)}")]
    if keyword in messages:
        shown = len(value) if keyword in ("minItems", "minProperties", "maxProperties") else value
        return [
            FieldError(
                field, "FieldValueInvalid", f"Invalid value: {_go_value(shown)}: {where} {messages[str(keyword)]}"
            )
        ]
    return [FieldError(field, "FieldValueInvalid", f"Invalid value: {_go_value(value)}: {error.message}")]


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


def _rule_errors(schema: Any, new: Any, old: Any, parts: list[str | int]) -> Iterator[FieldError]:
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
            yield FieldError(
                field_path(field_parts), "FieldValueInvalid", f"Invalid value: {_go_value(new)}: {message}"
            )  # the value itself, as kube-apiserver 1.37 prints it (older releases printed its type)
    if isinstance(new, Mapping) and isinstance(old, Mapping):
        properties = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        for key, value in new.items():
            sub = properties.get(key, additional if isinstance(additional, Mapping) else None)
            if sub is not None and key in old:
                yield from _rule_errors(sub, value, old[key], [*parts, key])


def validation_errors(
    crd: Mapping[str, Any],
    obj: Mapping[str, Any],
    old: Mapping[str, Any] | None = None,
) -> list[FieldError]:
    schema = dict(crd_schema(crd, obj.get("apiVersion")))
    properties = dict(schema.get("properties") or {})
    properties.pop("metadata", None)  # ObjectMeta is validated by the server's own rules
    schema["properties"] = properties
    instance = {key: value for key, value in obj.items() if key != "metadata"}
    validator = _SCHEMA_VALIDATOR(_to_jsonschema(schema))
    errors: list[FieldError] = []
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
    return [error.text for error in validation_errors(crd, obj, old)]


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


def _qualified_name_problems(key: str) -> list[str]:
    """apimachinery's IsQualifiedName: label keys and (lower-cased) annotation keys."""
    parts = key.split("/")
    if len(parts) > 2:
        return [f"a qualified name {_QUALIFIED_NAME_ERROR} with an optional DNS subdomain prefix and '/' "
                "(e.g. 'example.com/MyName')"]
    problems: list[str] = []
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


def metadata_errors(meta: Mapping[str, Any]) -> list[FieldError]:
    """The API server's ObjectMeta rules for labels and annotations (ValidateLabels, ValidateAnnotations)."""
    errors: list[FieldError] = []
    labels = meta.get("labels") or {}
    for key in sorted(labels):
        value = str(labels[key])
        for problem in _qualified_name_problems(key):
            errors.append(FieldError("metadata.labels", "FieldValueInvalid", f"Invalid value: {_go_value(key)}: "
                                      f"{problem}"))
        value_problems = ["must be no more than 63 characters"] if len(value) > 63 else []
        if not _LABEL_VALUE.fullmatch(value):
            value_problems.append(_LABEL_VALUE_ERROR)
        for problem in value_problems:
            errors.append(FieldError("metadata.labels", "FieldValueInvalid", f"Invalid value: {_go_value(value)}: "
                                      f"{problem}"))
    annotations = meta.get("annotations") or {}
    for key in sorted(annotations):
        for problem in _qualified_name_problems(key.lower()):
            errors.append(FieldError("metadata.annotations", "FieldValueInvalid",
                                      f"Invalid value: {_go_value(key)}: {problem}"))
    if sum(len(k) + len(str(v)) for k, v in annotations.items()) > _ANNOTATIONS_MAX_BYTES:
        errors.append(FieldError("metadata.annotations", "FieldValueTooLong",
                                  f"Too long: may not be more than {_ANNOTATIONS_MAX_BYTES} bytes"))
    return errors


def check_name(res: Resource, name: str) -> None:
    """An object's name: an RFC 1123 label for namespaces, an RFC 1123 subdomain for the rest (422 Invalid)."""
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
        raise ApiError.invalid(res, name, [FieldError("metadata.name", "FieldValueInvalid", detail)])
