"""`kubepay check-ready`, the chart's helm test, against a local aiohttp server on 127.0.0.1: run as the hook
runs it (the `kubepay` entry point in a child process), exit code and one line per URL."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator

import pytest_asyncio
from aiohttp import web


@pytest_asyncio.fixture()
async def server() -> AsyncIterator[str]:
    never = asyncio.Event()

    async def hang(_: web.Request) -> web.Response:
        await never.wait()
        return web.Response()

    app = web.Application()
    app.router.add_get("/ready", lambda _: web.Response(text="ok"))
    app.router.add_get("/unready", lambda _: web.Response(status=503, text="postgres unavailable"))
    app.router.add_get("/hang", hang)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def refused_url() -> str:
    """A port on 127.0.0.1 nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/readyz"


async def check_ready(*args: str) -> tuple[int, list[str]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kubepay", "check-ready", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert err == b"", err
    assert process.returncode is not None
    return process.returncode, out.decode().splitlines()


async def test_all_ready_exits_0_with_a_line_per_url(server: str) -> None:
    code, lines = await check_ready(f"{server}/ready", f"{server}/ready?again")
    assert code == 0
    assert lines == [f"{server}/ready: 200 OK", f"{server}/ready?again: 200 OK"]


async def test_one_unready_exits_1_and_names_it(server: str) -> None:
    code, lines = await check_ready(f"{server}/ready", f"{server}/unready")
    assert code == 1
    assert lines == [f"{server}/ready: 200 OK", f"{server}/unready: 503 Service Unavailable"]
    assert "postgres" not in "".join(lines)  # bodies are not printed


async def test_connection_refused_exits_1(server: str) -> None:
    url = refused_url()
    code, lines = await check_ready(f"{server}/ready", url)
    assert code == 1
    assert lines[0] == f"{server}/ready: 200 OK"
    assert lines[1].startswith(f"{url}: ClientConnectorError"), lines


async def test_no_answer_within_the_timeout_exits_1(server: str) -> None:
    code, lines = await check_ready("--timeout", "0.5", f"{server}/hang")
    assert (code, lines) == (1, [f"{server}/hang: no answer in time"])
