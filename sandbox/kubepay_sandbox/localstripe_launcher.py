"""Run localstripe on 127.0.0.1 with the Stripe behaviour a payments controller relies on.

localstripe is GPL-3.0: this module is the only kubepay module that imports it, and it only ever
runs as its own process (``python -m kubepay_sandbox.localstripe_launcher --port N``), started by
:class:`kubepay_sandbox.stripe_fake.StripeFake`. What it adds to localstripe:

* Idempotency-Key replay as Stripe documents it (localstripe ignores the header): completed
  responses, 4xx included, are replayed with ``Idempotent-Replayed: true``; the same key with other
  parameters is a 400 ``idempotency_error``; the same key while the first request runs is a 409.
* Parameters localstripe rejects with "400 Unexpected ...": PaymentIntent ``description`` (stored,
  returned, updatable), ``automatic_payment_methods`` (stored), ``return_url`` and
  ``receipt_email``/``statement_descriptor``/``setup_future_usage`` (accepted, ignored); confirm
  with ``payment_method`` (localstripe answers 500) and ``return_url``; cancel with
  ``cancellation_reason`` (stored with ``canceled_at``); refund ``reason`` (stored) and the
  over-refund check. PaymentIntents also get ``amount_received`` and ``amount_capturable``.
  These are patched on localstripe's classes and routes, because they must live on the objects.
* Declines look like Stripe's: type ``card_error``, a ``decline_code``, the PaymentIntent in the
  error, and the same in ``last_payment_error``.
* PaymentIntent create and update refuse what Stripe refuses, with Stripe's 400 bodies (localstripe
  accepts any currency string and any positive amount): an unsupported currency (``param:
  currency``, "Invalid currency: xyz. Stripe currently supports these currencies: usd, ..."), an
  amount below the currency's minimum charge (``amount_too_small``) or above 99,999,999 minor units
  (``amount_too_large``), an amount below 1 or not an integer (``parameter_invalid_integer``) and a
  missing or empty amount/currency (``parameter_missing``/``parameter_invalid_empty``). Nothing is
  created. The currency is stored lowercased, as Stripe does.
* PaymentIntent update of anything but ``metadata``/``description``/``receipt_email`` outside
  requires_payment_method/requires_confirmation/requires_action is a 400 ``payment_intent_unexpected_state``.
* Captures as in current API versions: ``amount_to_capture`` <= ``amount_capturable`` (else 400
  ``amount_too_large``), only in requires_capture; ``amount_received`` and the charge's ``amount_captured`` are
  the captured amount, the rest is released (no refund, ``amount_refunded`` stays 0) and refunds are limited to
  the captured amount (a refund without ``amount`` refunds what is left of it). Charges get ``amount_captured``;
  ``refunded`` is true once the captured amount went back.
* ``latest_charge`` is an id unless expanded (``expand[]=latest_charge``), in responses and in events.
* Events (``GET /v1/events`` and registered webhooks): localstripe's ``payment_intent.succeeded`` and
  ``payment_intent.payment_failed`` plus ``payment_intent.created``, ``payment_intent.canceled``,
  ``payment_intent.amount_capturable_updated``, ``payment_intent.payment_failed`` after a failed 3-D Secure
  authentication, ``charge.refunded`` and ``refund.created`` (refunds carry ``payment_intent`` even when made by
  charge id). Listed newest first as in Stripe, with ``starting_after`` paging to older events, ``type`` (with a
  ``*`` wildcard) or ``types[]``, ``created`` ranges and ``limit`` 1..100.
* Webhook deliveries as Stripe makes them: each attempt signed at the time it is sent (``t=`` in
  ``Stripe-Signature``), and an attempt that gets no answer or no 2xx retried with backoff (see
  ``RETRY_DELAYS``), so a receiver that starts late or answers 503 still gets the event. Every attempt is
  logged (``GET /_kubepay/deliveries``). localstripe sends each event once, signed with its ``created``.
* Fault controls and a request log on private routes under ``/_kubepay/`` (not Stripe's API).
* No disk persistence (localstripe shares /tmp/localstripe.pickle between runs otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

import aiohttp
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CONTROL_PREFIX = "/_kubepay/"

# ---------------------------------------------------------------------------------------------------
# Fault injection, request log and idempotency state (all in memory, cleared by a reset)
# ---------------------------------------------------------------------------------------------------


@dataclass
class Hold:
    """Withhold the next matching request until ``release``: its response after it ran
    (``stage="response"``), or the request before it runs (``stage="request"``, a slow Stripe)."""

    method: str
    path_prefix: str
    stage: str = "response"
    triggered: bool = False
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "hold",
            "method": self.method,
            "path_prefix": self.path_prefix,
            "stage": self.stage,
            "triggered": self.triggered,
        }


@dataclass
class Failure:
    """Answer the next ``remaining`` matching requests with ``status`` without running them."""

    method: str
    path_prefix: str
    status: int
    remaining: int
    retry_after: float | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "fail",
            "method": self.method,
            "path_prefix": self.path_prefix,
            "status": self.status,
            "remaining": self.remaining,
            "retry_after": self.retry_after,
        }


@dataclass
class Stored:
    """A finished request under one idempotency key: what to replay and what it was for."""

    fingerprint: str
    status: int | None = None  # None while the first request is still in flight
    body: bytes = b""
    content_type: str = "application/json"


@dataclass
class State:
    holds: list[Hold] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)  # webhook delivery attempts
    idempotency: dict[tuple[str, str], Stored] = field(default_factory=dict)

    def release(self) -> None:
        for hold in self.holds:
            hold.released.set()
        self.holds.clear()

    def clear(self) -> None:
        self.release()
        self.failures.clear()
        self.log.clear()
        self.deliveries.clear()
        self.idempotency.clear()

    def take_failure(self, method: str, path: str) -> Failure | None:
        for failure in self.failures:
            if _matches(failure.method, failure.path_prefix, method, path):
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self.failures.remove(failure)
                return failure
        return None

    def take_hold(self, method: str, path: str, stage: str) -> Hold | None:
        for hold in self.holds:
            if hold.stage == stage and not hold.triggered and _matches(hold.method, hold.path_prefix, method, path):
                hold.triggered = True
                return hold
        return None


STATE = State()


def _matches(rule_method: str, prefix: str, method: str, path: str) -> bool:
    return rule_method in ("*", method.upper()) and path.startswith(prefix)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers, dumps=lambda value: json.dumps(value, indent=2))


def _stripe_error(status: int, error: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return _json({"error": error}, status=status, headers=headers)


def _fault_response(failure: Failure) -> web.Response:
    headers: dict[str, str] = {}
    if failure.status == 429:
        error = {
            "type": "invalid_request_error",
            "code": "rate_limit",
            "message": "Too many requests hit the API too quickly. (injected by kubepay sandbox)",
        }
        headers["Retry-After"] = _number(failure.retry_after if failure.retry_after is not None else 1)
    elif failure.status >= 500:
        error = {
            "type": "api_error",
            "message": f"An error occurred with our connection to Stripe. (injected {failure.status})",
        }
        if failure.retry_after is not None:
            headers["Retry-After"] = _number(failure.retry_after)
    else:
        error = {"type": "invalid_request_error", "message": f"Injected failure {failure.status}."}
    return _stripe_error(failure.status, error, headers)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _api_key(request: web.Request) -> str:
    """The secret key the request authenticates with (Bearer or Basic), which scopes idempotency keys."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme == "Basic":
        with contextlib.suppress(ValueError):
            return base64.b64decode(credentials).decode().split(":")[0]
    return credentials


