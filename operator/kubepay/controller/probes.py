"""The controller's probes on KUBEPAY_HEALTH_PORT: liveness is the process loop answering (and the controller
task not dead: a restart cures both); readiness is start-up finished and PostgreSQL, Kubernetes and Kafka
answering. kopf's memo carries the state start-up made."""

from __future__ import annotations

import asyncio

import kopf
from aiohttp import web

from kubepay import health

MEMO: web.AppKey[kopf.Memo] = web.AppKey("memo", kopf.Memo)


async def healthz(request: web.Request) -> web.Response:
    controller: asyncio.Task[None] | None = request.app[MEMO].get("controller")
    if controller is not None and controller.done():
        return web.json_response({"status": "stopped", "problems": {"controller": "stopped; see its log"}},
                                 status=500)
    return await health.alive(request)


async def readyz(request: web.Request) -> web.Response:
    memo = request.app[MEMO]
    if not memo.get("started"):
        return health.readiness({"start-up": "connecting to the dependencies (see the log)"})
    rt = memo["runtime"]
    return health.readiness(await health.problems({
        "postgres": rt.store.ping, "kubernetes": rt.kube.ping, "kafka": rt.publisher.ping}))


def app(memo: kopf.Memo) -> web.Application:
    probes = web.Application()
    probes[MEMO] = memo
    probes.router.add_get("/healthz", healthz)
    probes.router.add_get("/readyz", readyz)
    return probes
