"""A local Stripe API for tests and the sandbox: localstripe in its own process, plus test controls.

localstripe is GPL-3.0, so it never enters this process: :class:`StripeFake` spawns
``python -m kubepay_sandbox.localstripe_launcher`` and talks to it over HTTP on 127.0.0.1.
See the launcher's docstring for what it adds to localstripe (idempotency replay, missing
parameters, Stripe-shaped declines, Stripe's refusals of unsupported currencies and out-of-range amounts,
updates in the wrong status, partial captures, the Events API with refund events, webhook retries, fault
injection, a request log).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any, cast

import aiohttp
import stripe

from kubepay_sandbox.child import HOST, ChildProcess, free_port

__all__ = ["TEST_CARDS", "StripeFake", "StripeFakeError"]

START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
API_KEY = "sk_test_kubepaySandbox0000000000000000"

# Payment method ids and card numbers localstripe (1.15) understands.
TEST_CARDS: dict[str, str] = {
    "success": "pm_card_visa",  # 4242424242424242
    "decline": "pm_card_chargeCustomerFail",  # 4000000000000341: attaches, charge is declined
    "three_d_secure_number": "4000002500003155",  # requires_action; finish via /_authenticate
    "three_d_secure_decline_number": "4000008400001629",  # requires_action, then declined
    "decline_number": "4000000000000341",
}


class StripeFakeError(RuntimeError):
    """The fake could not be started or a control call failed."""


class StripeFake(ChildProcess):
    """localstripe on 127.0.0.1 with Stripe's idempotency, fault injection and a request log.

    Usable as an async context manager. Point code under test at :attr:`url` with :attr:`api_key`;
    use :meth:`client` for a real stripe SDK client bound to it.
    """

    _error = StripeFakeError
    _what = "the Stripe fake"

    def __init__(self) -> None:
        super().__init__()
        self._session: aiohttp.ClientSession | None = None
        self._http_clients: list[stripe.HTTPClient] = []

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def api_key(self) -> str:
        return API_KEY

    # -- lifecycle -----------------------------------------------------------------------------------

    async def _launch(self) -> None:
        """Spawn the launcher with this interpreter and wait (with a deadline) until it answers."""
        self._port = free_port()
        log = await self._open_temp_log("kubepay-localstripe-")
        await self._spawn(
            sys.executable,
            "-m",
            "kubepay_sandbox.localstripe_launcher",
            "--port",
            str(self._port),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        await self._wait_ready(
            self._healthy,
            name="the localstripe launcher",
            late=f"localstripe did not answer within {START_TIMEOUT}s",
            timeout=START_TIMEOUT,
            interval=0.05,
        )

    async def _healthy(self) -> bool:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with self._http().get(
                f"{self.url}/_kubepay/health", timeout=aiohttp.ClientTimeout(total=1)
            ) as response:
                return response.status == 200
        return False

    async def stop(self) -> None:
        """Close handed-out SDK clients' sessions, then terminate the launcher (SIGKILL after 5 s)."""
        clients, self._http_clients = self._http_clients, []
        for http_client in clients:
            with contextlib.suppress(Exception):
                await cast(Any, http_client).close_async()  # untyped in stripe
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        await self._terminate(signal.SIGTERM, STOP_TIMEOUT)
        self._remove_temp_log()

    # -- test controls -------------------------------------------------------------------------------

    async def reset(self) -> None:
        """Forget all Stripe objects, webhooks, idempotency keys, faults and the request log."""
        await self._call("DELETE", "/_config/data")

    async def hold(self, method: str, path_prefix: str, *, before_execution: bool = False) -> None:
        """Run the next matching request but withhold its response until :meth:`release`.

        The object exists in Stripe while the caller still waits: kill the caller now to test a crash
        "between the Stripe call and the status write". The log entry shows ``held: true``.
        With ``before_execution`` the request waits before it runs instead (a slow Stripe: the same
        idempotency key meanwhile gets 409).
        """
        stage = "request" if before_execution else "response"
        await self._call("POST", "/_kubepay/hold", {"method": method, "path_prefix": path_prefix, "stage": stage})

    async def release(self) -> None:
        """Deliver every withheld response and drop holds not triggered yet."""
        await self._call("POST", "/_kubepay/release")

    async def fail(
        self,
        method: str,
        path_prefix: str,
        status: int,
        count: int = 1,
        *,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next ``count`` matching requests with ``status`` and a Stripe-shaped error, unrun.

        429 carries ``Retry-After`` (1 s unless given); 5xx are not stored for idempotency, as in Stripe.
        """
        body: dict[str, Any] = {
            "method": method,
            "path_prefix": path_prefix,
            "status": status,
            "count": count,
        }
        if retry_after is not None:
            body["retry_after"] = retry_after
        await self._call("POST", "/_kubepay/fail", body)

    async def faults(self) -> list[dict[str, Any]]:
        """Pending holds and failures."""
        result: list[dict[str, Any]] = await self._call("GET", "/_kubepay/faults")
        return result

    async def clear_faults(self) -> None:
        """Drop pending failures and holds (withheld responses are delivered)."""
        await self._call("DELETE", "/_kubepay/faults")

    async def requests_log(self) -> list[dict[str, Any]]:
        """Every ``/v1/`` request so far: method, path, idempotency_key, stripe_version, user_agent, replayed,
        status, fault, held."""
        result: list[dict[str, Any]] = await self._call("GET", "/_kubepay/requests")
        return result

    async def clear_requests_log(self) -> None:
        await self._call("DELETE", "/_kubepay/requests")

    async def register_webhook(self, url: str, secret: str, events: Sequence[str] = ()) -> None:
        """Have localstripe POST its events to ``url``, signed with ``secret`` (Stripe's scheme).

        Each event is sent about 1 s after the change; an attempt that gets no answer or no 2xx is
        retried with backoff for about four minutes, as Stripe retries (:meth:`deliveries` lists the
        attempts). The events: the ``payment_intent.*`` events (created, succeeded, payment_failed, canceled,
        amount_capturable_updated), ``charge.refunded`` and ``refund.created``; the same events are
        listed by ``GET /v1/events``. An empty ``events`` means all of them.
        Registering the same URL again replaces the earlier registration.
        """
        webhook_id = "kubepay_" + hashlib.sha256(url.encode()).hexdigest()[:16]
        body: dict[str, Any] = {"url": url, "secret": secret}
        if events:
            body["events"] = list(events)
        await self._call("POST", f"/_config/webhooks/{webhook_id}", body)

    async def deliveries(self) -> list[dict[str, Any]]:
        """Every webhook delivery attempt so far, oldest first: event_id, type, url, attempt (from 1),
        status (None: no answer, see error), error, retry_in (seconds to the next attempt; None: no retry)."""
        result: list[dict[str, Any]] = await self._call("GET", "/_kubepay/deliveries")
        return result

    def client(self, *, max_network_retries: int | None = None) -> stripe.StripeClient:
        """A real stripe v16 client bound to the fake (sync and ``*_async`` calls both work)."""
        http_client = stripe.RequestsClient(async_fallback_client=stripe.AIOHTTPClient())
        self._http_clients.append(http_client)
        return stripe.StripeClient(
            self.api_key,
            base_addresses={"api": self.url},
            http_client=http_client,
            max_network_retries=max_network_retries,
        )

    # -- internals -----------------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise StripeFakeError("the Stripe fake is not running")
        return self._session

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        async with self._http().request(method, self.url + path, json=body) as response:
            text = await response.text()
            if response.status >= 300:
                raise StripeFakeError(f"{method} {path} answered {response.status}: {text}")
            if response.content_type == "application/json":
                return await response.json()
            return text