async def _fingerprint(request: web.Request) -> str:
    """Path plus parameters, order-insensitive, so a retry with the same params matches."""
    raw = await request.read()  # cached by aiohttp: localstripe's handler reads it again
    if request.content_type == "application/json" and raw:
        try:
            params: Any = json.loads(raw)
        except ValueError:
            params = raw.decode(errors="replace")
    else:
        params = sorted(urllib.parse.parse_qsl(raw.decode(errors="replace"), keep_blank_values=True))
    canonical = json.dumps([request.path, params], sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def _idempotent(request: web.Request, handler: Handler, key: str) -> tuple[web.StreamResponse, bool]:
    """Run or replay a POST under its Idempotency-Key; returns (response, replayed)."""
    scope = (_api_key(request), key)
    fingerprint = await _fingerprint(request)
    stored = STATE.idempotency.get(scope)
    if stored is not None:
        if stored.fingerprint != fingerprint:
            return _stripe_error(
                400,
                {
                    "type": "idempotency_error",
                    "message": (
                        "Keys for idempotent requests can only be used with the same parameters they were "
                        f"first used with. Try using a key other than '{key}' if you meant to execute a "
                        "different request."
                    ),
                },
            ), False
        if stored.status is None:
            return _stripe_error(
                409,
                {
                    "type": "idempotency_error",
                    "code": "idempotency_key_in_use",
                    "message": (
                        "There is currently another in-progress request using this Stripe Idempotency Key "
                        f"(that probably means you submitted twice, and the other request is still going "
                        f"through): '{key}'. Please try again later."
                    ),
                },
            ), False
        replay = web.Response(status=stored.status, body=stored.body, content_type=stored.content_type)
        replay.headers["Idempotent-Replayed"] = "true"
        return replay, True

    entry = Stored(fingerprint=fingerprint)
    STATE.idempotency[scope] = entry
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    except BaseException:
        STATE.idempotency.pop(scope, None)  # crashed (a 500): not stored, a retry runs again
        raise
    if response.status >= 500 or not isinstance(response, web.Response):
        STATE.idempotency.pop(scope, None)
    elif STATE.idempotency.get(scope) is entry:  # not wiped by a reset meanwhile
        entry.status = response.status
        entry.body = bytes(response.body) if isinstance(response.body, bytes | bytearray) else b""
        entry.content_type = response.content_type
    if isinstance(response, web.HTTPException):
        raise response
    return response, False


@web.middleware
async def kubepay_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost middleware: control routes, request log, faults, idempotency, holds."""
    if request.path.startswith(CONTROL_PREFIX):
        return await _control(request)
    if request.method == "DELETE" and request.path == "/_config/data":
        STATE.clear()
        _clear_webhooks()
        return await handler(request)
    if not request.path.startswith("/v1/"):
        return await handler(request)

    key = request.headers.get("Idempotency-Key")
    entry: dict[str, Any] = {
        "method": request.method,
        "path": request.path,
        "idempotency_key": key,
        "stripe_version": request.headers.get("Stripe-Version"),
        "user_agent": request.headers.get("User-Agent"),
        "replayed": False,
        "status": None,
        "fault": False,
        "held": False,
        "time": time.time(),
    }
    STATE.log.append(entry)

    failure = STATE.take_failure(request.method, request.path)
    if failure is not None:
        entry["fault"] = True
        entry["status"] = failure.status
        return _fault_response(failure)

    async def execute(request: web.Request) -> web.StreamResponse:
        before = STATE.take_hold(request.method, request.path, "request")
        if before is not None:
            entry["held"] = True
            await before.released.wait()
        return await handler(request)

    try:
        if request.method == "POST" and key:
            response, replayed = await _idempotent(request, execute, key)
        else:
            response, replayed = await execute(request), False
    except web.HTTPException as exc:  # aiohttp's own 404/405 for routes localstripe lacks
        entry["status"] = exc.status
        raise
    response.headers["Request-Id"] = "req_" + secrets.token_hex(7)
    if key:
        response.headers["Idempotency-Key"] = key
    entry["replayed"] = replayed
    entry["status"] = response.status

    hold = STATE.take_hold(request.method, request.path, "response")
    if hold is not None:
        entry["held"] = True
        await hold.released.wait()
    return response


async def _control(request: web.Request) -> web.StreamResponse:
    """``/_kubepay/...``: fault injection and the request log for tests (never part of Stripe's API)."""
    try:
        return await _control_route(request)
    except (KeyError, TypeError, ValueError) as exc:
        return _json({"error": f"bad control request: {exc!r}"}, status=400)


async def _control_route(request: web.Request) -> web.StreamResponse:
    route = (request.method, request.path.removeprefix(CONTROL_PREFIX).rstrip("/"))
    body: dict[str, Any] = {}
    if request.method == "POST" and request.can_read_body:
        try:
            body = await request.json()
        except ValueError:
            return _json({"error": "body must be JSON"}, status=400)
    if route == ("GET", "health"):
        return _json({"ok": True})
    if route == ("GET", "requests"):
        return _json(STATE.log)
    if route == ("GET", "deliveries"):
        return _json(STATE.deliveries)
    if route == ("DELETE", "requests"):
        STATE.log.clear()
        return _json({"ok": True})
    if route == ("POST", "hold"):
        stage = str(body.get("stage", "response"))
        if stage not in ("request", "response"):
            return _json({"error": "stage must be 'request' or 'response'"}, status=400)
        method = str(body.get("method", "*")).upper()
        STATE.holds.append(Hold(method=method, path_prefix=str(body["path_prefix"]), stage=stage))
        return _json({"ok": True})
    if route == ("POST", "release"):
        STATE.release()
        return _json({"ok": True})
    if route == ("POST", "fail"):
        status = int(body["status"])
        count = int(body.get("count", 1))
        if not 400 <= status <= 599 or count < 1:
            return _json({"error": "status must be 4xx/5xx and count >= 1"}, status=400)
        retry_after = body.get("retry_after")
        STATE.failures.append(
            Failure(
                method=str(body.get("method", "*")).upper(),
                path_prefix=str(body["path_prefix"]),
                status=status,
                remaining=count,
                retry_after=float(retry_after) if retry_after is not None else None,
            )
        )
        return _json({"ok": True})
    if route == ("GET", "faults"):
        return _json([hold.describe() for hold in STATE.holds] + [f.describe() for f in STATE.failures])
    if route == ("DELETE", "faults"):
        STATE.release()
        STATE.failures.clear()
        return _json({"ok": True})
    if route == ("POST", "reset"):
        STATE.clear()
        _clear_webhooks()
        _store().clear()
        return _json({"ok": True})
    return _json({"error": f"no control route {request.method} {request.path}"}, status=404)


# ---------------------------------------------------------------------------------------------------
# localstripe patches (imports are local: importing this module must not import localstripe)
# ---------------------------------------------------------------------------------------------------


def _store() -> Any:
    from localstripe.resources import store

    return store


# Webhook deliveries scheduled and not finished yet (retries included), so a reset can drop them.
_PENDING_DELIVERIES: set[asyncio.Task[None]] = set()

# Seconds before each retry of a delivery that got no answer or no 2xx. Stripe retries with exponential backoff,
# for up to three days in live mode (three times over a few hours in test mode); the sandbox retries sooner and
# gives up after about four minutes, enough for a receiver started late.
RETRY_DELAYS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 60, 60, 60)
DELIVERY_TIMEOUT = 10.0  # an attempt without an answer by then failed


def _schedule_webhook(event: Any) -> None:
    """Replaces localstripe's schedule_webhook: tracked (a reset drops pending deliveries) and retried."""
    task = asyncio.ensure_future(_deliver(event))
    _PENDING_DELIVERIES.add(task)
    task.add_done_callback(_PENDING_DELIVERIES.discard)


async def _deliver(event: Any) -> None:
    """Send ``event`` about 1 s after the change (as localstripe does) to every registered webhook that wants it."""
    from localstripe import webhooks

    payload = json.dumps(event._export(), indent=2, sort_keys=True).encode()  # the object as it is now
    await asyncio.sleep(1)
    wanted = [hook for hook in webhooks._webhooks.values() if hook.events is None or event.type in hook.events]
    await asyncio.gather(*(_deliver_to(hook.url, hook.secret, event, payload) for hook in wanted))


async def _deliver_to(url: str, secret: str, event: Any, payload: bytes) -> None:
    """POST until a 2xx answer or the retries run out, logging every attempt."""
    for attempt, retry_in in enumerate((*RETRY_DELAYS, None), start=1):
        status, error = await _post_signed(url, secret, payload)
        delivered = status is not None and 200 <= status < 300
        STATE.deliveries.append({
            "event_id": event.id, "type": event.type, "url": url, "attempt": attempt, "status": status,
            "error": error, "retry_in": None if delivered else retry_in, "time": time.time(),
        })
        if delivered or retry_in is None:
            return
        await asyncio.sleep(retry_in)


async def _post_signed(url: str, secret: str, payload: bytes) -> tuple[int | None, str | None]:
    """One attempt, signed as Stripe signs: ``t=<now>,v1=HMAC-SHA256(secret, "<now>.<payload>")``.
    Returns the answer's status, or None and why there was none."""
    timestamp = int(time.time())
    signature = hmac.new(secret.encode(), b"%d.%s" % (timestamp, payload), hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json; charset=utf-8", "Stripe-Signature": f"t={timestamp},v1={signature}"}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DELIVERY_TIMEOUT)) as session, \
                session.post(url, data=payload, headers=headers) as response:
            return response.status, None
    except TimeoutError:
        return None, f"no answer within {DELIVERY_TIMEOUT:g} s"
    except aiohttp.ClientError as exc:
        refused = isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, ConnectionRefusedError)
        return None, "connection refused" if refused else str(exc) or type(exc).__name__


def _clear_webhooks() -> None:
    """Forget registrations and cancel pending deliveries: events from before a reset never arrive."""
    from localstripe import webhooks

    webhooks._webhooks.clear()
    for task in list(_PENDING_DELIVERIES):
        task.cancel()


# ---------------------------------------------------------------------------------------------------
# Stripe's currency and amount rules for charges (PaymentIntents)
# ---------------------------------------------------------------------------------------------------

# In the order Stripe lists them in its "Invalid currency" message (usd first, then alphabetical, then
# codes it still accepts for old integrations), as answered by the live API in 2024.
SUPPORTED_CURRENCIES: tuple[str, ...] = (
    "usd", "aed", "afn", "all", "amd", "ang", "aoa", "ars", "aud", "awg", "azn", "bam", "bbd",
    "bdt", "bgn", "bhd", "bif", "bmd", "bnd", "bob", "brl", "bsd", "bwp", "byn", "bzd", "cad",
    "cdf", "chf", "clp", "cny", "cop", "crc", "cve", "czk", "djf", "dkk", "dop", "dzd", "egp",
    "etb", "eur", "fjd", "fkp", "gbp", "gel", "gip", "gmd", "gnf", "gtq", "gyd", "hkd", "hnl",
    "htg", "huf", "idr", "ils", "inr", "isk", "jmd", "jod", "jpy", "kes", "kgs", "khr", "kmf",
    "krw", "kwd", "kyd", "kzt", "lak", "lbp", "lkr", "lrd", "lsl", "mad", "mdl", "mga", "mkd",
    "mmk", "mnt", "mop", "mur", "mvr", "mwk", "mxn", "myr", "mzn", "nad", "ngn", "nio", "nok",
    "npr", "nzd", "omr", "pab", "pen", "pgk", "php", "pkr", "pln", "pyg", "qar", "ron", "rsd",
    "rub", "rwf", "sar", "sbd", "scr", "sek", "sgd", "shp", "sle", "sos", "srd", "std", "szl",
    "thb", "tjs", "tnd", "top", "try", "ttd", "twd", "tzs", "uah", "ugx", "uyu", "uzs", "vnd",
    "vuv", "wst", "xaf", "xcd", "xof", "xpf", "yer", "zar", "zmw", "usdc", "btn", "ghs", "eek",
    "lvl", "svc", "vef", "ltl", "sll", "mro",
)  # fmt: skip
_SUPPORTED = frozenset(SUPPORTED_CURRENCIES)
ZERO_DECIMAL_CURRENCIES = frozenset({
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf",
    "xof", "xpf",
})  # fmt: skip
THREE_DECIMAL_CURRENCIES = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})

