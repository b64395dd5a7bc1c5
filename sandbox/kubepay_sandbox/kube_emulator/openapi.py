"""OpenAPI v3 (``/openapi/v3``): what kubectl reads to learn that the server validates fields itself (so its
default ``--validate=strict`` leaves validation to the server), and what ``kubectl explain`` teaches from."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence

import aiohttp.web

from kubepay_sandbox.kube_emulator.errors import ApiError
from kubepay_sandbox.kube_emulator.resources import JsonDict, Resource, crd_schema


def _group_versions(resources: Iterable[Resource]) -> dict[str, list[Resource]]:
    """OpenAPI v3 path ("api/v1", "apis/GROUP/VERSION") -> the resources served there."""
    result: dict[str, list[Resource]] = {}
    for res in resources:
        key = f"apis/{res.group}/{res.version}" if res.group else f"api/{res.version}"
        result.setdefault(key, []).append(res)
    return result


def serve_openapi(resources: Iterable[Resource], path: str) -> aiohttp.web.Response:
    """``/openapi/v3`` (the index of group-versions) or one group-version's document."""
    documents = {key: _document(served) for key, served in _group_versions(resources).items()}
    if path.rstrip("/") == "/openapi/v3":
        paths = {}
        for key, document in documents.items():
            digest = hashlib.sha512(json.dumps(document, sort_keys=True).encode()).hexdigest().upper()
            paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest}"}
        return aiohttp.web.json_response({"paths": paths})
    wanted = path[len("/openapi/v3/") :].strip("/")
    if wanted not in documents:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    return aiohttp.web.json_response(documents[wanted])


def _document(resources: Sequence[Resource]) -> JsonDict:
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
        schema = dict(crd_schema(res.crd, res.api_version)) if res.crd is not None else {"type": "object"}
        schemas[name] = {**schema, "x-kubernetes-group-version-kind": gvk}
        ref = {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}

        def operation(
            verb: str,
            action: str,
            body: JsonDict | None,
            params: list[JsonDict],
            gvk: list[JsonDict] = gvk,
            ref: JsonDict = ref,
            res: Resource = res,
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
