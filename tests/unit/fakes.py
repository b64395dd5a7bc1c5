"""Small in-memory stand-ins for the controller's four dependencies, for handler-level tests.

Each keeps the one behaviour kubepay's logic depends on: the API server's resourceVersion precondition
and JSON merge patches (FakeKube), Stripe's idempotency keys (FakeStripe), the ledger's once-only
record (FakeStore), and the broker's acknowledgements (FakePublisher). Failures are injected per call
with `fail_next`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from kubepay import config
from kubepay.controller import payment_intents, payment_refunds, refusals
from kubepay.controller.pool import Controller
from kubepay.controller.retention import Retention
from kubepay.controller.runtime import Runtime
from kubepay.controller.standby import Standby
from kubepay.kube import k8s_events as k8s_events_module
from kubepay.kube.client import Conflict, KubeClient, NotFound
from kubepay.kube.k8s_events import K8sEvent
from kubepay.kube.watch import Change, Seen
from kubepay.mirror.messages import Message
from kubepay.mirror.publisher import Publisher
from kubepay.mirror.rows import PaymentRow, RefundRow
from kubepay.model.resources import PAYMENT_INTENTS, PAYMENT_REFUNDS
from kubepay.store import Store
from kubepay.stripe.gateway import StripeGateway

_uids = itertools.count(1)
KINDS = {"PaymentIntent": payment_intents.KIND, "PaymentRefund": payment_refunds.KIND}


def merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch, as the API server applies `application/merge-patch+json`."""
    result = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


class Failures:
    """Exceptions to raise from the next calls of a named operation."""

    def __init__(self) -> None:
        self._next: dict[str, list[BaseException]] = {}

    def fail_next(self, operation: str, *errors: BaseException) -> None:
        self._next.setdefault(operation, []).extend(errors)

    def check(self, operation: str) -> None:
        if self._next.get(operation):
            raise self._next[operation].pop(0)