# Stripe's documented minimum charge per settlement currency, in minor units. Real Stripe checks the
# amount converted to the account's settlement currency ("Amount must convert to at least 50 cents.
# ...") for other currencies; the fake applies these per currency, and DEFAULT_MINIMUM_CHARGE (50 minor
# units) to every currency not listed. Controllers should key on ``code``, not on the message.
MINIMUM_CHARGE: dict[str, int] = {
    "usd": 50, "aed": 200, "aud": 50, "bgn": 100, "brl": 50, "cad": 50, "chf": 50, "czk": 1500,
    "dkk": 250, "eur": 50, "gbp": 30, "hkd": 400, "huf": 17500, "inr": 50, "jpy": 50, "mxn": 1000,
    "myr": 200, "nok": 300, "nzd": 50, "pln": 200, "ron": 200, "sek": 300, "sgd": 50, "thb": 1000,
}  # fmt: skip
DEFAULT_MINIMUM_CHARGE = 50
MAXIMUM_CHARGE = 99_999_999  # eight digits of minor units, in every currency
_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "inr": "₹", "krw": "₩"}


def format_amount(amount: int, currency: str) -> str:
    """``$0.50``, ``¥50``, ``CHF 0.50``: minor units shown in major units, as Stripe's messages do."""
    exponent = 0 if currency in ZERO_DECIMAL_CURRENCIES else 3 if currency in THREE_DECIMAL_CURRENCIES else 2
    major = f"{Decimal(amount).scaleb(-exponent):,.{exponent}f}"
    symbol = _SYMBOLS.get(currency)
    return f"{symbol}{major}" if symbol else f"{currency.upper()} {major}"


