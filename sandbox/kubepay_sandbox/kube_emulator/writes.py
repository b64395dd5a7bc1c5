"""Creates, updates and patches: the server-side processing of a write (type and name checks, generateName,
admission, field validation, secrets' stringData, pruning, defaulting, schema and CEL validation), the
resourceVersion precondition, status kept apart when the resource has the status subresource, and generations."""

from __future__ import annotations

import base64
import copy
import json
import random
from collections.abc import Mapping
from typing import Any, Final

from kubepay_sandbox.kube_emulator import request_warnings
from kubepay_sandbox.kube_emulator.admission import Denials
from kubepay_sandbox.kube_emulator.deletion import remove
from kubepay_sandbox.kube_emulator.errors import ApiError, FieldError
from kubepay_sandbox.kube_emulator.patches import PatchError, json_patch, merge_patch, strip_directives
from kubepay_sandbox.kube_emulator.pruning import normalize_custom_resource, unknown_fields
from kubepay_sandbox.kube_emulator.query import dry_run
from kubepay_sandbox.kube_emulator.resources import JsonDict, Resource, crd_schema
from kubepay_sandbox.kube_emulator.storage import Store
from kubepay_sandbox.kube_emulator.validation import check_name, metadata_errors, validation_errors

_NAME_CHARS: Final = "bcdfghjklmnpqrstvwxz2456789"  # as the real generateName suffix


def _without(obj: Mapping[str, Any], *keys: str) -> JsonDict:
    return {key: value for key, value in obj.items() if key not in keys}


