"""Async Kubernetes API calls made outside kopf's handlers (status writes, Secrets, look-ups)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import hdrs
from aiohttp.helpers import get_env_proxy_for_url
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from yarl import URL

from kubepay.model.resources import GROUP, VERSION

MERGE_PATCH = "application/merge-patch+json"


class KubeUnavailable(Exception):
    """The API server could not be reached or answered 5xx; the caller should retry later."""


class Conflict(Exception):
    """The object changed since it was read (HTTP 409): read again and recompute."""


class NotFound(Exception):
    """The object does not exist (any more)."""


class TokenRefused(Exception):
    """The API server's TokenReview does not know the token; the message is its reason (never the token)."""


@dataclass(frozen=True)
class Identity:
    """Whom a bearer token belongs to, as TokenReview says; SubjectAccessReview asks about exactly this."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: dict[str, list[str]] = field(default_factory=dict)


class Forbidden(Exception):
    """RBAC does not allow the call (HTTP 403); the text is the API server's message."""


class Invalid(Exception):
    """The API server refused the object (HTTP 422): repeating the same write cannot succeed.

    The text is the API server's own message, e.g. `Secret "x" is invalid: metadata.labels: Invalid value: ...`.
    """


def _server_message(exc: ApiException) -> str:
    try:
        message = json.loads(exc.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or exc.reason)


def _translate(exc: ApiException) -> Exception:
    if exc.status == 409:
        return Conflict(str(exc.reason))
    if exc.status == 404:
        return NotFound(str(exc.reason))
    if exc.status == 422:
        return Invalid(_server_message(exc))
    if exc.status is None or exc.status >= 500 or exc.status == 429:
        return KubeUnavailable(f"Kubernetes API answered {exc.status}")
    return exc


