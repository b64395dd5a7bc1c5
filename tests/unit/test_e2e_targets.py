"""KUBEPAY_E2E_KUBECONFIG / _CONTEXT / _STRIPE_KEY / _REAL: which real things the e2e suite uses, and the refusals."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import stripe
import yaml

from kubepay_sandbox.kube_emulator import KubeEmulator
from kubepay_sandbox.stack import Sandbox
from kubepay_sandbox.stripe_fake import StripeFake
from kubepay_sandbox.targets import Targets, TargetsError, tenant_kubeconfig


def _kubeconfig(path: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "laptop",
        "clusters": [{"name": "kind", "cluster": {"server": "https://127.0.0.1:6443",
                                                  "certificate-authority": "ca.crt"}},
                     {"name": "prod", "cluster": {"server": "https://prod.example"}}],
        "users": [{"name": "kind-admin", "user": {"client-certificate": "certs/admin.crt",
                                                  "client-key": "/abs/admin.key"}},
                  {"name": "prod-admin", "user": {"token": "secret"}}],
        "contexts": [{"name": "kind-kubepay", "context": {"cluster": "kind", "user": "kind-admin"}},
                     {"name": "laptop", "context": {"cluster": "prod", "user": "prod-admin", "namespace": "x"}}],
    }))
    return path


def test_nothing_configured_means_the_emulator_and_the_fake() -> None:
    targets = Targets.from_env({})
    assert targets == Targets()
    assert not targets.real_kube and not targets.real_stripe
    assert targets.describe() == "Kubernetes: the API emulator; Stripe: the Stripe fake"


def test_a_cluster_and_stripe_test_mode_are_selected(tmp_path: Path) -> None:
    kubeconfig = _kubeconfig(tmp_path / "config")
    targets = Targets.from_env({"KUBEPAY_E2E_KUBECONFIG": str(kubeconfig), "KUBEPAY_E2E_CONTEXT": "kind-kubepay",
                                "KUBEPAY_E2E_STRIPE_KEY": "sk_test_abc"})
    assert (targets.kubeconfig, targets.context, targets.stripe_key) == (kubeconfig, "kind-kubepay", "sk_test_abc")
    assert targets.real_kube and targets.real_stripe
    assert targets.describe() == f"Kubernetes: context kind-kubepay of {kubeconfig}; Stripe: Stripe test mode"


@pytest.mark.parametrize("key", ["sk_live_abc", "rk_test_abc", "pk_test_abc", "whsec_abc"])
def test_anything_but_a_test_secret_key_is_refused_without_echoing_it(key: str) -> None:
    with pytest.raises(TargetsError) as raised:
        Targets.from_env({"KUBEPAY_E2E_STRIPE_KEY": key})
    assert "KUBEPAY_E2E_STRIPE_KEY" in str(raised.value) and "sk_test_" in str(raised.value)
    assert key not in str(raised.value)


def test_real_parts_are_a_local_control_plane_and_apache_kafka(tmp_path: Path) -> None:
    targets = Targets.from_env({"KUBEPAY_E2E_REAL": "1"})
    assert targets.real_parts and targets.real_kube and not targets.real_stripe
    assert targets.describe() == "Kubernetes: a local control plane and Apache Kafka; Stripe: the Stripe fake"
    assert not Targets.from_env({"KUBEPAY_E2E_REAL": "0"}).real_parts
    with pytest.raises(TargetsError, match="KUBEPAY_E2E_REAL must be 1 or 0, not 'yes'"):
        Targets.from_env({"KUBEPAY_E2E_REAL": "yes"})
    with pytest.raises(TargetsError, match="KUBEPAY_E2E_REAL=1 starts a control plane; KUBEPAY_E2E_KUBECONFIG"):
        Targets.from_env({"KUBEPAY_E2E_REAL": "1", "KUBEPAY_E2E_KUBECONFIG": str(_kubeconfig(tmp_path / "c"))})


def test_unusable_cluster_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TargetsError, match="KUBEPAY_E2E_CONTEXT is set but KUBEPAY_E2E_KUBECONFIG is not"):
        Targets.from_env({"KUBEPAY_E2E_CONTEXT": "kind-kubepay"})
    with pytest.raises(TargetsError, match="KUBEPAY_E2E_KUBECONFIG: no such file"):
        Targets.from_env({"KUBEPAY_E2E_KUBECONFIG": str(tmp_path / "missing")})


def test_the_tenant_kubeconfig_is_the_context_with_the_tenant_namespace(tmp_path: Path) -> None:
    source = _kubeconfig(tmp_path / "config")
    written = yaml.safe_load(tenant_kubeconfig(source, "kind-kubepay", "kubepay-e2e-t1", tmp_path / "t1" / "kc")
                             .read_text())
    assert written["current-context"] == "kind-kubepay"
    assert written["contexts"] == [{"name": "kind-kubepay", "context": {
        "cluster": "kind", "user": "kind-admin", "namespace": "kubepay-e2e-t1"}}]
    [cluster], [user] = written["clusters"], written["users"]  # nothing of the other context
    assert cluster["cluster"] == {"server": "https://127.0.0.1:6443", "certificate-authority": str(tmp_path / "ca.crt")}
    assert user["user"] == {"client-certificate": str(tmp_path / "certs" / "admin.crt"), "client-key": "/abs/admin.key"}
    # Without a context: the file's current-context.
    current = yaml.safe_load(tenant_kubeconfig(source, None, "n", tmp_path / "kc2").read_text())
    assert current["current-context"] == "laptop" and current["contexts"][0]["context"]["namespace"] == "n"
    with pytest.raises(TargetsError, match=r"no context 'nope'.*contexts: kind-kubepay, laptop"):
        tenant_kubeconfig(source, "nope", "n", tmp_path / "kc3")


def test_stripe_test_mode_has_no_fake_and_no_api_base() -> None:
    box = Sandbox(Targets(stripe_key="sk_test_abc"))
    try:
        assert box.stripe_env() == {"STRIPE_SECRET_KEY": "sk_test_abc"}
        client = box.stripe_client()
        assert isinstance(client, stripe.StripeClient) and box.stripe_client() is client
        with pytest.raises(RuntimeError, match="needs_fake_stripe"):
            box.stripe.requests_log  # noqa: B018
    finally:
        shutil.rmtree(box.workdir)


def test_by_default_the_processes_get_the_fake() -> None:
    box = Sandbox()
    try:
        assert isinstance(box.stripe, StripeFake) and isinstance(box.kube, KubeEmulator)
        assert box.stripe_key == box.stripe.api_key
    finally:
        shutil.rmtree(box.workdir)
