"""Discovery (``/api``, ``/apis``, ``/apis/GROUP/VERSION``, ``/version``) and error rendering by kmock's
:class:`kmock.KubernetesScaffold`, subclassed here; every other request goes to the emulator's API first."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import aiohttp.web
import attrs
import kmock

from kubepay_sandbox.kube_emulator.resources import Resource

if TYPE_CHECKING:
    from kubepay_sandbox.kube_emulator.routing import Api

_MAIN_VERBS: Final = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
_STATUS_VERBS: Final = ("get", "patch", "update")


@attrs.define(kw_only=True)
class Handler(kmock.KubernetesScaffold):
    api: Api | None = None

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # Render errors as Kubernetes Status responses, as kmock does inside ``async with`` — without
        # entering it, whose live-stream feeder is bound to one event loop (we restart on new ones).
        self._errors.append([])

    def register(self, res: Resource) -> None:
        """List the resource in discovery."""
        self.resources[kmock.resource(res.group, res.version, res.plural)] = kmock.ResourceInfo(
            namespaced=res.namespaced,
            kind=res.kind,
            singular=res.singular,
            verbs=set(_MAIN_VERBS),
            shortnames=set(res.short_names),
            categories=set(res.categories),
            subresources={"status"} if res.status_subresource else set(),
        )

    def register_create_only(self, group: str, version: str, plural: str, kind: str) -> None:
        """List a cluster-scoped API whose only verb is create (TokenReview, SubjectAccessReview)."""
        self.resources[kmock.resource(group, version, plural)] = kmock.ResourceInfo(
            namespaced=False, kind=kind, singular=kind.lower(), verbs={"create"})

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
        if self.api is not None:
            response = await self.api.serve(raw_request)
            if response is not None:
                return response
        try:
            return await super().__call__(raw_request)
        finally:
            # Keep kmock's request log and error log from growing in long runs (benchmarks).
            del self._requests[:-100]
            if self._errors:
                self._errors[-1].clear()
