"""Settings from the environment, read once at start.

`VARIABLES` is the one list of what each command reads, with defaults and meanings: `load` reads from it
and `kubepay <command> --help` prints it. Every missing or malformed value is reported, one line each,
before a process starts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

OPERATOR, WEBHOOK, API, ORDERS, MIGRATE = "operator", "webhook", "api", "orders-consumer", "migrate"
REPLAY = "replay-events"
ALL = frozenset({OPERATOR, WEBHOOK, API, ORDERS, MIGRATE, REPLAY})


class ConfigError(Exception):
    """Settings are missing or malformed; `problems` has one line per variable and never echoes secrets."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Variable:
    name: str
    default: str  # "" = no default (required where `required` says, else unset)
    meaning: str
    commands: frozenset[str]
    required: frozenset[str] = frozenset()


def _v(name: str, default: str, meaning: str, *commands: str, required: tuple[str, ...] = ()) -> Variable:
    return Variable(name, default, meaning, frozenset(commands) if commands else ALL, frozenset(required))


METRICS_PORTS = {OPERATOR: "9090", WEBHOOK: "9091", API: "9092", ORDERS: "9093"}
_TOPIC_DEFAULTS = {
    "initiated": "payments.initiated", "succeeded": "payments.succeeded", "failed": "payments.failed",
    "canceled": "payments.canceled", "refunded": "payments.refunded", "order_status": "orders.status",
    "orders_created": "orders.created", "orders_dlq": "orders.created.dlq",
}

