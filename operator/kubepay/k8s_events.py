"""The k8s events kubepay posts: reported by `kubepay-controller`, every message a sentence."""

from __future__ import annotations

import logging
import socket
from typing import Any

import kopf

REPORTING_COMPONENT = "kubepay-controller"


def configure(settings: kopf.OperatorSettings) -> None:
    """`kubectl describe` shows the component in the events' From column; the instance is the pod's name."""
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = REPORTING_COMPONENT
    settings.posting.reporting_instance = socket.gethostname()[:128]


def sentence(text: str) -> str:
    """Capitalized, ending with a full stop (error texts from Stripe or Kubernetes may lack both)."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else f"{text}."


def info(body: Any, reason: str, message: str) -> None:
    kopf.info(body, reason=reason, message=sentence(message))


def warn(body: Any, reason: str, message: str) -> None:
    kopf.warn(body, reason=reason, message=sentence(message))


def post(body: Any, warning: bool, reason: str, message: str) -> None:
    (warn if warning else info)(body, reason, message)
