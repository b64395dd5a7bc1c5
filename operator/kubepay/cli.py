"""The `kubepay` command: operator, webhook, api, orders-consumer, migrate, sandbox, demo."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from kubepay import config, logs, migrate


def _settings(
    *, need_stripe: bool, need_kafka: bool, need_webhook_secret: bool = False, need_api_token: bool = False
) -> config.Settings:
    try:
        return config.load(
            need_stripe=need_stripe, need_kafka=need_kafka, need_webhook_secret=need_webhook_secret,
            need_api_token=need_api_token,
        )
    except config.ConfigError as exc:
        print(f"kubepay: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def run_operator(args: argparse.Namespace) -> None:
    settings = _settings(need_stripe=True, need_kafka=True)
    logs.setup(settings.log_level)
    import kopf

    from kubepay import handlers, refund_handlers  # noqa: F401  (registers the handlers)

    if settings.admission_port:
        from kubepay import admission  # noqa: F401  (registers the admission handlers)

    peering = os.environ.get("KUBEPAY_PEERING_NAME", "").strip()
    asyncio.run(
        kopf.operator(
            clusterwide=settings.namespace is None,
            namespaces=[settings.namespace] if settings.namespace else (),
            standalone=not peering,
            peering_name=peering or None,
            liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
            memo=kopf.Memo(settings=settings),
        )
    )


def run_webhook(args: argparse.Namespace) -> None:
    settings = _settings(need_stripe=False, need_kafka=False, need_webhook_secret=True)
    logs.setup(settings.log_level)
    from kubepay_webhook.main import serve

    asyncio.run(serve(settings))


def run_api(args: argparse.Namespace) -> None:
    settings = _settings(need_stripe=False, need_kafka=False, need_api_token=True)
    logs.setup(settings.log_level)
    from kubepay_webhook.api_main import serve

    asyncio.run(serve(settings))


def run_orders_consumer(args: argparse.Namespace) -> None:
    settings = _settings(need_stripe=False, need_kafka=True)
    logs.setup(settings.log_level)
    from kubepay.orders_consumer import serve

    asyncio.run(serve(settings))


def run_migrate(args: argparse.Namespace) -> None:
    settings = _settings(need_stripe=False, need_kafka=False)
    logs.setup(settings.log_level)
    migrate.upgrade(settings.database_url, args.revision)
    print(f"kubepay: database migrated to {args.revision}")


def run_sandbox(args: argparse.Namespace) -> None:
    from kubepay.sandbox.cli import main as sandbox_main

    raise SystemExit(sandbox_main(args))


def run_demo(args: argparse.Namespace) -> None:
    from kubepay.sandbox.demo import main as demo_main

    raise SystemExit(asyncio.run(demo_main()))


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="kubepay", description="Payments the Kubernetes way.")
    commands = root.add_subparsers(dest="command", required=True)
    commands.add_parser("operator", help="run the PaymentIntent controller").set_defaults(fn=run_operator)
    commands.add_parser("webhook", help="run the Stripe webhook receiver").set_defaults(fn=run_webhook)
    commands.add_parser("api", help="run the payments HTTP API (POST /payments/intent, ...)").set_defaults(
        fn=run_api
    )
    commands.add_parser(
        "orders-consumer", help="turn orders.created events into PaymentIntent resources"
    ).set_defaults(fn=run_orders_consumer)
    migrate_cmd = commands.add_parser("migrate", help="apply the database migrations (idempotent)")
    migrate_cmd.add_argument("--revision", default="head", help="target alembic revision (default: head)")
    migrate_cmd.set_defaults(fn=run_migrate)
    sandbox = commands.add_parser(
        "sandbox", help="run PostgreSQL, Kafka, a Stripe fake and a Kubernetes API emulator locally"
    )
    sandbox.add_argument("--env-file", help="write the settings for kubepay processes to this file "
                         "(export lines: `source` it)")
    sandbox.add_argument("--forward-to", metavar="URL", help="send the Stripe fake's signed webhooks here "
                         "(default: the `kubepay webhook` the settings describe), retrying failed deliveries")
    sandbox.set_defaults(fn=run_sandbox)
    commands.add_parser("demo", help="show the whole payment flow in the sandbox and exit").set_defaults(
        fn=run_demo
    )
    return root


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    args.fn(args)