def _refusal(param: str, message: str, code: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"param": param, "message": message}
    if code is not None:
        error["code"] = code
        error["doc_url"] = "https://stripe.com/docs/error-codes/" + code.replace("_", "-")
    return error


def charge_refusal(amount: Any, currency: Any) -> dict[str, Any] | None:
    """The error Stripe answers (400, ``invalid_request_error``) for a PaymentIntent ``amount`` and
    ``currency`` it will not charge, without ``type``; None when both are acceptable.

    ``amount`` is as received (an int from JSON, a string from a form body); ``currency`` any case.
    """
    for param, value in (("amount", amount), ("currency", currency)):
        if value is None:
            return _refusal(param, f"Missing required param: {param}.", "parameter_missing")
        if value == "":
            return _refusal(
                param,
                f"You passed an empty string for '{param}'. We assume empty values are an attempt to unset a "
                f"parameter; however '{param}' cannot be unset. You should remove '{param}' from your request "
                "or supply a non-empty value.",
                "parameter_invalid_empty",
            )
    number = _integer(amount)
    if number is None:
        return _refusal("amount", f"Invalid integer: {amount}", "parameter_invalid_integer")
    if number < 1:
        return _refusal("amount", "This value must be greater than or equal to 1.", "parameter_invalid_integer")
    if not isinstance(currency, str) or currency.lower() not in _SUPPORTED:
        return _refusal(
            "currency",
            f"Invalid currency: {str(currency).lower()}. Stripe currently supports these currencies: "
            + ", ".join(SUPPORTED_CURRENCIES),
        )
    code = currency.lower()
    minimum = MINIMUM_CHARGE.get(code, DEFAULT_MINIMUM_CHARGE)
    if number < minimum:
        return _refusal("amount", f"Amount must be at least {format_amount(minimum, code)} {code}", "amount_too_small")
    if number > MAXIMUM_CHARGE:
        return _refusal(
            "amount", f"Amount must be no more than {format_amount(MAXIMUM_CHARGE, code)}", "amount_too_large"
        )
    return None


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value):
        return int(value)
    return None


