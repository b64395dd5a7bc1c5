"""The long-lived clients a controller process shares between its handlers."""

from __future__ import annotations

from dataclasses import dataclass

from kubepay import dependencies
from kubepay.config import Settings
from kubepay.controller.retention import Retention
from kubepay.kube.client import KubeClient
from kubepay.mirror.publisher import Publisher
from kubepay.store import Store
from kubepay.stripe.gateway import StripeGateway


@dataclass
class Runtime:
    settings: Settings
    gateway: StripeGateway
    store: Store
    publisher: Publisher
    kube: KubeClient
    retention: Retention

    @classmethod
    async def start(cls, settings: Settings) -> Runtime:
        """Connect to every dependency, waiting for each one that is down."""
        store = await dependencies.store(settings)
        try:
            publisher = await dependencies.publisher(settings)
        except BaseException:
            await store.close()
            raise
        try:
            kube = await dependencies.kube()
        except BaseException:
            await publisher.stop()
            await store.close()
            raise
        return cls(
            settings=settings,
            gateway=StripeGateway(settings.stripe_secret_key, settings.stripe_api_base, settings.stripe_rate_limit,
                                  settings.stripe_background_share),
            store=store,
            publisher=publisher,
            kube=kube,
            retention=Retention(kube, settings.retain_finished),
        )

    async def close(self) -> None:
        await self.gateway.close()
        await self.publisher.stop()
        await self.store.close()
        await self.kube.close()
