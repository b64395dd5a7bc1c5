"""The `kubepay` command: operator, webhook, api, orders-consumer, migrate, replay-events.

The local sandbox and the demo are not part of kubepay: they are the `kubepay-sandbox` command of the development-only
kubepay-sandbox distribution (sandbox/ in the checkout)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from sqlalchemy.exc import DBAPIError

from kubepay import __version__, config, dependencies, logs, migrate, postgres


def _settings(command: str) -> config.Settings:
    """The command's settings, or every problem on stderr (one line each) and exit code 2."""
    try:
        return config.load(command=command)
    except config.ConfigError as exc:
        for problem in exc.problems:
            print(f"kubepay {command}: configuration error: {problem}", file=sys.stderr)
        raise SystemExit(2) from None


def run_operator(args: argparse.Namespace) -> None:
    settings = _settings(config.OPERATOR)
    logs.setup(settings.log_level)
    from kubepay.controller import registry

    if settings.admission_port:
        registry.register_admission()
    asyncio.run(_operate(settings))


async def _operate(settings: config.Settings) -> None:
    """kopf's operator, with the probes and metrics served from the start (start-up may wait for dependencies)."""
    import kopf

    from kubepay import http_server, metrics
    from kubepay.controller import peering, probes

    memo = kopf.Memo(settings=settings)
    metrics.serve(settings.metrics_port)
    runner = await http_server.start(probes.app(memo), settings.health_port)
    try:
        await kopf.operator(
            clusterwide=settings.namespace is None,
            namespaces=[settings.namespace] if settings.namespace else (),
            standalone=settings.peering_name is None,
            peering_name=settings.peering_name,
            identity=peering.IDENTITY,  # type: ignore[arg-type]  # kopf's NewType of str
            memo=memo,
        )
    finally:
        await runner.cleanup()


def _serve(command: str, module: str) -> None:
    """Settings first (a missing one stops start-up before anything is imported or connected), then serve."""
    settings = _settings(command)
    logs.setup(settings.log_level)
    serve: Callable[[config.Settings], Coroutine[Any, Any, None]] = importlib.import_module(module).serve
    asyncio.run(serve(settings))


def run_webhook(args: argparse.Namespace) -> None:
    _serve(config.WEBHOOK, "kubepay_webhook.main")


def run_api(args: argparse.Namespace) -> None:
    _serve(config.API, "kubepay_webhook.api_main")


def run_orders_consumer(args: argparse.Namespace) -> None:
    _serve(config.ORDERS, "kubepay.orders.consumer")


def run_migrate(args: argparse.Namespace) -> None:
    settings = _settings(config.MIGRATE)
    logs.setup(settings.log_level)
    try:
        migrate.upgrade(settings.database_url, args.revision)
    except (OSError, TimeoutError, DBAPIError) as exc:  # a Job: exit, and let Kubernetes retry it
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        print(f"kubepay migrate: PostgreSQL at {postgres.address(settings.database_url)} "
              f"unavailable: {type(exc).__name__}: {reason}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"kubepay migrate: database migrated to {args.revision}")


def run_replay_events(args: argparse.Namespace) -> None:
    settings = _settings(config.REPLAY)
    logs.setup(settings.log_level)
    results = asyncio.run(_replay(settings, args.event_ids))
    for event_id, outcome in results:
        print(f"{event_id}: {outcome}")
    print(f"kubepay replay-events: {len(results)} event(s) replayed")
    raise SystemExit(1 if any(outcome.startswith("invalid") for _, outcome in results) else 0)


def run_check_ready(args: argparse.Namespace) -> None:
    from kubepay import readiness_check

    raise SystemExit(readiness_check.main(args.urls, args.timeout))


async def _replay(settings: config.Settings, event_ids: list[str]) -> list[tuple[str, str]]:
    from kubepay.stripe import events as stripe_events

    store = await dependencies.store(settings)
    try:
        kube = await dependencies.kube()
        try:
            return await stripe_events.replay_failed(store, kube, settings.namespace, event_ids)
        finally:
            await kube.close()
    finally:
        await store.close()


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="kubepay", description="Payments the Kubernetes way.")
    root.add_argument("--version", action="version", version=f"kubepay {__version__}")
    commands = root.add_subparsers(dest="command", required=True)

    def command(name: str, summary: str, fn: Callable[[argparse.Namespace], None]) -> argparse.ArgumentParser:
        epilog = config.help_text(name) if name in config.ALL else None
        sub = commands.add_parser(name, help=summary, description=summary, epilog=epilog,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.set_defaults(fn=fn)
        return sub

    command(config.OPERATOR, "run the PaymentIntent controller", run_operator)
    command(config.WEBHOOK, "run the Stripe webhook receiver", run_webhook)
    command(config.API, "run the payments HTTP API (POST /payments/intent, ...)", run_api)
    command(config.ORDERS, "turn orders.created events into PaymentIntent resources", run_orders_consumer)
    migrate_cmd = command(config.MIGRATE, "apply the database migrations (idempotent)", run_migrate)
    migrate_cmd.add_argument("--revision", default="head", help="target alembic revision (default: head)")
    replay = command(config.REPLAY, "apply again ledgered Stripe events that were invalid or left unprocessed",
                     run_replay_events)
    replay.add_argument("event_ids", nargs="*", metavar="EVENT_ID", help="only these events (default: all)")
    ready = command("check-ready", "GET each URL once; exit 0 only if every one answers 2xx (the helm test hook)",
                    run_check_ready)
    ready.add_argument("urls", nargs="+", metavar="URL", help="e.g. http://kubepay-receiver.kubepay.svc/readyz")
    ready.add_argument("--timeout", type=float, default=10.0, help="seconds for all of them (default: 10)")
    return root


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    args.fn(args)
