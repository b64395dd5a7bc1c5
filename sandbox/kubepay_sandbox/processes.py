"""Run `kubepay operator` / `kubepay webhook` as real child processes, as a cluster would."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import aiohttp


class KubepayProcess:
    """One kubepay subcommand with its own environment and log file; ready when its health URL answers.

    `module` is what `python -m` runs, with `command` as its argument (`make bench` runs its receiver floor so).
    """

    def __init__(self, command: str, env: Mapping[str, str], health_url: str, log_path: Path,
                 module: str = "kubepay") -> None:
        self.command = command
        self._module = module
        self._env = dict(env)
        self._health_url = health_url
        self.log_path = log_path
        self._proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        return dict(self._env)

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self._env['KUBEPAY_METRICS_PORT']}/metrics"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def start(self, ready_timeout: float = 30.0) -> None:
        await self.launch()
        await self.wait_ready(ready_timeout)

    async def launch(self) -> None:
        """Start the process without waiting for it to become healthy (a start during an outage)."""
        self._log = self.log_path.open("ab")
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            self._module,
            self.command,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self._env},
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
        )

    async def healthy(self, session: aiohttp.ClientSession | None = None) -> bool:
        """Whether the health URL answers 200 now."""
        async with contextlib.AsyncExitStack() as stack:
            if session is None:
                session = await stack.enter_async_context(
                    aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)))
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(self._health_url) as response:
                    return response.status == 200
        return False

    async def wait_ready(self, timeout: float) -> None:
        """Until the health URL answers 200; RuntimeError if the process exits, TimeoutError after `timeout`."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while time.monotonic() < deadline:
                assert self._proc is not None
                if self._proc.returncode is not None:
                    raise RuntimeError(
                        f"{self._module} {self.command} exited with {self._proc.returncode}:\n{self.logs()}")
                if await self.healthy(session):
                    return
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{self._module} {self.command} not healthy after {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        return await self._signal(signal.SIGTERM, timeout)

    async def kill(self) -> int | None:
        """SIGKILL: a crash, with no chance to clean up."""
        return await self._signal(signal.SIGKILL, 5.0)

    async def _signal(self, sig: signal.Signals, timeout: float) -> int | None:
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.returncode is None:
            proc.send_signal(sig)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return proc.returncode