# Stripe refuses most PaymentIntent updates outside these statuses; these parameters it takes in any status.
UPDATABLE_STATUSES = ("requires_payment_method", "requires_confirmation", "requires_action")
UPDATABLE_IN_ANY_STATUS = frozenset({"metadata", "description", "receipt_email"})
CANCELLATION_REASONS = {"duplicate", "fraudulent", "requested_by_customer", "abandoned"}
REFUND_REASONS = {"duplicate", "fraudulent", "requested_by_customer"}
DECLINE_CODE = "generic_decline"


def _patch_localstripe() -> None:
    """Close localstripe's gaps on its own classes; see the module docstring for the list."""
    from localstripe import resources
    from localstripe.errors import UserError

    resources.Store.dump_to_disk = lambda self: None
    resources.Store.try_load_from_disk = lambda self: None
    resources.schedule_webhook = _schedule_webhook

    payment_intent: Any = resources.PaymentIntent
    refund: Any = resources.Refund

    original_pi_init = payment_intent.__init__

    def pi_init(
        self: Any,
        *args: Any,
        description: str | None = None,
        automatic_payment_methods: Any = None,
        return_url: str | None = None,
        receipt_email: str | None = None,
        statement_descriptor: str | None = None,
        statement_descriptor_suffix: str | None = None,
        setup_future_usage: str | None = None,
        **kwargs: Any,
    ) -> None:
        if description is not None and not isinstance(description, str):
            raise UserError(400, "Invalid description", {"param": "description"})
        apm = None
        if automatic_payment_methods is not None:
            if not isinstance(automatic_payment_methods, dict) or "enabled" not in automatic_payment_methods:
                raise UserError(400, "Invalid automatic_payment_methods", {"param": "automatic_payment_methods"})
            apm = {"enabled": _boolean(automatic_payment_methods["enabled"])}
            if "allow_redirects" in automatic_payment_methods:
                apm["allow_redirects"] = automatic_payment_methods["allow_redirects"]
        original_pi_init(self, *args, **kwargs)
        self.description = description
        self.automatic_payment_methods = apm
        self.receipt_email = receipt_email
        self.cancellation_reason = None
        self.canceled_at = None

    payment_intent.__init__ = pi_init

    def amount_received(self: Any) -> int:
        charge = self.latest_charge
        return int(charge.amount_captured) if charge is not None else 0

    def amount_capturable(self: Any) -> int:
        return int(self.latest_charge.amount) if self.status == "requires_capture" else 0

    payment_intent.amount_received = property(amount_received)
    payment_intent.amount_capturable = property(amount_capturable)

    original_last_error = payment_intent.last_payment_error

    def last_payment_error(self: Any) -> dict[str, Any] | None:
        error: dict[str, Any] | None = original_last_error.fget(self)
        if error is not None and error.get("code") == "card_declined":
            error = {
                **error,
                "type": "card_error",
                "decline_code": DECLINE_CODE,
                "payment_method": {"id": self.payment_method, "object": "payment_method", "type": "card"},
            }
        elif error is not None:
            error = {**error, "type": "card_error"}
        return error

    payment_intent.last_payment_error = property(last_payment_error)

    original_report_failure = payment_intent._report_failure

    def report_failure(self: Any) -> None:
        try:
            original_report_failure(self)
        except UserError as exc:
            exc.body["error"].update(type="card_error", decline_code=DECLINE_CODE, payment_intent=self._export())
            raise

    payment_intent._report_failure = report_failure

    def refuse(amount: Any, currency: Any) -> tuple[int, str]:
        """Raise Stripe's 400 for an amount/currency it would not charge; else both, normalised."""
        error = charge_refusal(amount, currency)
        if error is not None:
            raise UserError(400, error.pop("message"), error)
        return cast(int, _integer(amount)), str(currency).lower()

    original_create = payment_intent._api_create

    def create(**data: Any) -> Any:
        data["amount"], data["currency"] = refuse(data.get("amount"), data.get("currency"))
        return original_create(**data)  # validated before anything exists: a refusal creates nothing

    payment_intent._api_create = staticmethod(create)

    original_update = payment_intent._api_update

    def update(id: Any = None, **data: Any) -> Any:
        guarded = sorted(key for key in data if key not in UPDATABLE_IN_ANY_STATUS)
        if guarded:
            obj = payment_intent._api_retrieve(id)
            if obj.status not in UPDATABLE_STATUSES:
                raise UserError(
                    400,
                    f"You cannot update this PaymentIntent because it has a status of {obj.status}. You may only "
                    f"update the {', '.join(guarded)} of a PaymentIntent with one of the following statuses: "
                    + ", ".join(UPDATABLE_STATUSES)
                    + ".",
                    {"code": "payment_intent_unexpected_state", "param": guarded[0]},
                )
        if "amount" in data or "currency" in data:
            obj = payment_intent._api_retrieve(id)
            amount, currency = data.get("amount", obj.amount), data.get("currency", obj.currency)
            amount, currency = refuse(amount, currency)
            if "amount" in data:
                data["amount"] = amount
            if "currency" in data:
                data["currency"] = currency
        return original_update(id, **data)

    payment_intent._api_update = staticmethod(update)

    original_confirm = payment_intent._api_confirm

    def confirm(id: Any = None, payment_method: Any = None, return_url: Any = None, **kwargs: Any) -> Any:
        if payment_method is not None:
            if not isinstance(payment_method, str) or not payment_method.startswith(("pm_", "card_", "src_")):
                raise UserError(400, "Invalid payment_method", {"param": "payment_method"})
            obj = payment_intent._api_retrieve(id)
            if obj.status not in ("requires_payment_method", "requires_confirmation"):
                raise UserError(
                    400,
                    f"You cannot confirm this PaymentIntent because it has a status of {obj.status}.",
                    {"code": "payment_intent_unexpected_state"},
                )
            resources.PaymentMethod._api_retrieve(payment_method)  # 404 when unknown
            obj.payment_method = payment_method
            if obj.latest_charge is not None and obj.latest_charge.status == "failed":
                obj.latest_charge = None  # a new attempt after a decline, as Stripe allows
        return original_confirm(id, **kwargs)

    original_cancel = payment_intent._api_cancel

    def cancel(id: Any = None, cancellation_reason: Any = None, **kwargs: Any) -> Any:
        if cancellation_reason is not None and cancellation_reason not in CANCELLATION_REASONS:
            raise UserError(400, "Invalid cancellation_reason", {"param": "cancellation_reason"})
        obj = original_cancel(id, **kwargs)
        obj.cancellation_reason = cancellation_reason
        obj.canceled_at = int(time.time())
        _emit("payment_intent.canceled", obj)
        return obj

    original_refund_init = refund.__init__

    def refund_init(self: Any, *args: Any, reason: Any = None, **kwargs: Any) -> None:
        if reason is not None and reason not in REFUND_REASONS:
            raise UserError(400, "Invalid reason", {"param": "reason"})
        left = _check_refundable(resources, UserError, kwargs)
        if kwargs.get("amount") is None and left is not None:
            kwargs["amount"] = left  # Stripe refunds what is left of the captured amount, not the authorised one
        original_refund_init(self, *args, **kwargs)
        self.reason = reason
        charge = resources.Charge._api_retrieve(self.charge)
        if self.payment_intent is None:
            self.payment_intent = charge.payment_intent  # Stripe fills it in for refunds made by charge id
        _emit("refund.created", self)
        _emit("charge.refunded", charge)

    refund.__init__ = refund_init

    _patch_charge(resources, UserError)
    _patch_events(resources, UserError)

    original_create_charge = payment_intent._create_charge

    def create_charge(self: Any, on_failure_now: Any) -> None:
        original_create_charge(self, on_failure_now)
        if self.status == "requires_capture":
            _emit("payment_intent.amount_capturable_updated", self)

    payment_intent._create_charge = create_charge

    original_authenticate = payment_intent._api_authenticate

    def authenticate(**kwargs: Any) -> Any:
        obj = original_authenticate(**kwargs)
        if obj._authentication_failed:
            _emit("payment_intent.payment_failed", obj)
        return obj

    def capture(id: Any = None, amount_to_capture: Any = None, **kwargs: Any) -> Any:
        if kwargs:
            raise UserError(400, "Unexpected " + ", ".join(kwargs.keys()))
        obj = payment_intent._api_retrieve(id)
        if obj.status != "requires_capture":
            raise UserError(
                400,
                f"This PaymentIntent could not be captured because it has a status of {obj.status}. Only a "
                "PaymentIntent with one of the following statuses may be captured: requires_capture.",
                {"code": "payment_intent_unexpected_state"},
            )
        capturable = int(obj.amount_capturable)
        amount = capturable if amount_to_capture is None else _integer(amount_to_capture)
        if amount is None or amount < 1:
            raise UserError(
                400,
                f"Invalid integer: {amount_to_capture}"
                if amount is None
                else "This value must be greater than or equal to 1.",
                {"code": "parameter_invalid_integer", "param": "amount_to_capture"},
            )
        if amount > capturable:
            raise UserError(
                400,
                f"The amount_to_capture ({amount}) is greater than the amount_capturable ({capturable}) of this "
                "PaymentIntent.",
                {"code": "amount_too_large", "param": "amount_to_capture"},
            )
        obj.latest_charge._capture(amount, on_success=obj._on_success)
        return obj

    original_export = payment_intent._export

    def export(self: Any, expand: Any = None) -> dict[str, Any]:
        exported: dict[str, Any] = original_export(self, expand=expand)
        charge = exported.get("latest_charge")
        paths = expand if isinstance(expand, list) else []
        expanded = any(path == "latest_charge" or str(path).startswith("latest_charge.") for path in paths)
        if isinstance(charge, dict) and not expanded:
            exported["latest_charge"] = charge["id"]  # an id unless expanded, as in Stripe
        return exported

    payment_intent._export = export

    original_created_init = payment_intent.__init__

    def created_init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_created_init(self, *args, **kwargs)
        _emit("payment_intent.created", self)

    payment_intent.__init__ = created_init

    _override_routes(
        {
            "/v1/payment_intents/{id}/confirm": confirm,
            "/v1/payment_intents/{id}/cancel": cancel,
            "/v1/payment_intents/{id}/capture": capture,
            "/v1/payment_intents/{id}/_authenticate": authenticate,
        }
    )


