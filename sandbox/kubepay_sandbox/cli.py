"""The `kubepay-sandbox` command: `up` keeps a local sandbox running for your own kubepay processes, `demo` shows
the whole payment flow in one and exits."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from kubepay_sandbox.checkout import CRD_DIR, REPO

PROG = "kubepay-sandbox"


def run_up(args: argparse.Namespace) -> int:
    from kubepay_sandbox.up import main as up_main

    return up_main(args.env_file, args.forward_to)


def run_demo(args: argparse.Namespace) -> int:
    from kubepay_sandbox.demo import main as demo_main

    return asyncio.run(demo_main())


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog=PROG,
        description="kubepay's local sandbox: PostgreSQL, Kafka, a Stripe fake and a Kubernetes API emulator "
        "on 127.0.0.1, from a kubepay checkout.")
    commands = root.add_subparsers(dest="command", required=True)

    def command(name: str, summary: str, fn: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=summary, description=summary)
        sub.set_defaults(fn=fn)
        return sub

    up = command("up", "run PostgreSQL, Kafka, a Stripe fake and a Kubernetes API emulator locally until Ctrl-C",
                 run_up)
    up.add_argument("--env-file", help="write the settings for kubepay processes to this file "
                    "(export lines: `source` it)")
    up.add_argument("--forward-to", metavar="URL", help="send the Stripe fake's signed webhooks here "
                    "(default: the `kubepay webhook` the settings describe), retrying failed deliveries")
    command("demo", "show the whole payment flow in the sandbox and exit", run_demo)
    return root


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if not CRD_DIR.is_dir():
        print(f"{PROG}: {REPO} is not a kubepay checkout (no crds/): install the sandbox from one, "
              "with `pip install -e ./sandbox` or `make venv`", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(args.fn(args))
