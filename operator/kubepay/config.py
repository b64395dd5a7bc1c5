"""Settings from the environment; a missing or malformed value stops start-up with one line."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it and never echoes secrets."""


@dataclass(frozen=True)
class Topics:
    """Kafka topic names, each overridable with KUBEPAY_TOPIC_<NAME>."""

    initiated: str = "payments.initiated"
    succeeded: str = "payments.succeeded"
    failed: str = "payments.failed"
    canceled: str = "payments.canceled"
    refunded: str = "payments.refunded"
    order_status: str = "orders.status"
    orders_created: str = "orders.created"  # consumed by `kubepay orders-consumer`
    orders_dlq: str = "orders.created.dlq"  # where unusable orders.created messages go, reason in a header

    def all(self) -> list[str]:
        return [self.initiated, self.succeeded, self.failed, self.canceled, self.refunded, self.order_status]


@dataclass(frozen=True)
class Settings:
    """Everything kubepay's processes read from the environment."""

    database_url: str
    kafka_brokers: str
    stripe_secret_key: str = field(repr=False)
    stripe_webhook_secret: str = field(repr=False)
    stripe_api_base: str | None
    environment: str
    http_port: int
    api_port: int
    health_port: int
    metrics_port: int
    admission_port: int
    admission_cert_dir: str
    kafka_idempotence: bool
    kafka_acks: str
    topics: Topics
    namespace: str | None
    stripe_rate_limit: float
    resync_seconds: float
    migrate_on_start: bool
    log_level: str
    source: str
    api_auth: str = "token"
    api_token: str = field(default="", repr=False)
    api_namespace: str = "default"
    api_wait_seconds: float = 10.0
    orders_namespace: str = "default"
    orders_group: str = "kubepay-orders"
    orders_session_timeout_ms: int = 10000
    orders_heartbeat_ms: int = 3000
    orders_consumer_in_operator: bool = False


def _get(env: Mapping[str, str], name: str, default: str | None = None) -> str:
    value = env.get(name, default)
    if value is None or value.strip() == "":
        raise ConfigError(f"{name} is required but not set")
    return value.strip()


