"""Minor-unit money arithmetic: decimal strings in, integers out, never floats."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

# ISO 4217 exponents that differ from the default of 2 (Stripe's zero- and three-decimal currencies).
_ZERO_DECIMAL = frozenset(
    ["bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"]
)
_THREE_DECIMAL = frozenset(["bhd", "jod", "kwd", "omr", "tnd"])
MAX_DIGITS = 18  # minor units fit a PostgreSQL bigint


class MoneyError(ValueError):
    """An amount that cannot be represented exactly in the currency's minor units."""


def exponent(currency: str) -> int:
    """Number of minor-unit digits of a currency (JPY 0, USD 2, KWD 3)."""
    code = currency.lower()
    if code in _ZERO_DECIMAL:
        return 0
    if code in _THREE_DECIMAL:
        return 3
    return 2


def to_minor(amount: str | Decimal | int, currency: str) -> int:
    """Convert a decimal amount ("19.99") to integer minor units (1999), refusing lost precision."""
    if isinstance(amount, float):
        raise MoneyError("amounts must be decimal strings, not floats")
    try:
        value = Decimal(str(amount).strip())
    except InvalidOperation as exc:
        raise MoneyError(f"amount {amount!r} is not a decimal number") from exc
    if not value.is_finite():
        raise MoneyError(f"amount {amount!r} is not a finite number")
    if value and value.adjusted() + exponent(currency) >= MAX_DIGITS:  # before scaling: 1E+1000000 overflows
        raise MoneyError(f"amount is too large: more than {MAX_DIGITS} digits in {currency.upper()}'s minor units")
    scaled = value.scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise MoneyError(
            f"amount {amount!r} has more than {exponent(currency)} decimal places for {currency.upper()}"
        )
    return int(scaled)


def to_decimal_string(minor: int, currency: str) -> str:
    """Render integer minor units as the decimal string the Go service used ("12.00")."""
    digits = exponent(currency)
    value = Decimal(minor).scaleb(-digits)
    return f"{value:.{digits}f}"
