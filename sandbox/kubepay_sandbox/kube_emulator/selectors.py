"""Label and field selectors (``labelSelector``, ``fieldSelector``) and the objects they match."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, Final

from kubepay_sandbox.kube_emulator.errors import ApiError
from kubepay_sandbox.kube_emulator.resources import Resource

_LABEL_KEY: Final = re.compile(r"^([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


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
        raise ApiError.bad_request(f"unable to parse requirement: {term!r}")
    for requirement in requirements:
        if not _LABEL_KEY.match(requirement.key):
            raise ApiError.bad_request(f"unable to parse requirement: invalid label key {requirement.key!r}")
    return requirements


def _parse_field_selector(text: str, res: Resource) -> list[tuple[str, str, str]]:
    result: list[tuple[str, str, str]] = []
    for term in _split_selector(text):
        match = re.fullmatch(r"([^=!\s]+)\s*(==|=|!=)\s*(.*)", term)
        if not match:
            raise ApiError.bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        field, op, value = match.group(1), ("!=" if match.group(2) == "!=" else "="), match.group(3)
        if res.crd is not None and field not in ("metadata.name", "metadata.namespace"):
            raise ApiError.bad_request(
                f'"{field}" is not a known field selector: only "metadata.name", "metadata.namespace"'
            )
        result.append((field, op, value))
    return result


@dataclasses.dataclass(frozen=True)
class Selector:
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


def selector_from(res: Resource, params: Mapping[str, str]) -> Selector:
    """The request's ``labelSelector`` and ``fieldSelector``; 400 Bad Request for one the server cannot parse."""
    return Selector(
        tuple(_parse_label_selector(params.get("labelSelector", ""))),
        tuple(_parse_field_selector(params.get("fieldSelector", ""), res)),
    )
