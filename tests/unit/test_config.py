import os
import subprocess
import sys

import pytest

from kubepay.config import ConfigError, load

BASE = {"DATABASE_URL": "postgresql://u:p@db:5432/payments", "KAFKA_BROKER_URL": "kafka:9092",
        "STRIPE_SECRET_KEY": "sk_test_123", "STRIPE_WEBHOOK_SECRET": "whsec_abc"}


def test_go_service_names_build_the_database_url() -> None:
    env = {**BASE, "POSTGRES_HOST": "db", "POSTGRES_USER": "pay", "POSTGRES_PASSWORD": "p@ss",
           "POSTGRES_DB": "payments"}
    del env["DATABASE_URL"]
    assert load(env).database_url == "postgresql://pay:p%40ss@db:5432/payments"


@pytest.mark.parametrize(("change", "message"), [
    ({"STRIPE_SECRET_KEY": ""}, "STRIPE_SECRET_KEY is required"),
    ({"STRIPE_SECRET_KEY": "pk_test_1"}, "STRIPE_SECRET_KEY must start with"),
    ({"PAYMENT_HTTP_PORT": "http"}, "PAYMENT_HTTP_PORT must be an integer"),
    ({"KUBEPAY_KAFKA_IDEMPOTENCE": "maybe"}, "KUBEPAY_KAFKA_IDEMPOTENCE must be true or false"),
    ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL must look like"),
    ({"DATABASE_URL": "postgresql://u:p@h:notaport/db"}, "DATABASE_URL has a malformed port"),
    ({"KUBEPAY_STRIPE_BACKGROUND_SHARE": "1.5"}, "KUBEPAY_STRIPE_BACKGROUND_SHARE must be at most 1"),
    ({"KUBEPAY_STRIPE_BACKGROUND_SHARE": "0"}, "KUBEPAY_STRIPE_BACKGROUND_SHARE must be positive"),
    ({"KUBEPAY_RETAIN_FINISHED": "a month"}, "KUBEPAY_RETAIN_FINISHED must be a duration such as 3600, 90s"),
    ({"KUBEPAY_RETAIN_FINISHED": "2w"}, "KUBEPAY_RETAIN_FINISHED must be a duration"),
    ({"KUBEPAY_PEERING_LIFETIME": "1"}, "KUBEPAY_PEERING_LIFETIME must be between 5 and 3600"),
])
def test_bad_settings_name_the_variable(change: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load({**BASE, **change})


@pytest.mark.parametrize(("value", "seconds"), [
    ("", None), ("3600", 3600), ("90s", 90), ("15m", 900), ("12h", 43200), ("30d", 2592000), ("0", 0)])
def test_retention_reads_a_duration_and_is_off_by_default(value: str, seconds: int | None) -> None:
    assert load({**BASE, "KUBEPAY_RETAIN_FINISHED": value}).retain_finished == seconds


def test_secrets_are_not_in_the_settings_repr() -> None:
    assert "sk_test_123" not in repr(load(BASE))


def _kubepay(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("STRIPE_", "KUBEPAY_", "POSTGRES_", "KAFKA_", "DATABASE_", "PAYMENT_"))}
    return subprocess.run([sys.executable, "-m", "kubepay", *args], env={**clean, **env}, capture_output=True,
                          text=True, timeout=60)


def test_missing_stripe_key_stops_the_operator_with_one_line() -> None:
    result = _kubepay("operator", DATABASE_URL=BASE["DATABASE_URL"], KAFKA_BROKER_URL="127.0.0.1:1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "kubepay operator: configuration error: STRIPE_SECRET_KEY is required but not set"]


def test_every_configuration_error_is_reported_at_once() -> None:
    result = _kubepay("webhook", DATABASE_URL="postgresql://u:secret@db:notaport/payments", PAYMENT_HTTP_PORT="x",
                      KUBEPAY_LOG_LEVEL="chatty")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "kubepay webhook: configuration error: DATABASE_URL has a malformed port; it must look like "
        "postgresql://user:password@host:port/db",
        "kubepay webhook: configuration error: STRIPE_WEBHOOK_SECRET is required but not set",
        "kubepay webhook: configuration error: PAYMENT_HTTP_PORT must be an integer, got 'x'",
        "kubepay webhook: configuration error: KUBEPAY_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, "
        "got 'CHATTY'",
    ]
    assert "secret" not in result.stderr


def test_version() -> None:
    result = _kubepay("--version")
    assert (result.returncode, result.stdout.strip()) == (0, "kubepay 0.1.0")


@pytest.mark.parametrize(("command", "reads", "ignores"), [
    ("operator", ["STRIPE_SECRET_KEY", "KAFKA_BROKER_URL", "KUBEPAY_STRIPE_RATE_LIMIT"], ["STRIPE_WEBHOOK_SECRET"]),
    ("webhook", ["STRIPE_WEBHOOK_SECRET", "PAYMENT_HTTP_PORT"], ["STRIPE_SECRET_KEY", "KAFKA_BROKER_URL"]),
    ("api", ["KUBEPAY_API_TOKEN", "KUBEPAY_API_PORT"], ["STRIPE_SECRET_KEY"]),
    ("orders-consumer", ["KAFKA_BROKER_URL", "KUBEPAY_ORDERS_GROUP"], ["STRIPE_SECRET_KEY"]),
    ("migrate", ["DATABASE_URL", "POSTGRES_HOST"], ["KAFKA_BROKER_URL"]),
])
def test_help_lists_the_settings_each_command_reads(command: str, reads: list[str], ignores: list[str]) -> None:
    result = _kubepay(command, "--help")
    assert result.returncode == 0
    listed = {line.split()[0]: line for line in result.stdout.split("settings (environment variables):")[1]
              .strip().splitlines()}
    assert set(reads) <= listed.keys() and not set(ignores) & listed.keys()
    assert all(line.endswith(")") for line in listed.values())  # each says required, optional or its default
    if command == "operator":
        assert listed["KUBEPAY_STRIPE_RATE_LIMIT"].endswith("(default 20)")
        assert listed["STRIPE_SECRET_KEY"].endswith("(required)")