VARIABLES: tuple[Variable, ...] = (
    _v("DATABASE_URL", "", "postgresql://user:password@host:port/db (or the POSTGRES_* variables)",
       required=tuple(ALL)),
    _v("POSTGRES_HOST", "", "PostgreSQL host, used when DATABASE_URL is unset"),
    _v("POSTGRES_PORT", "5432", "PostgreSQL port"),
    _v("POSTGRES_USER", "", "PostgreSQL user"),
    _v("POSTGRES_PASSWORD", "", "PostgreSQL password"),
    _v("POSTGRES_DB", "", "PostgreSQL database"),
    _v("KAFKA_BROKER_URL", "", "Kafka bootstrap servers, host:port[,host:port]", OPERATOR, ORDERS,
       required=(OPERATOR, ORDERS)),
    _v("STRIPE_SECRET_KEY", "", "Stripe secret key, sk_test_/sk_live_ (or restricted rk_)", OPERATOR,
       required=(OPERATOR,)),
    _v("STRIPE_WEBHOOK_SECRET", "", "the webhook endpoint's signing secret, whsec_...", WEBHOOK,
       required=(WEBHOOK,)),
    _v("PAYMENT_HTTP_PORT", "8080", "receiver port", WEBHOOK),
    _v("SRV_ENV", "production", "environment name"),
    _v("KUBEPAY_NAMESPACE", "", "watch only this namespace (unset: all namespaces)", OPERATOR, WEBHOOK, ORDERS,
       REPLAY),
    _v("KUBEPAY_PEERING_NAME", "", "kopf peering object; set it when running more than one replica", OPERATOR),
    _v("KUBEPAY_PEERING_LIFETIME", "60", "seconds a peered controller's keep-alive holds: a standby takes over "
       "from a crashed active controller within this", OPERATOR),
    _v("KUBEPAY_HEALTH_PORT", "8090", "liveness /healthz and readiness /readyz", OPERATOR, ORDERS),
    _v("KUBEPAY_METRICS_PORT", "", "Prometheus /metrics on a port of its own, 0: off (default: operator 9090, "
       "webhook 9091, api 9092, orders-consumer 9093, so that all run side by side)", OPERATOR, WEBHOOK, API, ORDERS),
    _v("KUBEPAY_STUCK_SECONDS", "3600", "a PaymentIntent not final this long after its creation counts in "
       "kubepay_payments_stuck", OPERATOR),
    _v("KUBEPAY_ADMISSION_PORT", "0", "HTTPS port of the validating admission webhooks (0: off)", OPERATOR),
    _v("KUBEPAY_ADMISSION_CERT_DIR", "/etc/kubepay/admission", "folder with tls.crt and tls.key", OPERATOR),
    _v("KUBEPAY_WORKERS", "64", "resources the controller handles at once (catch-up reads take at most half)",
       OPERATOR),
    _v("KUBEPAY_RESYNC_SECONDS", "600", "how long a non-final payment may stay quiet before Stripe is read",
       OPERATOR),
    _v("KUBEPAY_STRIPE_RATE_LIMIT", "20", "client-side Stripe requests per second", OPERATOR),
    _v("KUBEPAY_STRIPE_BACKGROUND_SHARE", "0.5",
       "share of the Stripe rate that resync reads and the backfill may use (0 < share <= 1)", OPERATOR),
    _v("KUBEPAY_RETAIN_FINISHED", "",
       "delete a finished payment's resource this long after it was mirrored and published (e.g. 720h, 30d; "
       "unset: keep; spec.ttlSecondsAfterFinished wins); its row, ledger and messages stay", OPERATOR),
    _v("KUBEPAY_STRIPE_API_BASE", "", "another Stripe API base URL (the sandbox's fake)", OPERATOR),
    _v("KUBEPAY_KAFKA_ACKS", "all", "producer acks: all, 1 or 0", OPERATOR, ORDERS),
    _v("KUBEPAY_KAFKA_IDEMPOTENCE", "true", "idempotent producer", OPERATOR, ORDERS),
    *(
        _v(f"KUBEPAY_TOPIC_{name.upper()}", default, f"Kafka topic {default}",
           *((ORDERS, OPERATOR) if name.startswith("orders_") else (OPERATOR,)))
        for name, default in _TOPIC_DEFAULTS.items()
    ),
    _v("KUBEPAY_EVENT_SOURCE", "kubepay", "CloudEvents ce_source prefix", OPERATOR),
    _v("KUBEPAY_MIGRATE_ON_START", "false", "apply migrations at start", OPERATOR, WEBHOOK, API, ORDERS),
    _v("KUBEPAY_MIGRATIONS_DIR", "", "where the alembic scripts are (default: the checkout's migrations/)"),
    _v("KUBEPAY_LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR"),
    _v("KUBECONFIG", "", "outside a cluster, the kubeconfig to use (default: in-cluster)",
       OPERATOR, WEBHOOK, API, ORDERS, REPLAY),
    _v("KUBEPAY_API_PORT", "8081", "payments HTTP API port", API),
    _v("KUBEPAY_API_AUTH", "token", "how API callers authenticate: token, serviceaccount or none", API),
    _v("KUBEPAY_API_TOKEN", "", "bearer token clients send, at least 16 characters; required when "
       "KUBEPAY_API_AUTH=token", API),
    _v("KUBEPAY_API_NAMESPACE", "", "where POST /payments/intent creates resources (default: POD_NAMESPACE, "
       "else default)", API),
    _v("KUBEPAY_API_WAIT_SECONDS", "10", "how long POST /payments/intent waits for the client secret", API),
    _v("KUBEPAY_ORDERS_NAMESPACE", "", "where orders become PaymentIntents (default: KUBEPAY_NAMESPACE, "
       "POD_NAMESPACE, default)", ORDERS, OPERATOR),
    _v("KUBEPAY_ORDERS_GROUP", "kubepay-orders", "Kafka consumer group", ORDERS, OPERATOR),
    _v("KUBEPAY_ORDERS_SESSION_TIMEOUT_MS", "10000", "consumer-group session timeout", ORDERS, OPERATOR),
    _v("KUBEPAY_ORDERS_HEARTBEAT_MS", "3000", "consumer-group heartbeat interval", ORDERS, OPERATOR),
    _v("KUBEPAY_ORDERS_CONSUMER", "false", "also run the orders consumer inside the controller", OPERATOR),
)
_BY_NAME = {variable.name: variable for variable in VARIABLES}


def help_text(command: str) -> str:
    """The settings `command` reads, for its --help."""
    rows = [v for v in VARIABLES if command in v.commands]
    width = max(len(v.name) for v in rows)
    lines = ["settings (environment variables):"]
    for v in rows:
        default = "required" if command in v.required else (f"default {v.default}" if v.default else "optional")
        lines.append(f"  {v.name:<{width}}  {v.meaning} ({default})")
    return "\n".join(lines)


@dataclass(frozen=True)
class Topics:
    """Kafka topic names, each overridable with KUBEPAY_TOPIC_<NAME>."""

    initiated: str = _TOPIC_DEFAULTS["initiated"]
    succeeded: str = _TOPIC_DEFAULTS["succeeded"]
    failed: str = _TOPIC_DEFAULTS["failed"]
    canceled: str = _TOPIC_DEFAULTS["canceled"]
    refunded: str = _TOPIC_DEFAULTS["refunded"]
    order_status: str = _TOPIC_DEFAULTS["order_status"]
    orders_created: str = _TOPIC_DEFAULTS["orders_created"]  # consumed by `kubepay orders-consumer`
    orders_dlq: str = _TOPIC_DEFAULTS["orders_dlq"]  # unusable orders.created messages, reason in a header

    def all(self) -> list[str]:
        return [self.initiated, self.succeeded, self.failed, self.canceled, self.refunded, self.order_status]


