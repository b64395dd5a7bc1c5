"""A TCP proxy on 127.0.0.1 that a test switches between passing, refusing and stalling traffic.

Put in front of a server shared by many tests (the one Kafka broker, the one PostgreSQL, the API server),
it gives one tenant's processes an outage while the server itself keeps running for everybody else:

- ``pass_through()``: forward both ways (the default);
- ``refuse()``: stop listening, so new connections are refused (the port stays reserved meanwhile);
- ``reset()``: abort every open connection with a TCP reset (a crashed server, a dropped route);
- ``stall()``: accept connections and hold every byte, forwarding nothing (a hung server, a partition);
  what was held flows again once passing resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from kubepay_sandbox.child import HOST

__all__ = ["TcpProxy"]

CHUNK = 64 * 1024


@dataclass(eq=False)
class _Connection:
    client: asyncio.StreamWriter
    serving: asyncio.Task[None] | None
    upstream: asyncio.StreamWriter | None = None
    pumps: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        """Close both sides at once with a reset (SO_LINGER 0), as a dead peer's kernel would."""
        for writer in (self.client, self.upstream):
            if writer is None:
                continue
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        for task in self.pumps:
            task.cancel()


class TcpProxy:
    """Listens on 127.0.0.1 (a free port, or ``port``) and forwards each connection to ``target_port``."""

    def __init__(self, target_port: int, target_host: str = HOST, *, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self._port = port
        self._server: asyncio.Server | None = None
        self._reserved: socket.socket | None = None  # bound, not listening: refused, and nobody else takes it
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._connections: set[_Connection] = set()

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        return f"{HOST}:{self._port}"

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, self._port))
        self._port = sock.getsockname()[1]
        await self._listen(sock)

    async def _listen(self, sock: socket.socket) -> None:
        sock.listen(128)
        sock.setblocking(False)
        self._server = await asyncio.start_server(self._serve, sock=sock)

    async def stop(self) -> None:
        self.reset()
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._reserved is not None:
            self._reserved.close()
            self._reserved = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    # -- the modes -----------------------------------------------------------------------------------

    async def pass_through(self) -> None:
        """Listen again if refusing, and let held bytes and new connections flow."""
        if self._reserved is not None:
            sock, self._reserved = self._reserved, None
            await self._listen(sock)
        self._flowing.set()

    async def refuse(self) -> None:
        """New connections are refused; open ones are left alone (``reset()`` ends those)."""
        if self._server is not None:
            self._server.close()  # closes the listening socket now; never wait_closed(): it waits for connections
            self._server = None
            reserved = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            reserved.bind((HOST, self._port))
            self._reserved = reserved
        self._flowing.set()

    def stall(self) -> None:
        """Accept, but forward nothing either way until ``pass_through()``."""
        self._flowing.clear()

    def reset(self) -> None:
        """Abort every open connection with a TCP reset; the mode stays as it is."""
        for connection in list(self._connections):
            connection.abort()
            if connection.serving is not None:
                connection.serving.cancel()
        self._connections.clear()

    # -- forwarding ----------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(writer, asyncio.current_task())  # type: ignore[arg-type]
        self._connections.add(connection)
        try:
            await self._flowing.wait()  # a stalled server accepts, and then says nothing
            try:
                upstream_reader, connection.upstream = await asyncio.open_connection(*self.target)
            except OSError:
                connection.abort()  # the server itself is down: the client sees the connection reset
                return
            connection.pumps = [asyncio.create_task(self._pump(reader, connection.upstream)),
                                asyncio.create_task(self._pump(upstream_reader, writer))]
            done, pending = await asyncio.wait(connection.pumps, return_when=asyncio.FIRST_EXCEPTION)
            if pending or any(task.cancelled() or task.exception() is not None for task in done):
                connection.abort()
            else:
                for side in (writer, connection.upstream):
                    side.close()
        except asyncio.CancelledError:
            connection.abort()
        finally:
            self._connections.discard(connection)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        """Copy until end of stream (then half-close the other side); wait whenever the proxy stalls."""
        while True:
            await self._flowing.wait()
            data = await source.read(CHUNK)
            await self._flowing.wait()
            if not data:
                if sink.can_write_eof():
                    with contextlib.suppress(OSError):
                        sink.write_eof()
                return
            sink.write(data)
            await sink.drain()
