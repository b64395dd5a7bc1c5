"""`kubepay-sandbox up`: its env file survives a plain `source` intact, --forward-to refuses what is not a URL, and
what it prints about each webhook delivery."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from kubepay_sandbox import cli
from kubepay_sandbox.forwarding import describe, local_port
from kubepay_sandbox.up import env_text, write_env_file

TRICKY = {
    "DATABASE_URL": "postgresql://kubepay:p%40ss@127.0.0.1:5432/db",
    "QUOTED": "it's \"quoted\" and $HOME `not run`; echo no",
    "SPACES": "two  words\tand a tab",
    "EMPTY": "",
}
URL = "http://127.0.0.1:8080/payments/webhook"


def test_env_file_is_exported_by_a_plain_source(tmp_path: Path) -> None:
    path = tmp_path / ".sandbox.env"
    write_env_file(path, env_text(TRICKY))

    out = subprocess.run(["bash", "-c", f"source {path} && env -0"], env={"PATH": os.environ["PATH"]},
                         capture_output=True, check=True).stdout.decode()
    exported = dict(entry.split("=", 1) for entry in out.split("\0") if entry)
    assert {key: exported.get(key) for key in TRICKY} == TRICKY
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds the API token and the webhook secret
    assert [p.name for p in tmp_path.iterdir()] == [".sandbox.env"]


@pytest.mark.parametrize(("url", "why"), [
    ("127.0.0.1:8080/payments/webhook", "must be an http:// or https:// URL"),
    ("ftp://127.0.0.1/payments/webhook", "must be an http:// or https:// URL"),
    ("http:///payments/webhook", "must be an http:// or https:// URL"),
    ("http://127.0.0.1:port/payments/webhook", "has an invalid port"),
])
def test_forward_to_that_is_not_an_http_url_is_refused(
        url: str, why: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["up", "--forward-to", url])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("kubepay-sandbox up: --forward-to ") and why in error, error


@pytest.mark.parametrize(("url", "port"), [
    ("http://127.0.0.1:8080/payments/webhook", 8080),
    ("http://localhost/payments/webhook", 80),
    ("https://[::1]:8443/hook", 8443),
    ("https://receiver.example:8080/hook", None),  # another machine: the env file keeps its own port
])
def test_receiver_port_follows_a_local_forward_url(url: str, port: int | None) -> None:
    assert local_port(url) == port


@pytest.mark.parametrize(("status", "error", "retry_in", "ending"), [
    (200, None, None, f"<-- [200] POST {URL}"),
    (None, "connection refused", 2, f"<-- (connection refused) POST {URL}; retry in 2 s"),
    (503, None, None, f"<-- [503] POST {URL}; gave up after 10 attempts"),
])
def test_each_delivery_attempt_is_one_line_saying_what_happened_next(
        status: int | None, error: str | None, retry_in: float | None, ending: str) -> None:
    line = describe({"time": 0, "type": "payment_intent.succeeded", "event_id": "evt_1", "url": URL,
                     "attempt": 10, "status": status, "error": error, "retry_in": retry_in})
    assert line.endswith(f" --> payment_intent.succeeded [evt_1] {ending}"), line