@dataclass(frozen=True)
class Settings:
    """Everything kubepay's processes read from the environment."""

    database_url: str = field(repr=False)
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
    stripe_background_share: float
    resync_seconds: float
    retain_finished: float | None
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
    peering_name: str | None = None  # None: standalone
    peering_lifetime: int = 60
    workers: int = 64
    stuck_seconds: float = 3600.0


class _Reader:
    """Reads variables for one command, collecting every problem instead of stopping at the first."""

    def __init__(self, env: Mapping[str, str], command: str) -> None:
        self.env = env
        self.command = command
        self.problems: list[str] = []

    def text(self, name: str, default: str | None = None) -> str:
        """The value, or the catalogue's default; "" when unset and optional; a problem when required."""
        variable = _BY_NAME[name]
        value = self.env.get(name, "").strip()
        if value:
            return value
        if self.command in variable.required:
            self.problems.append(f"{name} is required but not set")
        return variable.default if default is None else default

    def integer(self, name: str, low: int = 0, high: int = 65535, default: str | None = None) -> int:
        raw = self.text(name, default)
        try:
            value = int(raw)
        except ValueError:
            self.problems.append(f"{name} must be an integer, got {raw!r}")
            return low
        if not low <= value <= high:
            self.problems.append(f"{name} must be between {low} and {high}, got {value}")
        return value

    def number(self, name: str) -> float:
        raw = self.text(name)
        try:
            value = float(raw)
        except ValueError:
            self.problems.append(f"{name} must be a number, got {raw!r}")
            return 1.0
        if not value > 0:
            self.problems.append(f"{name} must be positive, got {raw!r}")
        return value

    def share(self, name: str) -> float:
        value = self.number(name)
        if value > 1:
            self.problems.append(f"{name} must be at most 1, got {self.text(name)!r}")
        return value

    def duration(self, name: str) -> float | None:
        """Seconds from `90`, `90s`, `15m`, `12h` or `30d`; None when unset."""
        raw = self.text(name)
        if not raw:
            return None
        match = _DURATION.fullmatch(raw)
        if match is None:
            self.problems.append(f"{name} must be a duration such as 3600, 90s, 15m, 12h or 30d, got {raw!r}")
            return None
        return int(match[1]) * _DURATION_UNITS[match[2] or "s"]

    def flag(self, name: str) -> bool:
        raw = self.text(name).lower()
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw not in ("0", "false", "no", "off"):
            self.problems.append(f"{name} must be true or false, got {raw!r}")
        return False

    def choice(self, name: str, choices: tuple[str, ...], upper: bool = False, lower: bool = False) -> str:
        value = self.text(name)
        value = value.upper() if upper else value.lower() if lower else value
        if value not in choices:
            self.problems.append(f"{name} must be {', '.join(choices[:-1])} or {choices[-1]}, got {value!r}")
        return value


_DURATION = re.compile(r"(\d+)([smhd]?)")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _database_url(r: _Reader) -> str:
    url = r.env.get("DATABASE_URL", "").strip()
    if url:
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018  (raises on a malformed port)
        except ValueError:
            r.problems.append("DATABASE_URL has a malformed port; it must look like "
                              "postgresql://user:password@host:port/db")
            return url
        if parts.scheme not in ("postgres", "postgresql") or not parts.hostname:
            r.problems.append("DATABASE_URL must look like postgresql://user:password@host:port/db")
        return url
    missing = [name for name in ("POSTGRES_HOST", "POSTGRES_USER", "POSTGRES_DB") if not r.env.get(name, "").strip()]
    if missing:
        r.problems.append(f"DATABASE_URL is required but not set (or set {', '.join(missing)})")
        return ""
    port = r.integer("POSTGRES_PORT", 1)
    user, password = r.text("POSTGRES_USER"), r.env.get("POSTGRES_PASSWORD", "")
    auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
    return f"postgresql://{auth}@{r.text('POSTGRES_HOST')}:{port}/{quote(r.text('POSTGRES_DB'), safe='')}"


def _stripe_key(r: _Reader) -> str:
    key = r.text("STRIPE_SECRET_KEY")
    if key and r.command == OPERATOR and not key.startswith(("sk_test_", "sk_live_", "rk_test_", "rk_live_")):
        r.problems.append("STRIPE_SECRET_KEY must start with sk_test_, sk_live_, rk_test_ or rk_live_")
    return key


