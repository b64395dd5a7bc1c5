"""The HTTP routing: a request's path to a resource, namespace, name and subresource, its method to a verb, the body
decoded, and the answer written (as a Table when asked for one, with the request's warnings as headers)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import aiohttp.web
import yaml

from kubepay_sandbox.kube_emulator import deletion, request_warnings
from kubepay_sandbox.kube_emulator.errors import ApiError
from kubepay_sandbox.kube_emulator.listing import list_objects
from kubepay_sandbox.kube_emulator.openapi import serve_openapi
from kubepay_sandbox.kube_emulator.query import is_true
from kubepay_sandbox.kube_emulator.resources import JsonDict, Resource
from kubepay_sandbox.kube_emulator.reviews import Reviews
from kubepay_sandbox.kube_emulator.selectors import selector_from
from kubepay_sandbox.kube_emulator.storage import Store
from kubepay_sandbox.kube_emulator.tables import table
from kubepay_sandbox.kube_emulator.watch import watch
from kubepay_sandbox.kube_emulator.writes import Writes


@dataclasses.dataclass(frozen=True)
class Route:
    res: Resource
    namespace: str | None
    name: str | None
    subresource: str | None


def _parse_float(text: str) -> int | float:
    # Like the API server's JSON decoding of unstructured objects: whole numbers become integers.
    value = float(text)
    return int(value) if value.is_integer() and "e" not in text.lower() else value


def _loads(body: bytes, content_type: str) -> Any:
    if not body.strip():
        raise ApiError.bad_request("the request body is empty")
    try:
        if "yaml" in content_type:
            return yaml.safe_load(body)
        return json.loads(body, parse_float=_parse_float)
    except (ValueError, yaml.YAMLError) as exc:
        raise ApiError.bad_request(f"the body of the request was in an unknown format: {exc}") from None


class Api:
    """The requests the emulator answers itself: OpenAPI v3, the reviews, and every object request."""

    def __init__(self, store: Store, writes: Writes, reviews: Reviews) -> None:
        self._store = store
        self._writes = writes
        self._reviews = reviews

    async def serve(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse | None:
        """The answer, or None for what kmock answers (discovery, unknown paths)."""
        try:
            if raw.path == "/openapi/v3" or raw.path.startswith("/openapi/v3/"):
                return serve_openapi(self._store.resources.values(), raw.path)
            if (review := await self._reviews.serve(raw)) is not None:
                return review
            route = self._route(raw.path)
            if route is None:
                return None
            body = await raw.read()
            request_warnings.collect()
            return await self._dispatch(raw, route, body)
        except ApiError as exc:
            return exc.response()

    def _route(self, path: str) -> Route | None:
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
        if rest[0] == "namespaces" and len(rest) >= 3 and (group, version, rest[2]) in self._store.resources:
            namespace, rest = rest[1], rest[2:]
        res = self._store.resources.get((group, version, rest[0]))
        if res is None:
            raise ApiError(
                404, "NotFound", "the server could not find the requested resource", {"kind": rest[0], "group": group}
            )
        name = rest[1] if len(rest) >= 2 else None
        subresource = "/".join(rest[2:]) or None
        if namespace is not None and not res.namespaced:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if subresource is not None and not (subresource == "status" and res.status_subresource):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return Route(res, namespace, name, subresource)

    async def _dispatch(self, raw: aiohttp.web.BaseRequest, route: Route, body: bytes) -> aiohttp.web.StreamResponse:
        method, params = raw.method.upper(), raw.query
        res, namespace, name = route.res, route.namespace, route.name
        store, writes = self._store, self._writes
        content_type = raw.headers.get("Content-Type", "application/json").split(";")[0].strip().lower()
        if method == "GET" and is_true(params.get("watch")):
            selector = selector_from(res, params)
            if name is not None:
                selector = dataclasses.replace(selector, fields=(*selector.fields, ("metadata.name", "=", name)))
            return await watch(store, raw, res, namespace, selector)
        if name is None:
            if method == "GET":
                return self._respond(raw, list_objects(store, res, namespace, params))
            if method == "POST":
                return self._respond(raw, writes.create(res, namespace, _loads(body, content_type), params), 201)
            if method == "DELETE":
                return self._respond(raw, deletion.delete_collection(store, res, namespace, params))
            raise ApiError(
                405,
                "MethodNotAllowed",
                f"the server does not allow this method on the requested resource ({method} {res.store_key})",
            )
        if res.namespaced and namespace is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if method == "GET":
            return self._respond(raw, store.output(res, store.stored(res, namespace, name)))
        if method == "PUT":
            return self._respond(
                raw, writes.replace(res, namespace, name, route.subresource, _loads(body, content_type), params)
            )
        if method == "PATCH":
            obj, created = writes.patch(
                res, namespace, name, route.subresource, content_type, _loads(body, content_type), params
            )
            return self._respond(raw, obj, 201 if created else 200)
        if method == "DELETE":
            options = _loads(body, content_type) if body.strip() else {}
            return self._respond(raw, deletion.delete(store, res, namespace, name, options, params))
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    def _respond(self, raw: aiohttp.web.BaseRequest, payload: JsonDict, status: int = 200) -> aiohttp.web.Response:
        if payload.get("kind", "").endswith("List") and "as=Table" in raw.headers.get("Accept", ""):
            payload = table(self._store.resources.values(), payload)
        response = aiohttp.web.Response(
            body=json.dumps(payload).encode(), status=status, content_type="application/json"
        )
        for warning in request_warnings.collected():
            response.headers.add("Warning", f"299 - {json.dumps(warning)}")
        return response
