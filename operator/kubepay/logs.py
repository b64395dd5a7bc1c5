"""Structured JSON logs with secrets masked before they reach any handler."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from kubepay import __version__, config
from kubepay.stripe.api_version import STRIPE_API_VERSION

log = logging.getLogger("kubepay")

SECRET_PATTERNS = re.compile(
    r"(sk|rk)_(test|live)_[A-Za-z0-9]+|whsec_[A-Za-z0-9+/=]+|pi_[A-Za-z0-9]+_secret_[A-Za-z0-9]+"
)


def redact(text: str) -> str:
    return SECRET_PATTERNS.sub("[REDACTED]", text)


class Redactor(logging.Filter):
    """Masks Stripe keys, webhook secrets and client secrets in the rendered message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def about(meta: Mapping[str, Any], kind: str = "PaymentIntent", event_id: str | None = None) -> dict[str, Any]:
    """`extra` for a line about one resource: the `object` field (namespace, name, uid) kopf's lines carry.

    kopf's JSON formatter renders the `k8s_ref` record attribute as `object`.
    """
    fields: dict[str, Any] = {"k8s_ref": {
        "apiVersion": "kubepay.io/v1alpha1", "kind": kind, "namespace": meta.get("namespace"),
        "name": meta.get("name"), "uid": meta.get("uid")}}
    if event_id:
        fields["stripe_event_id"] = event_id
    return fields


class Throttle(logging.Filter):
    """Client libraries that retry on their own log every try: aiokafka about 30 lines a second while Kafka
    refuses connections. Lets one line per logger and message (digits aside) through every `seconds`; the
    next one that passes says how many were dropped meanwhile."""

    MAX_KEYS = 1000

    def __init__(self, prefixes: tuple[str, ...], seconds: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._prefixes, self._seconds, self._clock = prefixes, seconds, clock
        self._seen: dict[str, tuple[float, int]] = {}  # key -> (when one last passed, dropped since)

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self._prefixes):
            return True
        key = record.name + ":" + re.sub(r"[0-9]+", "#", str(record.msg))
        now = self._clock()
        passed, dropped = self._seen.get(key, (now - self._seconds, 0))
        if now - passed < self._seconds:
            self._seen[key] = (passed, dropped + 1)
            return False
        if len(self._seen) >= self.MAX_KEYS:
            self._seen.clear()
        self._seen[key] = (now, 0)
        if dropped:
            record.msg = f"{record.getMessage()} ({dropped} more like this in the last {now - passed:.0f}s)"
            record.args = None
        return True


def setup(level: str = "INFO") -> None:
    kopf.configure(log_format=kopf.LogFormat.JSON, verbose=level == "DEBUG")
    root = logging.getLogger()
    root.setLevel(level)
    for handler in root.handlers:
        handler.addFilter(Redactor())
        handler.addFilter(Throttle(("aiokafka", "asyncpg")))
        handler.addFilter(QuietSuccesses())
    for noisy in ("aiokafka", "kubernetes_asyncio", "stripe"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class QuietSuccesses(logging.Filter):
    """kopf logs `Handler '...' succeeded.` for each start-up step and admission review: routine, so DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("kopf") and record.levelno == logging.INFO and \
                str(record.msg).endswith(" succeeded."):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def features(command: str, settings: config.Settings) -> list[str]:
    """What a process does beyond its basic job, for its start-up line."""
    s = settings
    found = [f"metrics:{s.metrics_port}"] if s.metrics_port else []
    if s.migrate_on_start:
        found.append("migrate-on-start")
    if command == config.OPERATOR:
        found += [f"workers:{s.workers}", f"stripe-rate:{s.stripe_rate_limit:g}/s",
                  f"kafka-acks:{s.kafka_acks}", "kafka-idempotence" if s.kafka_idempotence else "no-kafka-idempotence"]
        found += [f"peering:{s.peering_name}"] if s.peering_name else []
        found += [f"admission:{s.admission_port}"] if s.admission_port else []
        found += ["orders-consumer"] if s.orders_consumer_in_operator else []
        found += [f"retention:{s.retain_finished:.0f}s"] if s.retain_finished else []
    elif command == config.API:
        found.append(f"auth:{s.api_auth}")
    return found


def started(command: str, settings: config.Settings, port: int | None = None) -> None:
    """The one start-up line: version, Stripe API version, watched namespaces and features, as fields too."""
    own = {config.API: settings.api_namespace, config.ORDERS: settings.orders_namespace}
    namespaces = [own[command]] if command in own else [settings.namespace] if settings.namespace else ["*"]
    found = features(command, settings)
    where = f" on port {port}" if port else ""
    log.info("kubepay %s %s started%s: Stripe API %s, namespaces %s, features %s", command, __version__, where,
             STRIPE_API_VERSION, ",".join(namespaces), ",".join(found) or "none",
             extra={"version": __version__, "stripe_api_version": STRIPE_API_VERSION, "namespaces": namespaces,
                    "features": found, "command": command})