def _emit(event_type: str, obj: Any) -> None:
    """Record a Stripe event (listed by ``GET /v1/events``) and deliver it to registered webhooks ~1 s later."""
    from localstripe import resources

    _schedule_webhook(resources.Event(event_type, obj))


def _patch_charge(resources: Any, user_error: Any) -> None:
    """Captures as in current Stripe API versions: ``amount_captured``; the uncaptured rest is released,
    not refunded (``amount_refunded`` stays 0); ``refunded`` once the captured amount went back."""
    charge: Any = resources.Charge

    def amount_captured(self: Any) -> int:
        if self.status != "succeeded" or not self.captured:
            return 0
        return int(getattr(self, "_kubepay_amount_captured", self.amount))

    def refunded(self: Any) -> bool:
        captured = amount_captured(self)
        return captured > 0 and int(self.amount_refunded) >= captured

    def capture(self: Any, amount: Any, on_success: Callable[[], None] | None = None) -> None:
        number = int(self.amount) if amount is None else _integer(amount)
        if self.captured or self.status != "succeeded":
            raise user_error(400, f"Charge {self.id} has already been captured.", {"code": "charge_already_captured"})
        if number is None or number < 1:
            raise user_error(
                400, f"Invalid integer: {amount}", {"code": "parameter_invalid_integer", "param": "amount"}
            )
        if number > int(self.amount):
            raise user_error(
                400,
                f"The amount to capture ({number}) is greater than the amount authorized ({self.amount}).",
                {"code": "amount_too_large", "param": "amount"},
            )

        def on_success_capture() -> None:
            self.captured = True
            self._kubepay_amount_captured = number
            if self.balance_transaction is not None:
                resources.BalanceTransaction._api_retrieve(self.balance_transaction).amount = number
            if on_success is not None:
                on_success()

        self._trigger_payment(on_success=on_success_capture)

    charge.amount_captured = property(amount_captured)
    charge.refunded = property(refunded)
    charge._capture = capture


