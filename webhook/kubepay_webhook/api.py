"""The Go payment-service's HTTP API, cluster-internal, behind the authentication KUBEPAY_API_AUTH chooses.

`POST /payments/intent` makes (idempotently) the order's PaymentIntent resource and waits, bounded, for
the client secret the controller puts in the resource's Secret; `GET /payments/{id}` and
`GET /payments?order_id=` read the PostgreSQL mirror; `POST /payments/{id}/refunds` makes a PaymentRefund.
Amounts are integers in the currency's minor units (`amount`), as in the Go service and Stripe; decimal
strings in the major unit go in `amount_decimal`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from kubernetes_asyncio.client.exceptions import ApiException

from kubepay import metrics
from kubepay.kube.client import Conflict, Invalid, KubeClient, KubeUnavailable, NotFound
from kubepay.mirror.rows import PaymentRow
from kubepay.model import identity, labels
from kubepay.model.money import to_decimal_string
from kubepay.model.phases import Phase, RefundPhase
from kubepay.model.resources import (
    GROUP,
    PAYMENT_INTENTS,
    PAYMENT_REFUNDS,
    VERSION,
    Failure,
    IntentStatus,
    PaymentIntent,
    PaymentRefund,
)
from kubepay.orders import intake
from kubepay.postgres import StoreUnavailable
from kubepay.store import Store
from kubepay_webhook.api_auth import Authenticator
from kubepay_webhook.openapi import document
from kubepay_webhook.serving import KUBE, STORE, add_health_routes

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json"})
REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")
POLL_SECONDS = 0.2
AMOUNT_FIELDS = ("amount", "amount_decimal")  # minor units (integer), or major units (decimal string)
IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{0,255}")  # as Stripe's; it also goes into an annotation


class ApiConfig:
    """What the handlers need besides the clients."""

    def __init__(self, auth_mode: str, namespace: str, wait_seconds: float) -> None:
        self.auth_mode = auth_mode
        self.namespace = namespace
        self.wait_seconds = wait_seconds


CONFIG: web.AppKey[ApiConfig] = web.AppKey("api_config", ApiConfig)
AUTH: web.AppKey[Authenticator] = web.AppKey("api_auth", Authenticator)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def invalid(fields: dict[str, str]) -> web.Response:
    return error(422, "invalid request", fields=fields)


METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@web.middleware
async def timed(request: web.Request, handler: Handler) -> web.StreamResponse:
    """kubepay_api_request_duration_seconds by method, route pattern and status; unknown ones count as `other`."""
    started, status = time.monotonic(), 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "other"
        method = request.method if request.method in METHODS else "other"
        metrics.API_REQUEST_DURATION.labels(method, route, str(status)).observe(time.monotonic() - started)


@web.middleware
async def errors_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authentication on everything but health and the API document; JSON errors; 503 when a backend is down."""
    try:
        if request.path not in PUBLIC_PATHS:
            refusal = await request.app[AUTH].check(request)
            if refusal is not None:
                response = error(refusal.status, refusal.message)
                if refusal.status == 401:
                    response.headers["WWW-Authenticate"] = 'Bearer realm="kubepay"'
                return response
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error(exc.status, exc.reason)
    except (StoreUnavailable, KubeUnavailable) as exc:
        log.warning("%s %s: backend unavailable: %s", request.method, request.path, exc)
        return error(503, "temporarily unavailable, retry later")


async def _json_body(request: web.Request, *, optional: bool = False) -> dict[str, Any] | web.Response:
    raw = await request.read()
    if optional and not raw.strip():
        return {}
    try:
        body = intake.loads(raw)
    except ValueError:
        return invalid({"body": "must be a JSON object"})
    if not isinstance(body, dict):
        return invalid({"body": "must be a JSON object"})
    return body


