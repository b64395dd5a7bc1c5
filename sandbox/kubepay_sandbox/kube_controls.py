"""What tests do to the Kubernetes API besides using it: refuse writes as an admission policy would, issue
ServiceAccount tokens, grant access, take the API server away and bring it back.

The emulator does each in memory (:meth:`KubeEmulator.deny`, :class:`~kubepay_sandbox.kube_emulator.reviews.Reviews`,
stop/start). A real cluster gets the real objects through its API: a ValidatingAdmissionPolicy and its
binding, a ServiceAccount and a TokenRequest (bound to a Pod object when asked), a Role and a RoleBinding.
Only a control plane the sandbox started itself (KUBEPAY_E2E_REAL) can be stopped; tests that do that are
marked ``stops_kube_api``.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import time
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from kubepay_sandbox.kube_emulator import KubeEmulator
from kubepay_sandbox.realcluster import RealCluster

__all__ = ["ClusterControls", "EmulatorControls", "KubeControls", "service_account_token"]

CREATED_BY = {"app.kubernetes.io/created-by": "kubepay-e2e"}  # leftovers: kubectl delete ... -l
POLICY_TIMEOUT = 30.0  # the API server loads a new policy from its informer within a second or two
# The core kinds a denial can name (kind, CoreV1Api method): its effect is probed with a dry-run create.
_CORE_KINDS = {"secrets": ("Secret", "create_namespaced_secret"),
               "configmaps": ("ConfigMap", "create_namespaced_config_map")}


class KubeControls(abc.ABC):
    @abc.abstractmethod
    async def deny(self, plural: str, namespace: str, message: str | None) -> None:
        """Refuse creates and updates of core `plural` objects in `namespace` with `message` (422 Invalid, as a
        ValidatingAdmissionPolicy does); None lifts the denial. Returns once the API server enforces it."""

    @abc.abstractmethod
    async def service_account_token(self, namespace: str, name: str, pod: str = "") -> str:
        """A token of ServiceAccount `namespace/name` (made if missing), bound to a Pod named `pod` if given, as a
        pod has it mounted."""

    @abc.abstractmethod
    async def allow(self, user: str, verb: str, resource: str, *, group: str, namespace: str) -> None:
        """Let `user` (e.g. ``system:serviceaccount:NS:NAME``) `verb` `resource` of API `group` in `namespace`."""

    @abc.abstractmethod
    async def stop_api(self) -> None:
        """Make the Kubernetes API unreachable (connections refused) until :meth:`start_api`."""

    @abc.abstractmethod
    async def start_api(self) -> None:
        """The API back on the same address with the same data; returns once it serves kubepay's kinds."""


class EmulatorControls(KubeControls):
    def __init__(self, emulator: KubeEmulator) -> None:
        self._emulator = emulator

    async def deny(self, plural: str, namespace: str, message: str | None) -> None:
        self._emulator.deny(plural, namespace, message)

    async def service_account_token(self, namespace: str, name: str, pod: str = "") -> str:
        return self._emulator.reviews.issue_service_account_token(namespace, name, pod=pod)

    async def allow(self, user: str, verb: str, resource: str, *, group: str, namespace: str) -> None:
        self._emulator.reviews.allow(user, verb, resource, group=group, namespace=namespace)

    async def stop_api(self) -> None:
        await self._emulator.stop()

    async def start_api(self) -> None:
        await self._emulator.start()