def _patch_events(resources: Any, user_error: Any) -> None:
    """``GET /v1/events`` as Stripe lists it: newest first (``starting_after`` pages to older events), ``type``
    with a ``*`` wildcard or ``types[]``, ``created`` ranges and ``limit`` 1..100."""
    event: Any = resources.Event
    original_list = event._api_list_all

    def list_events(
        url: Any,
        type: Any = None,
        types: Any = None,
        limit: Any = None,
        starting_after: Any = None,
        **kwargs: Any,
    ) -> Any:
        number = 10 if limit is None else _integer(limit)
        if number is None or not 1 <= number <= 100:
            raise user_error(
                400,
                "This value must be less than or equal to 100." if number else f"Invalid integer: {limit}",
                {"code": "parameter_invalid_integer", "param": "limit"},
            )
        if type is not None and types is not None:
            raise user_error(400, "You may only specify one of these parameters: type, types.", {"param": "types"})
        patterns = [type] if type is not None else types if isinstance(types, list) else None
        if patterns is not None and not all(isinstance(p, str) for p in patterns):
            raise user_error(400, "Invalid type", {"param": "type"})
        listed = original_list(url, limit=number, **kwargs)
        kept = {id(e) for e in listed._list}  # after localstripe's ``created`` filters
        events = list(reversed(original_list(url, limit=number)._list))  # Stripe lists newest first
        if starting_after is not None:  # a cursor: the events older than that one, filtered or not
            position = next((i for i, e in enumerate(events) if e.id == starting_after), None)
            if position is None:
                raise user_error(404, f"No such event: '{starting_after}'", {"code": "resource_missing"})
            events = events[position + 1 :]
        listed._list = [
            e for e in events if id(e) in kept and (patterns is None or any(_type_matches(p, e.type) for p in patterns))
        ]
        return listed

    event._api_list_all = staticmethod(list_events)


