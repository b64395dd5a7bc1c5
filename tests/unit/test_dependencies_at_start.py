"""A process whose dependency is down at start says so in one line per try, naming the address, and waits."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(("command", "env", "names"), [
    ("webhook", {"STRIPE_WEBHOOK_SECRET": "whsec_x", "PAYMENT_HTTP_PORT": "0"}, "PostgreSQL"),
    ("migrate", {}, None),
])
def test_unreachable_postgres_at_start(command: str, env: dict[str, str], names: str | None) -> None:
    port = _free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "KUBEPAY_", "DATABASE_"))}
    clean.update(env, DATABASE_URL=f"postgresql://kubepay:hunter2@127.0.0.1:{port}/payments")
    process = subprocess.Popen([sys.executable, "-m", "kubepay", command], env=clean, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        if names is None:  # a one-shot command exits non-zero with one line
            output, _ = process.communicate(timeout=60)
            assert process.returncode != 0
            assert output.strip().splitlines()[-1].startswith(f"kubepay migrate: PostgreSQL at 127.0.0.1:{port}")
        else:  # a server waits, one line per try, and never a traceback
            lines: list[str] = []
            deadline = time.monotonic() + 30
            assert process.stdout is not None
            while sum(f"waiting for {names} at 127.0.0.1:{port}" in line for line in lines) < 3:
                assert time.monotonic() < deadline, lines
                lines.append(process.stdout.readline())
            waiting = [json.loads(line) for line in lines if "waiting for" in line]
            assert all(record["severity"] == "warn" for record in waiting)
            assert process.poll() is None
        assert "Traceback" not in "".join(lines if names else output)
        assert "hunter2" not in "".join(lines if names else output)
    finally:
        process.kill()
        process.wait()
