"""Every kopf registration of the controller, in one place: start-up and clean-up, admission and peering.

kopf does not watch PaymentIntents and PaymentRefunds: its per-object machinery (a task, memo, progress
annotations and patches for each object) cost most of the controller's CPU and memory at scale, so one watch per
kind feeds kubepay's own work queue and worker pool (`controller.pool`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from kubepay import logs, metrics
from kubepay.config import OPERATOR, Settings
from kubepay.controller import admission, backfill, payment_intents, payment_refunds, peering
from kubepay.controller.gauges import Gauges
from kubepay.controller.pool import Controller
from kubepay.controller.runtime import Runtime
from kubepay.controller.standby import Standby
from kubepay.kube import k8s_events
from kubepay.model.resources import GROUP, PAYMENT_INTENTS, PAYMENT_REFUNDS, VERSION
from kubepay.orders import consumer as orders_consumer

log = logging.getLogger(__name__)
TASKS = ("controller", "events", "backfill", "retention", "gauges")


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 15
    settings.networking.request_timeout = 30
    settings.posting.enabled = False  # kubepay posts its own events (`k8s_events.Poster`)
    config: Settings = memo["settings"]
    # One exact namespace needs no namespace scanning (nor the RBAC to list/watch namespaces).
    settings.scanning.disabled = config.namespace is not None
    peering.configure(settings, config)
    if config.admission_port:
        admission.configure_server(settings, config)
    rt = memo["runtime"] = await Runtime.start(config)
    metrics.preset(config.topics.all())
    poster = k8s_events.Poster(rt.kube)
    k8s_events.capture(poster.put)
    memo["events"] = asyncio.create_task(poster.run())
    standby = Standby(rt.kube if config.peering_name else None, config.peering_name, config.namespace,
                      peering.IDENTITY, peering.PRIORITY)
    controller = Controller(rt, [payment_intents.KIND, payment_refunds.KIND], standby)
    memo["gauges"] = asyncio.create_task(Gauges(controller.bodies, rt.store.ledger, rt.publisher,
                                                lambda: standby.is_active, config.stuck_seconds).run())
    memo["controller"] = asyncio.create_task(controller.run())
    memo["controller"].add_done_callback(_stopped)
    # The catch-up may page through days of events: it runs beside the watches, not before them.
    memo["backfill"] = asyncio.create_task(backfill.replay_missed_events(rt))
    memo["retention"] = asyncio.create_task(rt.retention.run())
    if config.orders_consumer_in_operator:
        memo["orders_consumer"] = await orders_consumer.start_background(config, rt.kube)
    memo["started"] = True  # readiness checks the runtime's clients from now on
    logs.started(OPERATOR, config)


def _stopped(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        log.critical("the controller stopped: %s", error, exc_info=error)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    for task in TASKS:
        if task in memo:
            memo[task].cancel()
    if "orders_consumer" in memo:
        await memo["orders_consumer"].stop()
    if "runtime" in memo:
        await memo["runtime"].close()


# --- Admission: only with KUBEPAY_ADMISSION_PORT (kopf refuses to start with admission handlers and no server)

def register_admission() -> None:
    kopf.on.validate(GROUP, VERSION, PAYMENT_REFUNDS, id="validate-paymentrefund",
                     operations=["CREATE"])(admission.validate_refund)
    kopf.on.validate(GROUP, VERSION, PAYMENT_INTENTS, id="validate-paymentintent",
                     operations=["CREATE", "UPDATE"])(admission.validate_intent)