class FakeKube(Failures):
    def __init__(self) -> None:
        super().__init__()
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}
        self.status_writes: list[dict[str, Any]] = []
        self._versions = itertools.count(1)
        self.concurrent_writes = 0  # status writes by "someone else" right before each of ours (409s)

    def add(self, plural: str, spec: dict[str, Any], name: str = "order-1", namespace: str = "shop",
            status: dict[str, Any] | None = None, annotations: dict[str, str] | None = None) -> dict[str, Any]:
        kind = {PAYMENT_INTENTS: "PaymentIntent", PAYMENT_REFUNDS: "PaymentRefund"}[plural]
        body = {
            "apiVersion": "kubepay.io/v1alpha1", "kind": kind,
            "metadata": {"namespace": namespace, "name": name, "uid": f"00000000-0000-4000-8000-{next(_uids):012d}",
                         "generation": 1, "resourceVersion": str(next(self._versions)),
                         "annotations": annotations or {}},
            "spec": spec,
        }
        if status is not None:
            body["status"] = status
        self.objects[(plural, namespace, name)] = body
        return copy.deepcopy(body)

    def body(self, plural: str, namespace: str = "shop", name: str = "order-1") -> dict[str, Any]:
        return copy.deepcopy(self.objects[(plural, namespace, name)])

    def status(self, plural: str, namespace: str = "shop", name: str = "order-1") -> dict[str, Any]:
        return self.body(plural, namespace, name).get("status") or {}

    async def get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        self.check("get_custom")
        if (plural, namespace, name) not in self.objects:
            raise NotFound(f"{plural} {namespace}/{name}")
        return self.body(plural, namespace, name)

    async def patch_status(self, plural: str, namespace: str, name: str, patch: dict[str, Any],
                           resource_version: str | None) -> dict[str, Any]:
        self.check("patch_status")
        key = (plural, namespace, name)
        if key not in self.objects:
            raise NotFound(f"{plural} {namespace}/{name}")
        if self.concurrent_writes:
            self.concurrent_writes -= 1
            self.objects[key]["metadata"]["resourceVersion"] = str(next(self._versions))
        current = self.objects[key]
        if resource_version is not None and resource_version != current["metadata"]["resourceVersion"]:
            raise Conflict("the object has been modified")
        updated = merge(current, {"status": patch})
        updated["metadata"]["resourceVersion"] = str(next(self._versions))
        self.objects[key] = updated
        self.status_writes.append(copy.deepcopy(patch))
        return copy.deepcopy(updated)

    async def set_finalizers(self, plural: str, namespace: str, name: str, finalizers: list[str],
                             resource_version: str) -> dict[str, Any]:
        self.check("set_finalizers")
        current = self.objects.get((plural, namespace, name))
        if current is None:
            raise NotFound(f"{plural} {namespace}/{name}")
        if resource_version != current["metadata"]["resourceVersion"]:
            raise Conflict("the object has been modified")
        if not finalizers and current["metadata"].get("deletionTimestamp"):
            del self.objects[(plural, namespace, name)]  # the last finalizer went: the object goes
            return copy.deepcopy(current)
        current["metadata"]["finalizers"] = list(finalizers)
        current["metadata"]["resourceVersion"] = str(next(self._versions))
        return copy.deepcopy(current)

    async def list_custom(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        self.check("list_custom")
        return [copy.deepcopy(body) for (p, ns, _), body in self.objects.items() if (p, ns) == (plural, namespace)]

    async def delete_custom(self, plural: str, namespace: str, name: str, uid: str, resource_version: str) -> None:
        """Deletes at once (as if no finalizer were left): the preconditions as the API server checks them."""
        self.check("delete_custom")
        current = self.objects.get((plural, namespace, name))
        if current is None:
            raise NotFound(f"{plural} {namespace}/{name}")
        if (current["metadata"]["uid"], current["metadata"]["resourceVersion"]) != (uid, resource_version):
            raise Conflict("the object has been modified")
        del self.objects[(plural, namespace, name)]

    async def apply_secret(self, namespace: str, name: str, data: dict[str, str], owner: dict[str, Any],
                           labels: dict[str, str], annotations: dict[str, str]) -> None:
        self.check("apply_secret")
        self.secrets.setdefault((namespace, name), dict(data))

    async def get_secret(self, namespace: str, name: str) -> dict[str, str]:
        if (namespace, name) not in self.secrets:
            raise NotFound(name)
        return dict(self.secrets[(namespace, name)])


class FakeStripe(Failures):
    """Stripe's PaymentIntents and Refunds, with idempotency keys: a repeated key returns the first answer."""

    def __init__(self) -> None:
        super().__init__()
        self.intents: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.background_reads = 0  # reads made in the background share of the Stripe budget
        self._answers: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)

    def _keyed(self, key: str, make: Any) -> dict[str, Any]:
        if key not in self._answers:
            self._answers[key] = make()
        return copy.deepcopy(self._answers[key])

    def set_intent(self, intent_id: str, **fields: Any) -> None:
        self.intents[intent_id].update(fields)

    async def create_intent(self, params: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        self.calls.append("create_intent")
        self.check("create_intent")

        def make() -> dict[str, Any]:
            intent_id = f"pi_{next(self._ids)}"
            self.intents[intent_id] = {
                "id": intent_id, "object": "payment_intent", "amount": params["amount"],
                "currency": params["currency"], "status": "requires_payment_method", "amount_received": 0,
                "client_secret": f"{intent_id}_secret_x", "metadata": dict(params["metadata"]), "livemode": False,
                "created": 1_700_000_000,
            }
            return self.intents[intent_id]

        return self._keyed(idempotency_key, make)

    async def retrieve_intent(self, intent_id: str, background: bool = False) -> dict[str, Any]:
        self.calls.append("retrieve_intent")
        self.background_reads += background
        self.check("retrieve_intent")
        return copy.deepcopy(self.intents[intent_id])

    async def update_intent(self, intent_id: str, params: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        self.calls.append("update_intent")
        self.check("update_intent")
        self.intents[intent_id].update(params)
        return copy.deepcopy(self.intents[intent_id])

    async def capture_intent(self, intent_id: str, amount: int | None, idempotency_key: str) -> dict[str, Any]:
        self.calls.append("capture_intent")
        intent = self.intents[intent_id]
        intent.update(status="succeeded", amount_received=amount or intent["amount"])
        return copy.deepcopy(intent)

    async def cancel_intent(self, intent_id: str, idempotency_key: str) -> dict[str, Any]:
        self.calls.append("cancel_intent")
        self.check("cancel_intent")
        self.intents[intent_id]["status"] = "canceled"
        return copy.deepcopy(self.intents[intent_id])

    async def create_refund(self, params: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        self.calls.append("create_refund")
        self.check("create_refund")

        def make() -> dict[str, Any]:
            refund_id = f"re_{next(self._ids)}"
            self.refunds[refund_id] = {
                "id": refund_id, "object": "refund", "amount": params["amount"], "currency": "usd",
                "payment_intent": params["payment_intent"], "status": "succeeded",
                "metadata": dict(params["metadata"]), "created": 1_700_000_100,
            }
            return self.refunds[refund_id]

        return self._keyed(idempotency_key, make)

    async def retrieve_refund(self, refund_id: str, background: bool = False) -> dict[str, Any]:
        self.calls.append("retrieve_refund")
        self.background_reads += background
        return copy.deepcopy(self.refunds[refund_id])


class FakeRows(Failures):
    def __init__(self) -> None:
        super().__init__()
        self.payments: dict[str, PaymentRow] = {}
        self.refunds: dict[str, RefundRow] = {}

    async def upsert(self, row: PaymentRow | RefundRow) -> None:
        self.check("upsert")
        if isinstance(row, RefundRow):
            self.refunds[str(row.id)] = row
        else:
            self.payments[str(row.id)] = row

    async def find_by_order(self, order_id: str) -> list[PaymentRow]:
        self.check("find_by_order")
        return [row for row in self.payments.values() if row.order_id == order_id]

    async def find_resource_by_intent(self, provider_payment_id: str) -> tuple[str, str, str] | None:
        for row in self.payments.values():
            if row.provider_payment_id == provider_payment_id:
                return row.resource_namespace, row.resource_name, row.resource_uid
        return None


@dataclass
class LedgerEntry:
    event: dict[str, Any]
    processed: bool = False
    outcome: str | None = None


class FakeLedger(Failures):
    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[str, LedgerEntry] = {}

    async def record(self, event: dict[str, Any], provider_payment_id: str | None) -> bool:
        self.check("record")
        if event["id"] in self.entries:
            return not self.entries[event["id"]].processed
        self.entries[event["id"]] = LedgerEntry(event)
        return True

    async def mark_processed(self, event_id: str, outcome: str) -> None:
        entry = self.entries[event_id]
        entry.processed = True
        if entry.outcome != "applied":
            entry.outcome = outcome


@dataclass
class FakeStore:
    rows: FakeRows = field(default_factory=FakeRows)
    ledger: FakeLedger = field(default_factory=FakeLedger)


class FakePublisher(Failures):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[Message] = []

    async def publish(self, messages: list[Message]) -> None:
        self.check("publish")
        self.sent.extend(messages)

    def topics(self) -> list[str]:
        return [m.topic for m in self.sent]


@dataclass
class World:
    """A controller's runtime made of fakes, and the fakes themselves for assertions."""

    kube: FakeKube = field(default_factory=FakeKube)
    stripe: FakeStripe = field(default_factory=FakeStripe)
    store: FakeStore = field(default_factory=FakeStore)
    publisher: FakePublisher = field(default_factory=FakePublisher)

    env: dict[str, str] = field(default_factory=dict)  # more controller settings

    @functools.cached_property
    def runtime(self) -> Runtime:
        settings = config.load({"DATABASE_URL": "postgresql://kubepay@127.0.0.1/kubepay",
                                "KAFKA_BROKER_URL": "127.0.0.1:9092", "STRIPE_SECRET_KEY": "sk_test_unit", **self.env})
        kube = cast(KubeClient, self.kube)
        return Runtime(settings=settings, gateway=cast(StripeGateway, self.stripe), store=cast(Store, self.store),
                       publisher=cast(Publisher, self.publisher), kube=kube,
                       retention=Retention(kube, settings.retain_finished))


class Posted:
    """The k8s events posted so far, in order."""

    def __init__(self) -> None:
        self.all: list[K8sEvent] = []

    def reasons(self) -> list[str]:
        return [event.reason for event in self.all]


@contextlib.contextmanager
def k8s_events() -> Iterator[Posted]:
    """Collect the k8s events handlers post (the controller's poster task would post them)."""
    posted = Posted()
    before = k8s_events_module.capture(posted.all.append)
    try:
        yield posted
    finally:
        k8s_events_module.capture(before)


async def create(world: World, body: dict[str, Any], retry: int = 0) -> None:
    """The creation handler of the body's kind, with the controller's error policy (Retry, GiveUp)."""
    kind = KINDS[body["kind"]]
    await refusals.guarded(kind.create(world.runtime, body, kind.parse(body), retry), world.runtime.kube,
                           kind.plural, body, retry)


def controller(world: World) -> Controller:
    """The controller without watches and workers: tests feed it watch events and handle what is due."""
    return Controller(world.runtime, list(KINDS.values()), Standby(None, None, None, "unit", 0))


async def changed(ctrl: Controller, body: dict[str, Any], seen: Seen = Seen.MODIFIED) -> None:
    """One watch event, and whatever it makes due handled."""
    ctrl.seen(KINDS[body["kind"]].plural, Change(seen, body))
    await ctrl.handle_due()
