"""Structured JSON logs with secrets masked before they reach any handler."""

from __future__ import annotations

import logging
import re

import kopf

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


def setup(level: str = "INFO") -> None:
    kopf.configure(log_format=kopf.LogFormat.JSON, verbose=level == "DEBUG")
    root = logging.getLogger()
    root.setLevel(level)
    for handler in root.handlers:
        handler.addFilter(Redactor())
    for noisy in ("aiokafka", "kubernetes_asyncio", "stripe"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
