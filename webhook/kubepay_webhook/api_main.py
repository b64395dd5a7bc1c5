"""`kubepay api`: run the payments HTTP API until SIGTERM (its own Deployment, its own ServiceAccount)."""

from __future__ import annotations

from kubepay.config import API, Settings
from kubepay_webhook.api import ApiConfig, make_api_app
from kubepay_webhook.api_auth import authenticator
from kubepay_webhook.serving import serve as serve_app


async def serve(settings: Settings) -> None:
    config = ApiConfig(settings.api_auth, settings.api_namespace, settings.api_wait_seconds)
    await serve_app(settings, API, settings.api_port,
                    lambda store, kube: make_api_app(store, kube, config, authenticator(settings, kube)))
