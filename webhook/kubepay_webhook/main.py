"""`kubepay webhook`: run the Stripe webhook receiver until SIGTERM."""

from __future__ import annotations

from kubepay.config import WEBHOOK, Settings
from kubepay_webhook.app import make_app
from kubepay_webhook.serving import serve as serve_app


async def serve(settings: Settings) -> None:
    await serve_app(settings, WEBHOOK, settings.http_port,
                    lambda store, kube: make_app(store, kube, settings.stripe_webhook_secret, settings.namespace))
