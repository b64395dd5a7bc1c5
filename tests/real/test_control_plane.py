"""The control plane built from Go modules behaves as a cluster's does where kubepay depends on it: the
stamped version, the CRDs Established, RBAC enforced for a service account's TokenRequest token, the
API's name and label limits, owner-reference garbage collection, and an API server that comes back."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from kubepay_sandbox.realcluster import RealCluster
from kubepay_sandbox.stack import CRD_DIR
from tests.helpers import GROUP, PLURAL, VERSION, Kube, wait_for


@pytest_asyncio.fixture(scope="module")
async def cluster() -> AsyncIterator[RealCluster]:
    async with RealCluster(sorted(CRD_DIR.glob("*.yaml"))) as real:
        yield real


@pytest_asyncio.fixture()
async def admin(cluster: RealCluster) -> AsyncIterator[Kube]:
    kube = await Kube.connect(str(cluster.kubeconfig))
    yield kube
    await kube.close()


async def test_version_and_crds(admin: Kube) -> None:
    info = await client.VersionApi(admin.api).get_code()
    assert info.git_version == "v1.37.2" and (info.major, info.minor) == ("1", "37")
    listed = await admin.custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
    assert listed["items"] == []


async def test_rbac_denies_a_service_account_what_no_role_grants(admin: Kube) -> None:
    await admin.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="rbac")))
    await admin.core.create_namespaced_service_account("rbac", client.V1ServiceAccount(
        metadata=client.V1ObjectMeta(name="nobody")))
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600))
    token = await admin.core.create_namespaced_service_account_token("nobody", "rbac", request)
    configuration = copy.copy(admin.api.configuration)
    configuration.api_key = {"BearerToken": f"Bearer {token.status.token}"}
    async with client.ApiClient(configuration) as nobody:
        with pytest.raises(ApiException) as denied:
            await client.CoreV1Api(nobody).list_namespaced_secret("rbac")
    assert denied.value.status == 403
    assert "system:serviceaccount:rbac:nobody" in denied.value.body


async def test_label_values_over_63_characters_are_refused(admin: Kube) -> None:
    with pytest.raises(ApiException) as refused:
        await admin.core.create_namespaced_config_map("default", client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="long-label", labels={"kubepay.io/payment-intent": "x" * 64})))
    assert refused.value.status == 422
    assert "must be no more than 63 bytes" in refused.value.body


async def test_garbage_collection_of_owned_objects(admin: Kube) -> None:
    owner = await admin.core.create_namespaced_config_map("default", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="owner")))
    reference = client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)
    await admin.core.create_namespaced_secret("default", client.V1Secret(
        metadata=client.V1ObjectMeta(name="owned", owner_references=[reference]), string_data={"k": "v"}))
    await admin.core.delete_namespaced_config_map("owner", "default")

    async def owned_gone() -> bool:
        try:
            await admin.core.read_namespaced_secret("owned", "default")
        except ApiException as exc:
            return exc.status == 404
        return False

    await wait_for(owned_gone, timeout=30, what="kube-controller-manager to delete the owned Secret")


async def test_the_api_server_comes_back_with_its_data(cluster: RealCluster, admin: Kube) -> None:
    await admin.core.create_namespaced_config_map("default", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="kept"), data={"k": "v"}))
    await cluster.stop_apiserver()
    with pytest.raises(Exception):  # noqa: B017  connection refused, however the client words it
        await admin.core.read_namespaced_config_map("kept", "default", _request_timeout=2)
    await cluster.start_apiserver()
    assert (await admin.core.read_namespaced_config_map("kept", "default")).data == {"k": "v"}
