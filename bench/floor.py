"""The receiver's floor for `make bench`: the least a webhook delivery must cost, served like the receiver.

One bare aiohttp handler does only what no receiver can skip: kubepay's signature check (which parses the
event), one INSERT into the `payment_events` ledger and one status PATCH of the PaymentIntent, with no read
before it. It connects through the receiver's own start-up (`serving.serve`: the same asyncpg pool and
Kubernetes client) and reads the receiver's settings. `bench.run` starts it as a process next to the
receiver (`python -m bench.floor`) and drives both with the same deliveries.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from kubepay import config, logs
from kubepay.kube.client import KubeClient
from kubepay.model import identity
from kubepay.model.observations import observe_intent
from kubepay.model.resources import PAYMENT_INTENTS
from kubepay.store import Store
from kubepay.stripe import event_shape, signature
from kubepay.stripe.events import intent_id_of
from kubepay_webhook.serving import KUBE, STORE, add_health_routes, serve

SECRET: web.AppKey[str] = web.AppKey("webhook_secret", str)


async def floor(request: web.Request) -> web.Response:
    """Signature, ledger row, status PATCH: a payment_intent event's status fields, written unconditionally."""
    payload = await request.read()
    try:
        event = signature.verify(payload, request.headers.get("Stripe-Signature"), request.app[SECRET])
    except (signature.BadRequest, event_shape.InvalidEvent) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    await request.app[STORE].ledger.record(event, intent_id_of(event))
    intent = event["data"]["object"]
    seen = observe_intent(intent, event["created"], event["id"])
    status = {"phase": seen.phase.value, "amountReceived": seen.amount_received,
              "stripe": {"status": seen.stripe_status, "lastEventId": seen.event_id, "lastEventCreated": seen.created}}
    metadata = intent["metadata"]
    await request.app[KUBE].patch_status(PAYMENT_INTENTS, metadata[identity.METADATA_NAMESPACE],
                                         metadata[identity.METADATA_NAME], status, None)
    return web.json_response({"received": True, "outcome": "applied"})


def make_app(store: Store, kube: KubeClient, webhook_secret: str) -> web.Application:
    app = web.Application()
    app[STORE], app[KUBE], app[SECRET] = store, kube, webhook_secret
    app.router.add_post("/payments/webhook", floor)
    add_health_routes(app)
    return app


def main() -> None:
    settings = config.load(command=config.WEBHOOK)
    logs.setup(settings.log_level)
    asyncio.run(serve(settings, settings.http_port,
                      lambda store, kube: make_app(store, kube, settings.stripe_webhook_secret), "receiver floor"))


if __name__ == "__main__":
    main()