class Writes:
    def __init__(self, store: Store, denials: Denials) -> None:
        self._store = store
        self._denials = denials

    def create(self, res: Resource, namespace: str | None, body: Any, params: Mapping[str, str]) -> JsonDict:
        if not isinstance(body, dict):
            raise ApiError.bad_request("the body of the request must be an object")
        obj: JsonDict = copy.deepcopy(body)
        self._check_type(res, obj)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError.bad_request("metadata must be an object")
        if res.namespaced:
            body_ns = meta.get("namespace")
            if namespace is None:
                raise ApiError(
                    405,
                    "MethodNotAllowed",
                    f"the server does not allow this method on the requested resource (post {res.store_key})",
                )
            if body_ns and body_ns != namespace:
                raise ApiError.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if meta.get("resourceVersion"):
            raise ApiError.bad_request("resourceVersion should not be set on objects to be created")
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
                raise ApiError.invalid(
                    res,
                    "",
                    [
                        FieldError(
                            "metadata.name", "FieldValueRequired", "Required value: name or generateName is required"
                        )
                    ],
                )
            for _ in range(100):
                name = meta["generateName"] + "".join(random.choice(_NAME_CHARS) for _ in range(5))
                if self._store.find(res, namespace, name) is None:
                    break
            meta["name"] = name
        name = meta["name"]
        check_name(res, name)
        if self._store.find(res, namespace, name) is not None:
            raise ApiError(
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
        if dry_run(params):
            return self._store.output(res, obj)
        self._store.stamp_new(obj)
        if res.namespaced and namespace is not None:
            self._store.ensure_namespace(namespace)
        return self._store.output(res, self._store.commit(res, "ADDED", obj, None))

    def _check_type(self, res: Resource, obj: JsonDict) -> None:
        if obj.get("kind") not in (None, "", res.kind) or obj.get("apiVersion") not in (None, "", res.api_version):
            # The server accepts another version of the same group (conversion), nothing else.
            same_group = str(obj.get("apiVersion", "")).rsplit("/", 1)[0] == res.group if res.group else False
            if obj.get("kind") != res.kind or not same_group:
                raise ApiError.bad_request(
                    f"the API version in the data ({obj.get('apiVersion')}) does not match "
                    f"the expected API version ({res.api_version})"
                    if obj.get("kind") == res.kind
                    else f'{obj.get("kind")} in version "{res.version}" cannot be handled as a {res.kind}'
                )
        obj["apiVersion"] = res.api_version
        obj["kind"] = res.kind

    def _prepare(
        self,
        res: Resource,
        obj: JsonDict,
        old: JsonDict | None,
        status_only: bool = False,
        params: Mapping[str, str] | None = None,
    ) -> JsonDict:
        """The server-side processing common to creates and updates: conversions, pruning, validation."""
        if errors := metadata_errors(obj["metadata"]):
            raise ApiError.invalid(res, obj["metadata"].get("name", ""), errors)
        if not status_only:
            self._denials.check(res, obj)
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
                    raise ApiError.invalid(
                        res,
                        obj["metadata"].get("name", ""),
                        [FieldError(f"data[{key}]", "FieldValueInvalid", "Invalid value: illegal base64 data")],
                    ) from None
            if data or "data" in obj:
                obj["data"] = data
            obj.setdefault("type", "Opaque")
        if res.crd is not None:
            obj = normalize_custom_resource(res.crd, obj)
            errors = validation_errors(res.crd, obj, old)
            if status_only:
                errors = [e for e in errors if e.field == "status" or e.field.startswith(("status.", "status["))]
            if errors:
                raise ApiError.invalid(res, obj["metadata"].get("name", ""), errors)
        return obj

    def _check_fields(self, res: Resource, obj: JsonDict, status_only: bool, directive: str) -> None:
        """Server-side field validation (``?fieldValidation=``): unknown fields fail, warn or are just pruned."""
        if directive not in ("Strict", "Warn", "Ignore"):
            raise ApiError.bad_request(
                f"fieldValidation parameter unsupported: {directive}; supported values are Ignore, Warn, Strict"
            )
        if directive == "Ignore":
            return
        schema = crd_schema(res.crd or {}, obj.get("apiVersion"))
        body = {key: value for key, value in obj.items() if key not in ("apiVersion", "kind", "metadata")}
        unknown = list(unknown_fields(schema, body, []))
        # What the request cannot change anyway is not looked at: status on the main resource, the rest on status.
        if res.status_subresource:
            unknown = [f for f in unknown if f.startswith(("status.", "status[")) == status_only]
        if not unknown:
            return
        if directive == "Strict":
            joined = ", ".join(f"unknown field {json.dumps(f)}" for f in unknown)
            raise ApiError.bad_request(
                f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}: strict decoding error: '
                f"{joined}"
            )
        request_warnings.warn(f"unknown field {json.dumps(f)}" for f in unknown)

    def replace(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        subresource: str | None,
        body: Any,
        params: Mapping[str, str],
    ) -> JsonDict:
        if not isinstance(body, dict):
            raise ApiError.bad_request("the body of the request must be an object")
        old = self._store.stored(res, namespace, name)
        new = copy.deepcopy(body)
        self._check_type(res, new)
        meta = new.setdefault("metadata", {})
        if meta.get("name") and meta["name"] != name:
            raise ApiError.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        if res.namespaced and meta.get("namespace") and meta["namespace"] != namespace:
            raise ApiError.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        return self._update(res, old, new, subresource, meta.get("resourceVersion"), params)

    def patch(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        subresource: str | None,
        content_type: str,
        patch: Any,
        params: Mapping[str, str],
    ) -> tuple[JsonDict, bool]:
        old = self._store.find(res, namespace, name)
        if content_type == "application/apply-patch+yaml":
            if not isinstance(patch, dict):
                raise ApiError.bad_request("the body of the request must be an object")
            if old is None:
                if subresource is not None:
                    raise ApiError.not_found(res, name)
                patch.setdefault("metadata", {})["name"] = name
                return self.create(res, namespace, patch, params), True
            new = merge_patch(copy.deepcopy(old), strip_directives(patch))
        else:
            if old is None:
                raise ApiError.not_found(res, name)
            if content_type == "application/json-patch+json":
                if not isinstance(patch, list):
                    raise ApiError.bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
                try:
                    new = json_patch(old, patch)
                except PatchError as exc:
                    raise ApiError(
                        422,
                        "Invalid",
                        f"the server rejected our request due to an error in our request: {exc}",
                        {"causes": [{"reason": "FieldValueInvalid", "message": str(exc), "field": "patch"}]},
                    ) from None
            elif content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                if not isinstance(patch, dict):
                    raise ApiError.bad_request("the body of a merge patch must be an object")
                new = merge_patch(copy.deepcopy(old), strip_directives(patch))
            else:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - "
                    f"accepted media types include: application/json-patch+json, "
                    f'application/merge-patch+json, application/apply-patch+yaml (got "{content_type}")',
                )
        if not isinstance(new, dict):
            raise ApiError.bad_request("the patched object is not an object")
        new_meta = new.get("metadata") if isinstance(new.get("metadata"), dict) else {}
        precondition = new_meta.get("resourceVersion") if isinstance(new_meta, dict) else None
        if not isinstance(new.get("metadata"), dict):
            new["metadata"] = {}
        self._check_type(res, new)
        return self._update(res, old, new, subresource, precondition, params), False

    def _update(
        self,
        res: Resource,
        old: JsonDict,
        new: JsonDict,
        subresource: str | None,
        precondition: Any,
        params: Mapping[str, str],
    ) -> JsonDict:
        name = old["metadata"]["name"]
        if precondition not in (None, "") and str(precondition) != old["metadata"]["resourceVersion"]:
            raise ApiError.conflict(res, name)
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
                raise ApiError.invalid(
                    res,
                    name,
                    [
                        FieldError(
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
            return self._store.output(res, old)  # a no-op write is no write: no new resourceVersion, no event
        if params.get("dryRun"):
            return self._store.output(res, new)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._store.output(res, remove(self._store, res, new, old))
        return self._store.output(res, self._store.commit(res, "MODIFIED", new, old))
