"""Query parameters as the API server reads them."""

from __future__ import annotations

from collections.abc import Mapping


def is_true(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


def dry_run(params: Mapping[str, str]) -> bool:
    """``?dryRun=All`` (or a true value) on a create or a delete: answer as if, change nothing."""
    return is_true(params.get("dryRun")) or params.get("dryRun") == "All"
