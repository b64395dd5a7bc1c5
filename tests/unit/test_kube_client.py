"""The Kubernetes client's HTTP session: no per-request look-ups of proxies and ~/.netrc unless a proxy is set."""

from __future__ import annotations

import pytest
from kubernetes_asyncio import client

from kubepay.kube.client import PROXY_VARIABLES, KubeClient


@pytest.mark.parametrize("proxy", [None, "HTTPS_PROXY", "http_proxy"])
async def test_the_environment_is_read_per_request_only_when_a_proxy_is_set(
        proxy: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    if proxy:
        monkeypatch.setenv(proxy, "http://127.0.0.1:3128")
    kube = KubeClient(client.ApiClient(client.Configuration(host="http://127.0.0.1:6443")))
    try:
        assert kube._api.rest_client.pool_manager.trust_env is (proxy is not None)
    finally:
        await kube.close()