class ClusterControls(KubeControls):
    """A real cluster, as the admin identity of `api`; `control_plane` when the sandbox started it."""

    def __init__(self, api: client.ApiClient, control_plane: RealCluster | None) -> None:
        self._api, self._control_plane = api, control_plane

    async def deny(self, plural: str, namespace: str, message: str | None) -> None:
        if plural not in _CORE_KINDS:
            raise ValueError(f"a denial names one of {', '.join(_CORE_KINDS)}, not {plural!r}")
        name = _name("kubepay-deny", plural, namespace)
        registration = client.AdmissionregistrationV1Api(self._api)
        if message is None:
            for delete in (registration.delete_validating_admission_policy_binding,
                           registration.delete_validating_admission_policy):
                try:
                    await delete(name)
                except ApiException as exc:
                    if exc.status != 404:
                        raise
        else:
            await registration.create_validating_admission_policy(_manifest(
                "admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy", name, spec={
                    "failurePolicy": "Fail",
                    "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                                            "operations": ["CREATE", "UPDATE"],
                                                            "resources": [plural]}]},
                    "validations": [{"expression": "false", "message": message, "reason": "Invalid"}],
                }))
            await registration.create_validating_admission_policy_binding(_manifest(
                "admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding", name, spec={
                    "policyName": name, "validationActions": ["Deny"],
                    "matchResources": {"namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": namespace}}},
                }))
        await self._until_enforced(plural, namespace, refused=message is not None)

    async def _until_enforced(self, plural: str, namespace: str, *, refused: bool) -> None:
        """Policies reach the admission chain through an informer: probe with a dry-run create until they do."""
        kind, method = _CORE_KINDS[plural]
        probe = {"apiVersion": "v1", "kind": kind, "metadata": {"name": "kubepay-policy-probe"}}
        create = getattr(client.CoreV1Api(self._api), method)
        deadline = time.monotonic() + POLICY_TIMEOUT
        while True:
            try:
                await create(namespace, probe, dry_run="All")
                now_refused = False
            except ApiException as exc:
                if exc.status != 422:
                    raise
                now_refused = True
            if now_refused == refused:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the API server did not {'apply' if refused else 'drop'} the policy on "
                                   f"{plural} in {namespace} within {POLICY_TIMEOUT}s")
            await asyncio.sleep(0.2)

    async def service_account_token(self, namespace: str, name: str, pod: str = "") -> str:
        return await service_account_token(self._api, namespace, name, pod=pod)

    async def allow(self, user: str, verb: str, resource: str, *, group: str, namespace: str) -> None:
        rbac = client.RbacAuthorizationV1Api(self._api)
        name = _name("kubepay-allow", user, verb, group, resource)
        await rbac.create_namespaced_role(namespace, _manifest(
            "rbac.authorization.k8s.io/v1", "Role", name,
            rules=[{"apiGroups": [group], "resources": [resource], "verbs": [verb]}]))
        await rbac.create_namespaced_role_binding(namespace, _manifest(
            "rbac.authorization.k8s.io/v1", "RoleBinding", name,
            roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            subjects=[{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]))

    async def stop_api(self) -> None:
        await self._own_control_plane().stop_apiserver()

    async def start_api(self) -> None:
        await self._own_control_plane().start_apiserver()

    def _own_control_plane(self) -> RealCluster:
        if self._control_plane is None:
            raise RuntimeError("only a control plane the sandbox started (KUBEPAY_E2E_REAL=1) can be stopped, not "
                               "KUBEPAY_E2E_KUBECONFIG's: mark the test @pytest.mark.stops_kube_api")
        return self._control_plane


async def service_account_token(api: client.ApiClient, namespace: str, name: str, pod: str = "", *,
                                create: bool = True, expiration_seconds: int = 3600) -> str:
    """A TokenRequest token of ServiceAccount `namespace/name` (made if missing, unless not `create`); with `pod`,
    bound to a Pod object of that name running as it (made if missing; without a kubelet it stays Pending)."""
    core = client.CoreV1Api(api)
    if create:
        await _create_if_missing(core.create_namespaced_service_account(
            namespace, _manifest("v1", "ServiceAccount", name)))
    request: Any = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                    "spec": {"audiences": [], "expirationSeconds": expiration_seconds}}
    if pod:
        await _create_if_missing(core.create_namespaced_pod(namespace, _manifest(
            "v1", "Pod", pod, spec={"serviceAccountName": name,
                                    "containers": [{"name": "app", "image": "kubepay.invalid/none"}]})))
        bound = await core.read_namespaced_pod(pod, namespace)
        request["spec"]["boundObjectRef"] = {"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": bound.metadata.uid}
    answer = await core.create_namespaced_service_account_token(name, namespace, request)
    return str(answer.status.token)


async def _create_if_missing(creation: Any) -> None:
    try:
        await creation
    except ApiException as exc:
        if exc.status != 409:
            raise


def _manifest(api_version: str, kind: str, name: str, **fields: Any) -> Any:
    """An object as the API takes it (the typed client takes plain dicts too), labelled for finding leftovers."""
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "labels": CREATED_BY}, **fields}


def _name(prefix: str, *parts: str) -> str:
    """A DNS-1123 name unique to `parts` (user names hold colons)."""
    return f"{prefix}-{hashlib.sha256('/'.join(parts).encode()).hexdigest()[:16]}"
