"""`kubepay-sandbox up`: keep the sandbox running, write the settings to point kubepay at it, forward Stripe's
webhooks to a receiver you run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from kubepay_sandbox.forwarding import check_url, local_port, print_deliveries
from kubepay_sandbox.stack import Sandbox


def env_text(env: Mapping[str, str]) -> str:
    """The settings as ``export NAME=value`` lines: a plain ``source`` exports them (bash, zsh), and dotenv
    readers that accept ``export`` lines (python-dotenv, for one) read them too."""
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in sorted(env.items()))


def write_env_file(path: Path, text: str) -> None:
    """Written whole under a temporary name, then renamed: whoever waits for the file never reads half of it."""
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    partial.touch(mode=0o600)  # before anything is in it: the API token, the webhook secret
    partial.write_text(f"# kubepay-sandbox settings: source {path.name}. Removed when the sandbox stops.\n{text}")
    os.replace(partial, path)


async def serve(env_file: Path | None, forward_to: str | None) -> None:
    async with Sandbox() as box:
        tenant = await box.tenant("sandbox")
        if forward_to is not None and (port := local_port(forward_to)) is not None:
            tenant.env["PAYMENT_HTTP_PORT"] = str(port)  # `kubepay webhook` from the env file listens there
        target = forward_to or tenant.webhook_url
        await box.stripe.register_webhook(target, tenant.webhook_secret)
        text = env_text(tenant.env)
        if env_file is not None:
            await asyncio.to_thread(write_env_file, env_file, text)
            print(f"settings written to {env_file}: `source {env_file}`, then run kubepay and kubectl")
        else:
            print(text, end="")
        print(f"kubectl: kubectl --kubeconfig {tenant.env['KUBECONFIG']} get pi  (namespace {tenant.namespace})")
        print(f"Stripe webhooks, signed with STRIPE_WEBHOOK_SECRET, go to {target}")
        print("# Ctrl-C stops the sandbox and deletes its data" + (f" and {env_file}." if env_file else "."),
              flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        printer = asyncio.create_task(print_deliveries(box.stripe))
        try:
            await stop.wait()
        finally:
            printer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await printer
            if env_file is not None:
                await asyncio.to_thread(env_file.unlink, missing_ok=True)


def main(env_file: str | None, forward_to: str | None) -> int:
    try:
        checked = None if forward_to is None else check_url(forward_to)
    except ValueError as exc:
        print(f"kubepay-sandbox up: --forward-to {exc}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(Path(env_file) if env_file else None, checked))
    return 0
