"""The resources the emulator serves: the built-in ones kopf and kubepay use, and the served versions of the CRDs
it is given (one storage per group and plural, shared by the versions)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Final, cast

JsonDict = dict[str, Any]


@dataclasses.dataclass(frozen=True, eq=False)
class Resource:
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


BUILTINS: Final = (
    Resource("", "v1", "namespaces", "Namespace", "namespace", False, ("ns",), (), True),
    Resource("", "v1", "secrets", "Secret", "secret", True),
    Resource("", "v1", "configmaps", "ConfigMap", "configmap", True, ("cm",)),
    Resource("", "v1", "events", "Event", "event", True, ("ev",)),
)


def resources_from_crd(crd: Mapping[str, Any]) -> list[Resource]:
    spec = crd.get("spec", {})
    names = spec.get("names", {})
    result: list[Resource] = []
    for version in spec.get("versions", []):
        if not version.get("served", True):
            continue
        result.append(
            Resource(
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


def crd_version(crd: Mapping[str, Any], api_version: str | None) -> Mapping[str, Any]:
    versions: list[Mapping[str, Any]] = list(crd.get("spec", {}).get("versions", []))
    wanted = (api_version or "").rsplit("/", 1)[-1]
    for version in versions:
        if version.get("name") == wanted:
            return version
    for version in versions:
        if version.get("storage"):
            return version
    return versions[0] if versions else {}


def crd_schema(crd: Mapping[str, Any], api_version: str | None) -> Mapping[str, Any]:
    schema = crd_version(crd, api_version).get("schema", {}).get("openAPIV3Schema")
    return cast(Mapping[str, Any], schema or {"type": "object", "x-kubernetes-preserve-unknown-fields": True})
