"""The KUBEPAY_E2E_KUBECONFIG path, proven here without a real cluster: a Kubernetes API emulator started by
the test stands in for "a cluster named by a kubeconfig". The Sandbox then starts no emulator of its own,
checks the CRDs, makes each tenant's namespace through the API and deletes it at the end; the controller and
the receiver run as local processes against that cluster (the Stripe fake and the rest as usual)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import yaml

from kubepay_sandbox.kube_emulator import KubeEmulator
from kubepay_sandbox.stack import CRD_DIR, Sandbox, Targets, TargetsError
from tests.conftest import Running
from tests.helpers import Kube, pay, payment_row, wait_for


async def _cluster(crds: list[Path], kubeconfig: Path) -> KubeEmulator:
    """An emulator behind a kubeconfig whose current context is another (dead) cluster: only
    KUBEPAY_E2E_CONTEXT selects the right one."""
    cluster = KubeEmulator(crds)
    await cluster.start()
    config = yaml.safe_load(cluster.write_kubeconfig(kubeconfig).read_text())
    config["contexts"][0]["name"] = "e2e"
    config["clusters"].append({"name": "elsewhere", "cluster": {"server": "http://127.0.0.1:9"}})
    config["contexts"].append({"name": "elsewhere", "context": {"cluster": "elsewhere", "user": "kubepay-sandbox"}})
    config["current-context"] = "elsewhere"
    await asyncio.to_thread(kubeconfig.write_text, yaml.safe_dump(config))
    return cluster


@pytest_asyncio.fixture()
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[KubeEmulator, Targets]]:
    emulator = await _cluster(sorted(CRD_DIR.glob("*.yaml")), tmp_path / "kubeconfig")
    try:
        yield emulator, Targets.from_env({"KUBEPAY_E2E_KUBECONFIG": str(tmp_path / "kubeconfig"),
                                          "KUBEPAY_E2E_CONTEXT": "e2e"})
    finally:
        await emulator.stop()


async def test_a_payment_through_a_cluster_named_by_kubeconfig(cluster: tuple[KubeEmulator, Targets]) -> None:
    emulator, targets = cluster
    async with Sandbox(targets) as box:
        with pytest.raises(RuntimeError, match="needs_emulator"):
            box.kube.stop  # noqa: B018
        with pytest.raises(RuntimeError, match="stops_kube_api"):  # not a control plane the sandbox started
            await box.kube_controls.stop_api()
        tenant = await box.tenant()
        try:
            ns = tenant.namespace
            assert emulator.get("v1/namespaces", None, ns) is not None, "the namespace is made through the API"
            written = yaml.safe_load(await asyncio.to_thread(Path(tenant.env["KUBECONFIG"]).read_text))
            assert written["clusters"] == [{"name": "kubepay-sandbox", "cluster": {"server": emulator.url}}]
            assert written["contexts"][0]["context"]["namespace"] == ns
            assert tenant.env["KUBEPAY_STRIPE_API_BASE"] == box.stripe.url  # Stripe: still the fake

            operator, webhook = tenant.process("operator"), tenant.process("webhook")
            await operator.start()
            await webhook.start()
            kube = await Kube.connect(tenant.env["KUBECONFIG"])
            try:
                pi = await pay(box.stripe_client(), kube, Running(tenant, operator, webhook), "order-9901",
                               {"orderId": "9901", "amount": 1200, "currency": "usd"})
            finally:
                await kube.close()
            assert emulator.get("kubepay.io/v1alpha1/paymentintents", ns, "order-9901") is not None
            uid = pi["metadata"]["uid"]

            async def succeeded_row() -> bool:
                row = await payment_row(tenant.database_url, uid)
                return bool(row and row["status"] == "succeeded")
            await wait_for(succeeded_row, what="the succeeded row")
        finally:
            await tenant.stop_processes()
            await box.release(tenant)
        # The finalizer nobody handles any more is dropped, and the namespace (with the resource) is gone.
        assert emulator.get("v1/namespaces", None, ns) is None
        assert emulator.get("kubepay.io/v1alpha1/paymentintents", ns, "order-9901") is None


@pytest.mark.parametrize("crds", [[], ["paymentintents.kubepay.io.yaml"]], ids=["no-crds", "no-refund-crd"])
async def test_a_cluster_without_the_crds_fails_fast_naming_kubectl_apply(tmp_path: Path, crds: list[str]) -> None:
    emulator = await _cluster([CRD_DIR / name for name in crds], tmp_path / "kubeconfig")
    try:
        box = Sandbox(Targets(kubeconfig=tmp_path / "kubeconfig", context="e2e"))
        with pytest.raises(TargetsError) as raised:
            await box.start()
        message = str(raised.value)
        assert "paymentrefunds.kubepay.io" in message and "install them with `kubectl apply -f crds/`" in message
        assert ("paymentintents.kubepay.io" in message) == (not crds)
        assert "context e2e" in message
        assert not box.workdir.exists(), "nothing is left behind"
    finally:
        await emulator.stop()
