"""The warnings of the request being served, answered as ``Warning`` headers (each request runs in its own task,
hence its own context)."""

from __future__ import annotations

import contextvars
from collections.abc import Iterable

_WARNINGS: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("_WARNINGS", default=None)


def collect() -> None:
    """Start collecting the warnings of the request this task serves."""
    _WARNINGS.set([])


def warn(messages: Iterable[str]) -> None:
    warnings = _WARNINGS.get()
    if warnings is not None:
        warnings.extend(messages)


def collected() -> list[str]:
    return list(_WARNINGS.get() or ())
