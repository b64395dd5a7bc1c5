"""stripe-mock, Stripe's own OpenAPI-driven mock, on 127.0.0.1: the contract check for kubepay's Stripe calls.

`make stripe-mock` builds it from its Go module (tools/stripe-mock/go.mod pins the version) into
.cache/stripe-mock/bin. It is stateless: every request is checked against Stripe's OpenAPI spec (unknown
parameters, wrong types, missing required ones are refused with 400) and answered from fixtures, so it
proves request shapes, not behaviour (the Stripe fake, localstripe, does that).
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import subprocess
from pathlib import Path

from kubepay_sandbox.checkout import built
from kubepay_sandbox.child import HOST, ChildProcess, die_with_parent

__all__ = ["API_KEY", "StripeMock", "StripeMockError", "stripe_mock_binary"]

logger = logging.getLogger(__name__)

ENV_BINARY = "KUBEPAY_STRIPE_MOCK"  # a stripe-mock binary, instead of .cache/stripe-mock/bin/stripe-mock
API_KEY = "sk_test_123"  # stripe-mock wants sk_/rk_ + test + one more part; anything else is a 401
START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
_LISTENING = re.compile(rb"Listening for HTTP at address: (\S+):(\d+)")


class StripeMockError(RuntimeError):
    """stripe-mock could not be started; the message carries its log's tail."""


def stripe_mock_binary() -> Path:
    """$KUBEPAY_STRIPE_MOCK, or what `make stripe-mock` built."""
    return built("stripe-mock", ENV_BINARY, StripeMockError)


class StripeMock(ChildProcess):
    """One stripe-mock over plain HTTP on a port the kernel picks (read back from its output)."""

    _error = StripeMockError
    _what = "stripe-mock"

    api_key = API_KEY

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def _launch(self) -> None:
        binary = await asyncio.to_thread(stripe_mock_binary)
        log = await self._open_temp_log("kubepay-stripe-mock-")
        # Both listeners named: with -http-addr alone it still opens HTTPS on every interface, port 12112.
        await self._spawn(
            str(binary), "-http-addr", f"{HOST}:0", "-https-addr", f"{HOST}:0",
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        await self._wait_ready(
            self._listening,
            name="stripe-mock",
            late=f"stripe-mock did not listen within {START_TIMEOUT}s",
            timeout=START_TIMEOUT,
            interval=0.05,
        )
        logger.info("stripe-mock running on %s", self.url)

    async def _listening(self) -> bool:
        assert self._log_path is not None
        found = _LISTENING.search(await asyncio.to_thread(self._log_path.read_bytes))
        if found is not None:
            self._port = int(found.group(2))
        return found is not None

    async def stop(self) -> None:
        await self._terminate(signal.SIGTERM, STOP_TIMEOUT)
        self._remove_temp_log()