def _text(body: dict[str, Any], name: str, problems: dict[str, str], *, required: bool, limit: int,
          identifier: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            problems[name] = "is required"
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or (required and not value.strip()):
        problems[name] = "must be a non-empty string"
        return None
    if len(value) > limit:
        problems[name] = f"must be at most {limit} characters"
        return None
    if identifier and (problem := intake.identifier_problem(value)):
        problems[name] = problem
        return None
    return value


def _metadata(body: dict[str, Any], problems: dict[str, str]) -> dict[str, str]:
    value = body.get("metadata")
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        problems["metadata"] = "must be an object of strings"
        return {}
    if len(value) > 30:
        problems["metadata"] = "must have at most 30 keys"
    elif any(len(k) > 40 or len(v) > 500 or k.startswith("kubepay_") for k, v in value.items()):
        problems["metadata"] = "keys are at most 40 characters (not starting kubepay_), values at most 500"
    return dict(value)


def _amount(body: dict[str, Any], currency: str | None, problems: dict[str, str]) -> int | None:
    """`amount` in minor units (an integer, as the Go service and Stripe take it) or `amount_decimal` (a decimal
    string in the major unit); exactly one."""
    given = [name for name in AMOUNT_FIELDS if body.get(name) is not None]
    if len(given) != 1:
        problems["amount"] = ("give amount (an integer in minor units: 1200 is 12.00 USD) or amount_decimal "
                              "(a decimal string such as \"12.00\")" + (", not both" if given else ""))
        return None
    [name] = given
    raw = body[name]
    if name == "amount" and (isinstance(raw, bool) or not isinstance(raw, int)):
        problems[name] = ("must be an integer in the currency's minor units (1200 is 12.00 USD, as in Stripe); "
                          "put a decimal amount such as \"12.00\" in amount_decimal instead")
        return None
    if name == "amount_decimal" and not isinstance(raw, str):
        problems[name] = "must be a decimal string in the currency's major unit, such as \"12.00\""
        return None
    if currency is None:
        return None
    if name == "amount":
        return intake.check_minor(raw, currency, name)
    return intake.parse_amount(raw, currency, name)


def _amounts(name: str, minor: int, currency: str) -> dict[str, Any]:
    """An amount as the API answers it: integer minor units, and the decimal string in `<name>_decimal`."""
    return {name: minor, f"{name}_decimal": to_decimal_string(minor, currency)}


def _parse(step: Callable[[], Any], problems: dict[str, str]) -> Any:
    try:
        return step()
    except intake.OrderInvalid as exc:
        problems.update(exc.fields)
        return None


async def create_intent(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    problems: dict[str, str] = {}
    order_id = _text(body, "order_id", problems, required=True, limit=255, identifier=True)
    currency = _parse(lambda: intake.parse_currency(body.get("currency")), problems)
    amount = _parse(lambda: _amount(body, currency, problems), problems)
    user_id = _text(body, "user_id", problems, required=False, limit=255, identifier=True)
    description = _text(body, "description", problems, required=False, limit=1000)
    metadata = _metadata(body, problems)
    if problems or order_id is None or amount is None or currency is None:
        return invalid(problems)
    order = intake.Order(order_id, amount, currency, user_id, description, metadata)
    config, kube = request.app[CONFIG], request.app[KUBE]
    if paid := await _paid_and_deleted(request, order_id):
        return error(409, f"order {order_id} was paid already (payment {paid.id}) and its PaymentIntent was "
                     "deleted (retention deletes finished payments); it is not charged again", name=paid.resource_name,
                     payment_id=str(paid.id))
    try:
        resource, created = await intake.ensure_payment_intent(kube, config.namespace, order, "api")
    except intake.OrderConflict as exc:
        meta = exc.existing["metadata"]
        return error(409, str(exc), name=meta["name"], payment_id=str(identity.payment_id(meta["uid"])))
    except Invalid as exc:  # the API server refused the resource itself (schema validation)
        return error(422, f"Kubernetes refused the PaymentIntent: {exc}", fields={})
    except ApiException as exc:
        return error(422, f"Kubernetes refused the PaymentIntent: {exc.reason}", fields={})
    meta = resource["metadata"]
    name, payment_id = meta["name"], str(identity.payment_id(meta["uid"]))
    found = await _client_secret(kube, config.namespace, name, time.monotonic() + config.wait_seconds)
    if isinstance(found, str):
        log.debug("payment %s for order %s: %s", payment_id, order_id, "created" if created else "existing")
        return web.json_response(
            {"payment_id": payment_id, "client_secret": found, "name": name, "namespace": config.namespace,
             "order_id": order.order_id, **_amounts("amount", order.amount_minor, order.currency),
             "currency": order.currency.upper()},
            status=201 if created else 200,
        )
    if found is not None:
        return error(422, f"Stripe refused the payment: {found.message or found.code}",
                     name=name, payment_id=payment_id)
    return error(504, f"the client secret did not appear within {config.wait_seconds:g}s; the payment exists, "
                 "repeat the request to get it", name=name, payment_id=payment_id)


async def _client_secret(kube: KubeClient, namespace: str, name: str, deadline: float) -> str | Failure | None:
    """The client secret once the controller wrote it; the failure if Stripe refused; None at the deadline."""
    while True:
        try:
            status = PaymentIntent.parse(await kube.get_custom(PAYMENT_INTENTS, namespace, name)).status
        except NotFound:
            status = IntentStatus()
        if status.client_secret_ref:
            secret_name, key = status.client_secret_ref
            try:
                value = (await kube.get_secret(namespace, secret_name)).get(key)
            except NotFound:
                value = None
            if value:
                return value
        elif status.phase is Phase.FAILED and not status.stripe.payment_intent_id:
            return status.failure or Failure()
        if time.monotonic() + POLL_SECONDS > deadline:
            return None
        await asyncio.sleep(POLL_SECONDS)


def payment_json(row: PaymentRow) -> dict[str, Any]:
    """The Go service's field names; amounts in integer minor units, each also as a decimal string (`*_decimal`)."""
    def iso(value: Any) -> str | None:
        return value.isoformat().replace("+00:00", "Z") if value is not None else None

    return {
        "id": str(row.id),
        "order_id": row.order_id,
        "user_id": row.user_id or "",
        **_amounts("amount", row.amount, row.currency),
        "currency": row.currency.upper(),
        "status": row.status,
        "payment_method": row.payment_method or "",
        "provider": "stripe",
        "provider_payment_id": row.provider_payment_id or "",
        **_amounts("amount_received", row.amount_received, row.currency),
        **_amounts("amount_refunded", row.amount_refunded, row.currency),
        "failure_code": row.failure_code or "",
        "failure_reason": row.failure_reason or "",
        "resource": {"namespace": row.resource_namespace, "name": row.resource_name},
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }


async def _row(request: web.Request) -> PaymentRow | None:
    try:
        payment_id = uuid.UUID(request.match_info["id"])
    except ValueError:
        return None
    return await request.app[STORE].rows.get_payment(payment_id)


async def get_payment(request: web.Request) -> web.Response:
    row = await _row(request)
    if row is None:
        return error(404, f"no payment {request.match_info['id']}")
    return web.json_response(payment_json(row))


async def list_payments(request: web.Request) -> web.Response:
    order_id = request.query.get("order_id", "")
    if not order_id:
        return invalid({"order_id": "is required (GET /payments?order_id=...)"})
    if problem := intake.identifier_problem(order_id):
        return invalid({"order_id": problem})
    rows = await request.app[STORE].rows.find_by_order(order_id)
    return web.json_response({"payments": [payment_json(row) for row in rows]})


def _refund_json(body: dict[str, Any], row: PaymentRow) -> dict[str, Any]:
    refund = PaymentRefund.parse(body)
    amount = refund.spec.amount  # None: everything still refundable
    return {
        "name": refund.meta.name,
        "namespace": refund.meta.namespace,
        "payment_id": str(row.id),
        "payment_intent_name": refund.spec.payment_intent_name,
        **(_amounts("amount", amount, row.currency) if amount is not None
           else {"amount": None, "amount_decimal": None}),
        "currency": row.currency.upper(),
        "reason": refund.spec.reason,
        "phase": (refund.status.phase or RefundPhase.PENDING).value,
    }


async def _paid_and_deleted(request: web.Request, order_id: str) -> PaymentRow | None:
    """A paid payment of the order whose resource retention deleted: a repeat must not make a new one."""
    for row in await request.app[STORE].rows.find_by_order(order_id):
        if row.paid and row.resource_namespace == request.app[CONFIG].namespace \
                and not await _resource_exists(request.app[KUBE], row):
            return row
    return None


async def _resource_exists(kube: KubeClient, row: PaymentRow) -> bool:
    """The payment's own PaymentIntent is still there (not deleted, nor replaced by another of that name)."""
    try:
        body = await kube.get_custom(PAYMENT_INTENTS, row.resource_namespace, row.resource_name)
    except NotFound:
        return False
    return bool(body["metadata"]["uid"] == row.resource_uid)


async def create_refund(request: web.Request) -> web.Response:
    row = await _row(request)
    if row is None:
        return error(404, f"no payment {request.match_info['id']}")
    body = await _json_body(request, optional=True)
    if isinstance(body, web.Response):
        return body
    problems: dict[str, str] = {}
    amount: int | None = None
    if any(body.get(name) is not None for name in AMOUNT_FIELDS):
        amount = _parse(lambda: _amount(body, row.currency, problems), problems)
    reason = body.get("reason")
    if reason is not None and reason not in REFUND_REASONS:
        problems["reason"] = f"must be one of {', '.join(REFUND_REASONS)}"
    key = request.headers.get("Idempotency-Key", "").strip()
    if not IDEMPOTENCY_KEY.fullmatch(key):
        problems["Idempotency-Key"] = "must be at most 255 printable ASCII characters"
    if problems:
        return invalid(problems)
    suffix = hashlib.sha256(key.encode()).hexdigest()[:10] if key else secrets.token_hex(5)
    spec: dict[str, Any] = {"paymentIntentName": row.resource_name}
    if amount is not None:
        spec["amount"] = amount
    if reason is not None:
        spec["reason"] = reason
    parent_labels, parent_annotations = labels.naming(labels.PAYMENT_INTENT, row.resource_name)
    manifest: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PaymentRefund",
        "metadata": {
            "name": f"{row.resource_name}-refund-{suffix}",
            "namespace": row.resource_namespace,
            "labels": {intake.SOURCE_LABEL: "api", **parent_labels},
            "annotations": {**parent_annotations, **({"kubepay.io/idempotency-key": key} if key else {})},
        },
        "spec": spec,
    }
    kube, payment_id = request.app[KUBE], str(row.id)
    if not await _resource_exists(kube, row):
        return error(410, f"payment {payment_id} can no longer be refunded through kubepay: its PaymentIntent "
                     f"{row.resource_namespace}/{row.resource_name} was deleted (retention deletes finished "
                     f"payments); refund Stripe PaymentIntent {row.provider_payment_id} in Stripe")
    try:
        refund = await kube.create_custom(PAYMENT_REFUNDS, row.resource_namespace, manifest)
    except NotFound:
        if not await kube.served(PAYMENT_REFUNDS):
            return error(501, "refunds are not available: the PaymentRefund CRD (paymentrefunds.kubepay.io) "
                         "is not installed in this cluster")
        return error(410, f"the namespace {row.resource_namespace} of payment {payment_id} is gone")
    except Conflict:
        existing = await kube.get_custom(PAYMENT_REFUNDS, row.resource_namespace, manifest["metadata"]["name"])
        if (existing.get("spec") or {}) != spec:
            return error(409, "this Idempotency-Key was used for a different refund",
                         name=existing["metadata"]["name"])
        return web.json_response(_refund_json(existing, row), status=200)
    except Invalid as exc:
        return error(422, f"Kubernetes refused the PaymentRefund: {exc}", fields={})
    except ApiException as exc:
        return error(422, f"Kubernetes refused the PaymentRefund: {exc.reason}", fields={})
    log.debug("refund %s requested for payment %s", manifest["metadata"]["name"], payment_id)
    return web.json_response(_refund_json(refund, row), status=201)


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document(request.app[CONFIG].auth_mode))


def make_api_app(store: Store, kube: KubeClient, config: ApiConfig, auth: Authenticator) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[timed, errors_and_auth])
    app[STORE], app[KUBE], app[CONFIG], app[AUTH] = store, kube, config, auth
    app.router.add_post("/payments/intent", create_intent)
    app.router.add_get("/payments", list_payments)
    app.router.add_get("/payments/{id}", get_payment)
    app.router.add_post("/payments/{id}/refunds", create_refund)
    add_health_routes(app)
    app.router.add_get("/openapi.json", openapi)
    return app
