"""The k8s events kubepay posts: reported by `kubepay-controller`, every message a sentence."""

from __future__ import annotations

import logging
import socket
from typing import Any

import kopf

from kubepay.model.conditions import sentence

REPORTING_COMPONENT = "kubepay-controller"


def configure(settings: kopf.OperatorSettings) -> None:
    """`kubectl describe` shows the component in the events' From column; the instance is the pod's name."""
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = REPORTING_COMPONENT
    settings.posting.reporting_instance = socket.gethostname()[:128]


def info(body: Any, reason: str, message: str) -> None:
    kopf.info(body, reason=reason, message=sentence(message))


def warn(body: Any, reason: str, message: str) -> None:
    kopf.warn(body, reason=reason, message=sentence(message))


def post(body: Any, warning: bool, reason: str, message: str) -> None:
    (warn if warning else info)(body, reason, message)