def _type_matches(pattern: str, event_type: str) -> bool:
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern in ("*", event_type)


def _check_refundable(resources: Any, user_error: Any, params: dict[str, Any]) -> int | None:
    """Stripe refuses to refund what was not charged, or more than is left of the captured amount;
    localstripe does not. Returns what is left to refund (None when localstripe's checks apply)."""
    charge_id = params.get("charge")
    pi_id = params.get("payment_intent")
    if pi_id is not None and isinstance(pi_id, str):
        pi = resources.PaymentIntent._api_retrieve(pi_id)
        if pi.latest_charge is None or pi.status not in ("succeeded",):
            if pi.status == "requires_payment_method":
                return None  # localstripe's own message: "Cannot refund a failed payment."
            raise user_error(
                400,
                "This PaymentIntent does not have a successful charge to refund.",
                {"code": "charge_not_refundable", "param": "payment_intent"},
            )
        charge_id = pi.latest_charge.id
    if not isinstance(charge_id, str):
        return None
    charge = resources.Charge._api_retrieve(charge_id)
    if charge.status != "succeeded":
        return None  # localstripe's own message: "Cannot refund a failed payment."
    amount = resources.try_convert_to_int(params.get("amount"))
    left = int(charge.amount_captured) - int(charge.amount_refunded)
    if left <= 0:
        raise user_error(400, f"Charge {charge_id} has already been refunded.", {"code": "charge_already_refunded"})
    if isinstance(amount, int) and amount > left:
        raise user_error(
            400,
            f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left})",
            {"code": "amount_too_large", "param": "amount"},
        )
    return left


def _override_routes(handlers: dict[str, Callable[..., Any]]) -> None:
    """localstripe bound its extra POST routes (confirm, cancel, ...) at import: put ours in its app."""
    from localstripe import server

    app: web.Application = server.app
    overrides = {("POST", url): server.api_extra(func, url) for url, func in handlers.items()}
    for route in app.router.routes():
        info = route.resource.canonical if route.resource is not None else None
        handler = overrides.get((route.method, info or ""))
        if handler is not None:
            route._handler = handler  # aiohttp has no public API to replace a route's handler


def _boolean(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() == "true"
    return bool(value)


def build_app() -> web.Application:
    """localstripe's aiohttp app with the patches applied and our middleware outermost."""
    _patch_localstripe()
    from localstripe import server

    app: web.Application = server.app
    app.middlewares.insert(0, kubepay_middleware)
    return app


async def _watch_parent(parent: int) -> None:
    """Exit when the process that started us is gone, so a killed test run leaves no server behind."""
    while True:
        await asyncio.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    app = build_app()
    parent = os.getppid()

    async def on_startup(_: web.Application) -> None:
        app["kubepay_watchdog"] = asyncio.get_running_loop().create_task(_watch_parent(parent))

    async def on_shutdown(_: web.Application) -> None:
        STATE.release()  # held requests would otherwise keep a graceful shutdown waiting

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        handle_signals=True,
        shutdown_timeout=2.0,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