def _int(env: Mapping[str, str], name: str, default: int, low: int = 0, high: int = 65535) -> int:
    raw = _get(env, name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = _get(env, name, str(default))
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {raw!r}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _get(env, name, "true" if default else "false").lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _database_url(env: Mapping[str, str]) -> str:
    url = env.get("DATABASE_URL", "").strip()
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql") or not parts.hostname:
            raise ConfigError("DATABASE_URL must look like postgresql://user:password@host:port/db")
        return url
    host = _get(env, "POSTGRES_HOST")
    port = _int(env, "POSTGRES_PORT", 5432, 1)
    user = _get(env, "POSTGRES_USER")
    password = env.get("POSTGRES_PASSWORD", "")
    database = _get(env, "POSTGRES_DB")
    auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
    return f"postgresql://{auth}@{host}:{port}/{quote(database, safe='')}"


def _stripe_key(env: Mapping[str, str]) -> str:
    key = _get(env, "STRIPE_SECRET_KEY")
    if not key.startswith(("sk_test_", "sk_live_", "rk_test_", "rk_live_")):
        raise ConfigError("STRIPE_SECRET_KEY must start with sk_test_, sk_live_, rk_test_ or rk_live_")
    return key


def _api_token(env: Mapping[str, str]) -> str:
    token = _get(env, "KUBEPAY_API_TOKEN")
    if len(token) < 16:
        raise ConfigError("KUBEPAY_API_TOKEN must be at least 16 characters")
    return token


def _with_default(env: Mapping[str, str], name: str, default: str) -> str:
    return env.get(name, "").strip() or default


API_AUTH_MODES = ("token", "serviceaccount", "none")


def _api_auth(env: Mapping[str, str]) -> str:
    mode = _with_default(env, "KUBEPAY_API_AUTH", "token").lower()
    if mode not in API_AUTH_MODES:
        raise ConfigError(f"KUBEPAY_API_AUTH must be token, serviceaccount or none, got {mode!r}")
    return mode


def load(
    env: Mapping[str, str] | None = None,
    *,
    need_stripe: bool = True,
    need_webhook_secret: bool = False,
    need_kafka: bool = True,
    need_api_token: bool = False,
) -> Settings:
    """Read settings; each process asks only for what it uses (`need_api_token`: in KUBEPAY_API_AUTH=token mode)."""
    env = os.environ if env is None else env
    topics = Topics(
        **{
            name: _with_default(env, f"KUBEPAY_TOPIC_{name.upper()}", default)
            for name, default in Topics().__dict__.items()
        }
    )
    acks = _with_default(env, "KUBEPAY_KAFKA_ACKS", "all")
    if acks not in ("all", "1", "0"):
        raise ConfigError(f"KUBEPAY_KAFKA_ACKS must be all, 1 or 0, got {acks!r}")
    level = _with_default(env, "KUBEPAY_LOG_LEVEL", "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"KUBEPAY_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    api_auth = _api_auth(env)
    api_base = env.get("KUBEPAY_STRIPE_API_BASE", "").strip() or None
    if api_base is not None and not api_base.startswith(("http://", "https://")):
        raise ConfigError("KUBEPAY_STRIPE_API_BASE must be an http(s) URL")
    return Settings(
        database_url=_database_url(env),
        kafka_brokers=_get(env, "KAFKA_BROKER_URL") if need_kafka else env.get("KAFKA_BROKER_URL", ""),
        stripe_secret_key=_stripe_key(env) if need_stripe else env.get("STRIPE_SECRET_KEY", ""),
        stripe_webhook_secret=(
            _get(env, "STRIPE_WEBHOOK_SECRET")
            if need_webhook_secret
            else env.get("STRIPE_WEBHOOK_SECRET", "")
        ),
        stripe_api_base=api_base,
        environment=_with_default(env, "SRV_ENV", "production"),
        http_port=_int(env, "PAYMENT_HTTP_PORT", 8080),
        api_port=_int(env, "KUBEPAY_API_PORT", 8081),
        health_port=_int(env, "KUBEPAY_HEALTH_PORT", 8090),
        metrics_port=_int(env, "KUBEPAY_METRICS_PORT", 9090),
        admission_port=_int(env, "KUBEPAY_ADMISSION_PORT", 0),
        admission_cert_dir=_with_default(env, "KUBEPAY_ADMISSION_CERT_DIR", "/etc/kubepay/admission"),
        kafka_idempotence=_bool(env, "KUBEPAY_KAFKA_IDEMPOTENCE", True),
        kafka_acks=acks,
        topics=topics,
        namespace=env.get("KUBEPAY_NAMESPACE", "").strip() or None,
        stripe_rate_limit=_float(env, "KUBEPAY_STRIPE_RATE_LIMIT", 20.0),
        resync_seconds=_float(env, "KUBEPAY_RESYNC_SECONDS", 600.0),
        migrate_on_start=_bool(env, "KUBEPAY_MIGRATE_ON_START", False),
        log_level=level,
        source=_with_default(env, "KUBEPAY_EVENT_SOURCE", "kubepay"),
        api_auth=api_auth,
        api_token=(
            _api_token(env) if need_api_token and api_auth == "token" else env.get("KUBEPAY_API_TOKEN", "").strip()
        ),
        api_namespace=_with_default(env, "KUBEPAY_API_NAMESPACE", _with_default(env, "POD_NAMESPACE", "default")),
        api_wait_seconds=_float(env, "KUBEPAY_API_WAIT_SECONDS", 10.0),
        orders_namespace=_with_default(
            env, "KUBEPAY_ORDERS_NAMESPACE",
            _with_default(env, "KUBEPAY_NAMESPACE", _with_default(env, "POD_NAMESPACE", "default")),
        ),
        orders_group=_with_default(env, "KUBEPAY_ORDERS_GROUP", "kubepay-orders"),
        orders_session_timeout_ms=_int(env, "KUBEPAY_ORDERS_SESSION_TIMEOUT_MS", 10000, 100, 3_600_000),
        orders_heartbeat_ms=_int(env, "KUBEPAY_ORDERS_HEARTBEAT_MS", 3000, 10, 3_600_000),
        orders_consumer_in_operator=_bool(env, "KUBEPAY_ORDERS_CONSUMER", False),
    )
