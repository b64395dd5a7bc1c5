"""`kubepay sandbox`: keep the sandbox running and print the settings to point kubepay at it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path

from kubepay.sandbox.stack import Sandbox


async def serve(env_file: str | None) -> None:
    async with Sandbox() as box:
        tenant = await box.tenant("sandbox")
        lines = [f"{key}={value}" for key, value in sorted(tenant.env.items())]
        if env_file:
            await asyncio.to_thread(Path(env_file).write_text, "\n".join(lines) + "\n")
            print(f"settings written to {env_file}")
        print("\n".join(f"export {line}" for line in lines))
        print("# Ctrl-C stops the sandbox and deletes its data.", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def main(args: argparse.Namespace) -> int:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.env_file))
    return 0
