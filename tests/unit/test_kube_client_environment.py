"""The Kubernetes client reads the proxy variables once, at start, not on every API call."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client

from kubepay.kube.client import _environment_read_once

API_SERVER = "https://10.0.0.1:6443"


async def _rest(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], proxy: str | None = None) -> Any:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    configuration = client.Configuration(host=API_SERVER)
    configuration.proxy = proxy
    return _environment_read_once(client.ApiClient(configuration)).rest_client


async def test_the_environment_proxy_is_resolved_once_and_the_session_stops_looking(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rest = await _rest(monkeypatch, {"HTTPS_PROXY": "http://user:pw@proxy.internal:3128"})
    try:
        assert rest.proxy == "http://proxy.internal:3128"
        assert rest.proxy_headers["Proxy-Authorization"].startswith("Basic ")
        assert not rest.pool_manager.trust_env
    finally:
        await rest.close()


async def test_no_proxy_and_a_kubeconfig_proxy_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    bypassed = await _rest(monkeypatch, {"HTTPS_PROXY": "http://proxy.internal:3128", "NO_PROXY": "10.0.0.1"})
    configured = await _rest(monkeypatch, {"HTTPS_PROXY": "http://proxy.internal:3128"}, "http://kubeconfig:8080")
    try:
        assert bypassed.proxy is None
        assert configured.proxy == "http://kubeconfig:8080"
    finally:
        await bypassed.close()
        await configured.close()