API_AUTH_MODES = ("token", "serviceaccount", "none")


def _api_token(r: _Reader, mode: str) -> str:
    token = r.text("KUBEPAY_API_TOKEN")
    if r.command == API and mode == "token":
        if not token:
            r.problems.append("KUBEPAY_API_TOKEN is required but not set (KUBEPAY_API_AUTH is token)")
        elif len(token) < 16:
            r.problems.append("KUBEPAY_API_TOKEN must be at least 16 characters")
    return token


def _api_base(r: _Reader) -> str | None:
    base = r.text("KUBEPAY_STRIPE_API_BASE") or None
    if base is not None and not base.startswith(("http://", "https://")):
        r.problems.append("KUBEPAY_STRIPE_API_BASE must be an http(s) URL")
    return base


def load(env: Mapping[str, str] | None = None, command: str = OPERATOR) -> Settings:
    """Read the settings `command` needs; ConfigError lists every problem found."""
    r = _Reader(os.environ if env is None else env, command)
    pod_namespace = r.env.get("POD_NAMESPACE", "").strip() or "default"
    namespace = r.text("KUBEPAY_NAMESPACE") or None
    settings = Settings(
        database_url=_database_url(r),
        kafka_brokers=r.text("KAFKA_BROKER_URL"),
        stripe_secret_key=_stripe_key(r),
        stripe_webhook_secret=r.text("STRIPE_WEBHOOK_SECRET"),
        stripe_api_base=_api_base(r),
        environment=r.text("SRV_ENV"),
        http_port=r.integer("PAYMENT_HTTP_PORT"),
        api_port=r.integer("KUBEPAY_API_PORT"),
        health_port=r.integer("KUBEPAY_HEALTH_PORT"),
        metrics_port=r.integer("KUBEPAY_METRICS_PORT", default=METRICS_PORTS.get(command, "0")),
        admission_port=r.integer("KUBEPAY_ADMISSION_PORT"),
        admission_cert_dir=r.text("KUBEPAY_ADMISSION_CERT_DIR"),
        kafka_idempotence=r.flag("KUBEPAY_KAFKA_IDEMPOTENCE"),
        kafka_acks=r.choice("KUBEPAY_KAFKA_ACKS", ("all", "1", "0")),
        topics=Topics(**{name: r.text(f"KUBEPAY_TOPIC_{name.upper()}") for name in _TOPIC_DEFAULTS}),
        namespace=namespace,
        stripe_rate_limit=r.number("KUBEPAY_STRIPE_RATE_LIMIT"),
        stripe_background_share=r.share("KUBEPAY_STRIPE_BACKGROUND_SHARE"),
        resync_seconds=r.number("KUBEPAY_RESYNC_SECONDS"),
        retain_finished=r.duration("KUBEPAY_RETAIN_FINISHED"),
        migrate_on_start=r.flag("KUBEPAY_MIGRATE_ON_START"),
        log_level=r.choice("KUBEPAY_LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR"), upper=True),
        source=r.text("KUBEPAY_EVENT_SOURCE"),
        api_auth=(api_auth := r.choice("KUBEPAY_API_AUTH", API_AUTH_MODES, lower=True)),
        api_token=_api_token(r, api_auth),
        api_namespace=r.text("KUBEPAY_API_NAMESPACE", pod_namespace),
        api_wait_seconds=r.number("KUBEPAY_API_WAIT_SECONDS"),
        orders_namespace=r.text("KUBEPAY_ORDERS_NAMESPACE", namespace or pod_namespace),
        orders_group=r.text("KUBEPAY_ORDERS_GROUP"),
        orders_session_timeout_ms=r.integer("KUBEPAY_ORDERS_SESSION_TIMEOUT_MS", 100, 3_600_000),
        orders_heartbeat_ms=r.integer("KUBEPAY_ORDERS_HEARTBEAT_MS", 10, 3_600_000),
        orders_consumer_in_operator=r.flag("KUBEPAY_ORDERS_CONSUMER"),
        peering_name=r.text("KUBEPAY_PEERING_NAME") or None,
        peering_lifetime=r.integer("KUBEPAY_PEERING_LIFETIME", 5, 3600),
        workers=r.integer("KUBEPAY_WORKERS", 1, 1000),
        stuck_seconds=r.number("KUBEPAY_STUCK_SECONDS"),
    )
    if r.problems:
        raise ConfigError(r.problems)
    return settings
