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
])
def test_bad_settings_name_the_variable(change: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load({**BASE, **change})


def test_secrets_are_not_in_the_settings_repr() -> None:
    assert "sk_test_123" not in repr(load(BASE))


def test_missing_stripe_key_stops_the_operator_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "KUBEPAY_"))}
    env.update({"DATABASE_URL": BASE["DATABASE_URL"], "KAFKA_BROKER_URL": "127.0.0.1:1"})
    result = subprocess.run([sys.executable, "-m", "kubepay", "operator"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "kubepay: configuration error: STRIPE_SECRET_KEY is required but not set"]
