"""Label values kubepay writes: always valid for the API server, stable, and traceable to the full value.

A label value is at most 63 characters of `[A-Za-z0-9_.-]`, starting and ending alphanumeric; a
resource name may be 253 characters and an order id anything. A value that does not fit keeps a
readable prefix plus a hash of the whole value (so two long values never share a label), and the
full value goes into an annotation under the same key.
"""

from __future__ import annotations

import hashlib
import re

MAX_VALUE = 63
HASH_CHARS = 10
PAYMENT_INTENT = "kubepay.io/payment-intent"  # label (maybe hashed) and annotation (the full name)
_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_NOT_ALLOWED = re.compile(r"[^-A-Za-z0-9_.]+")


def short_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()[:HASH_CHARS]


def is_label_value(text: str) -> bool:
    return len(text) <= MAX_VALUE and _VALUE.fullmatch(text) is not None


def label_value(text: str) -> str:
    """`text` itself when it is a valid label value; otherwise a readable prefix of it plus a hash of all of it."""
    if is_label_value(text):
        return text
    readable = _NOT_ALLOWED.sub("-", text)[: MAX_VALUE - HASH_CHARS - 1].strip("-_.")
    return f"{readable}-{short_hash(text)}" if readable else short_hash(text)


def naming(key: str, value: str) -> tuple[dict[str, str], dict[str, str]]:
    """(labels, annotations) that point at `value`: the label to select by, the annotation to read it whole."""
    return {key: label_value(value)}, {key: value}
