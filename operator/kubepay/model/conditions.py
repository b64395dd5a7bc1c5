"""Kubernetes-style conditions (Ready, Synced, Failed) kept as a list keyed by type."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def sentence(text: str) -> str:
    """Condition and event messages read as sentences: capitalized, ending with a full stop (error texts from
    Stripe or Kubernetes may lack both)."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else f"{text}."


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: list[dict[str, Any]] | None,
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int | None = None,
) -> list[dict[str, Any]]:
    """Return a new list with one condition set; lastTransitionTime moves only when the status flips."""
    word = "True" if status else "False"
    result: list[dict[str, Any]] = []
    previous: dict[str, Any] | None = None
    for condition in conditions or []:
        if condition.get("type") == type_:
            previous = condition
        else:
            result.append(dict(condition))
    changed = previous is None or previous.get("status") != word
    updated: dict[str, Any] = {
        "type": type_,
        "status": word,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now_iso() if changed or previous is None else previous["lastTransitionTime"],
    }
    if generation is not None:
        updated["observedGeneration"] = generation
    result.append(updated)
    return sorted(result, key=lambda c: str(c["type"]))


def get_condition(conditions: list[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    for condition in conditions or []:
        if condition.get("type") == type_:
            return condition
    return None


def observed(conditions: list[dict[str, Any]] | None, generation: int | None) -> dict[str, Any]:
    """Status fields saying the controller acted on `generation`: every condition is stamped with it.

    `kubectl wait --for=condition=...` ignores a condition whose observedGeneration is behind
    metadata.generation, so a condition left at an old generation would make it wait forever.
    """
    stamped = [{**c, "observedGeneration": generation} if generation is not None else dict(c)
               for c in conditions or []]
    return {"observedGeneration": generation, "conditions": stamped}