async def load_config() -> client.ApiClient:
    """In-cluster service account when present, the kubeconfig otherwise."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    else:
        await config.load_kube_config()
    return _environment_read_once(client.ApiClient())


def _environment_read_once(api: client.ApiClient) -> client.ApiClient:
    """Read the proxy variables once, at start, instead of on every API call.

    kubernetes_asyncio's session trusts the environment, so aiohttp looks up `HTTPS_PROXY`/`NO_PROXY` and
    reads ~/.netrc, each in a worker thread, for every request. The proxy they name for the API server is
    resolved here (a kubeconfig `proxy-url` still wins) and the session stops looking: Kubernetes
    credentials never come from netrc.
    """
    rest = api.rest_client
    if not rest.proxy:
        with contextlib.suppress(LookupError):
            proxy, auth = get_env_proxy_for_url(URL(str(api.configuration.host)))
            rest.proxy = str(proxy)
            if auth is not None:
                rest.proxy_headers = {**(rest.proxy_headers or {}), hdrs.PROXY_AUTHORIZATION: auth.encode()}
    trusting = rest.pool_manager
    rest.pool_manager = aiohttp.ClientSession(connector=trusting.connector, trust_env=False,
                                              read_bufsize=2**21)  # kubernetes_asyncio's: objects up to etcd's limit
    trusting.detach()
    return api


class KubeClient:
    """The few typed calls kubepay makes; failures map to Conflict, NotFound, Invalid or KubeUnavailable."""

    def __init__(self, api: client.ApiClient) -> None:
        self._api = api
        self._custom = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)
        self._authentication = client.AuthenticationV1Api(api)
        self._authorization = client.AuthorizationV1Api(api)

    @classmethod
    async def connect(cls) -> KubeClient:
        return cls(await load_config())

    @property
    def address(self) -> str:
        """The API server's URL, for log lines."""
        return str(self._api.configuration.host)

    async def close(self) -> None:
        await self._api.close()

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except ApiException as exc:
            raise _translate(exc) from None
        except (OSError, TimeoutError, aiohttp.ClientError) as exc:
            raise KubeUnavailable(f"Kubernetes API unreachable: {type(exc).__name__}") from None

    async def get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        """Read through the status subresource: the whole object, with RBAC on `<plural>/status` only."""
        result: dict[str, Any] = await self._call(
            self._custom.get_namespaced_custom_object_status(GROUP, VERSION, namespace, plural, name)
        )
        return result

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any], resource_version: str | None
    ) -> dict[str, Any]:
        """Merge-patch status; with a resourceVersion the write is refused (Conflict) if anyone wrote since."""
        body: dict[str, Any] = {"status": status}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        result: dict[str, Any] = await self._call(
            self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, name, body, _content_type=MERGE_PATCH  # type: ignore[call-arg]
            )
        )
        return result

    async def create_custom(self, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create a kubepay resource; Conflict if the name is taken, NotFound if the type is not served."""
        result: dict[str, Any] = await self._call(
            self._custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)
        )
        return result

    async def list_custom(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        """Every object of a kubepay kind in one namespace."""
        result: dict[str, Any] = await self._call(
            self._custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
        )
        return list(result.get("items") or [])

    async def list_page(self, plural: str, namespace: str | None, limit: int, token: str | None) -> dict[str, Any]:
        """One page of a kind's objects (all namespaces when `namespace` is None), as the server's JSON."""
        options: dict[str, Any] = {"limit": limit, "_preload_content": False}
        if token:
            options["_continue"] = token
        call = (self._custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural, **options)
                if namespace else self._custom.list_cluster_custom_object(GROUP, VERSION, plural, **options))

        async def read() -> dict[str, Any]:
            response = await call
            try:
                if response.status >= 400:
                    raise ApiException(status=response.status, reason=response.reason)
                page: dict[str, Any] = json.loads(await response.read())
                return page
            finally:
                response.release()

        result: dict[str, Any] = await self._call(read())
        return result

    async def watch(self, plural: str, namespace: str | None, resource_version: str,
                    timeout_seconds: int) -> AsyncIterator[dict[str, Any]]:
        """A kind's watch events from `resource_version` on, as the server's JSON, until it ends the stream."""
        options: dict[str, Any] = {"watch": True, "resource_version": resource_version, "allow_watch_bookmarks": True,
                                   "timeout_seconds": timeout_seconds, "_preload_content": False,
                                   "_request_timeout": timeout_seconds + 30}
        call = (self._custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural, **options)
                if namespace else self._custom.list_cluster_custom_object(GROUP, VERSION, plural, **options))
        response = await self._call(call)
        try:
            if response.status >= 400:
                raise _translate(ApiException(status=response.status, reason=response.reason))
            while True:
                try:
                    line = await response.content.readline()
                except (OSError, TimeoutError, aiohttp.ClientError) as exc:
                    raise KubeUnavailable(f"Kubernetes API watch broke: {type(exc).__name__}") from None
                if not line:
                    return
                if line.strip():
                    yield json.loads(line)
        finally:
            response.release()

    async def set_finalizers(self, plural: str, namespace: str, name: str, finalizers: list[str],
                             resource_version: str) -> dict[str, Any]:
        """Replace the object's finalizers, refused (Conflict) if it changed since `resource_version`."""
        body = {"metadata": {"finalizers": finalizers, "resourceVersion": resource_version}}
        result: dict[str, Any] = await self._call(
            self._custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name, body, _content_type=MERGE_PATCH  # type: ignore[call-arg]
            )
        )
        return result

    async def get_peering(self, name: str, namespace: str | None) -> dict[str, Any]:
        """kopf's peering object (KopfPeering in a namespace, ClusterKopfPeering without one)."""
        call = (self._custom.get_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfpeerings", name)
                if namespace else self._custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", name))
        result: dict[str, Any] = await self._call(call)
        return result

    async def create_event(self, namespace: str, event: dict[str, Any]) -> None:
        """Post a core/v1 Event."""
        await self._call(self._core.create_namespaced_event(namespace, event))  # type: ignore[arg-type]

    async def delete_custom(self, plural: str, namespace: str, name: str, uid: str, resource_version: str) -> None:
        """Delete exactly this version of the object: Conflict if it changed since it was read, NotFound if gone."""
        body = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid, resource_version=resource_version))
        try:
            await self._call(self._custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, plural, name,
                                                                           body=body))
        except ApiException as exc:
            if exc.status == 403:
                raise Forbidden(_server_message(exc)) from None
            raise

    async def served(self, plural: str) -> bool:
        """Whether the API server serves this kubepay resource type (its CRD is installed)."""
        resources = await self._call(self._custom.get_api_resources(GROUP, VERSION))
        return any(r.name == plural for r in (getattr(resources, "resources", None) or []))

    async def get_secret(self, namespace: str, name: str) -> dict[str, str]:
        """A Secret's data, decoded; NotFound if it does not exist (yet)."""
        secret = await self._call(self._core.read_namespaced_secret(name, namespace))
        return {key: base64.b64decode(value).decode() for key, value in (secret.data or {}).items()}

    async def review_token(self, token: str) -> Identity:
        """TokenReview (authentication.k8s.io/v1): whom the token belongs to; TokenRefused if nobody."""
        review = await self._call(
            self._authentication.create_token_review(client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token)))
        )
        status = review.status
        if status is None or not status.authenticated or status.user is None:
            raise TokenRefused((status.error if status is not None else None) or "not authenticated")
        user = status.user
        return Identity(user.username or "", user.uid or "", tuple(user.groups or ()),
                        {key: list(values or ()) for key, values in (user.extra or {}).items()})

    async def review_access(self, who: Identity, verb: str, plural: str, namespace: str) -> tuple[bool, str]:
        """SubjectAccessReview (authorization.k8s.io/v1): may `who` `verb` kubepay's `plural` in `namespace`?

        Returns the answer and the authorizer's reason (often empty when nothing allows it)."""
        spec = client.V1SubjectAccessReviewSpec(
            user=who.username, uid=who.uid or None, groups=list(who.groups) or None, extra=who.extra or None,
            resource_attributes=client.V1ResourceAttributes(namespace=namespace, verb=verb, group=GROUP,
                                                            resource=plural),
        )
        review = await self._call(
            self._authorization.create_subject_access_review(client.V1SubjectAccessReview(spec=spec))
        )
        status = review.status
        return bool(status is not None and status.allowed), (status.reason if status is not None else None) or ""

    async def ping(self) -> None:
        """Discovery of kubepay's API group: proves the API server answers and the CRDs are installed."""
        try:
            await self._call(self._custom.get_api_resources(GROUP, VERSION))
        except NotFound:
            raise KubeUnavailable(f"{GROUP}/{VERSION} is not served: are kubepay's CRDs installed?") from None

    async def apply_secret(
        self, namespace: str, name: str, data: dict[str, str], owner: dict[str, Any], labels: dict[str, str],
        annotations: dict[str, str],
    ) -> None:
        """Create the Secret, or leave an existing one in place (it already holds the same value)."""
        secret = client.V1Secret(
            metadata=client.V1ObjectMeta(
                name=name,
                namespace=namespace,
                labels=labels,
                annotations=annotations,
                owner_references=[
                    client.V1OwnerReference(
                        api_version=owner["apiVersion"],
                        kind=owner["kind"],
                        name=owner["metadata"]["name"],
                        uid=owner["metadata"]["uid"],
                        controller=True,
                        block_owner_deletion=True,
                    )
                ],
            ),
            type="Opaque",
            string_data=data,
        )
        try:
            await self._call(self._core.create_namespaced_secret(namespace, secret))
        except Conflict:
            return
