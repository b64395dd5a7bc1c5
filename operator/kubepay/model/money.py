"""Currencies and minor-unit money: decimal strings in, integers out, never floats; Stripe's amount rules.

The one place that knows how Stripe wants an amount written. Everything that lets an amount through
(CRD admission, the controller, the payments API and the orders consumer) asks `check_amount` before
Stripe sees it, and `currency_code` before a currency becomes a resource.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation


class MoneyError(ValueError):
    """An amount or currency Stripe would refuse or that cannot be represented exactly; the text says why."""


@dataclass(frozen=True)
class Rule:
    """How Stripe's API writes amounts in one currency (PaymentIntents, captures and refunds alike)."""

    exponent: int  # the API's `amount` is the decimal amount times 10**exponent
    multiple: int = 1  # ... and must be a multiple of this
    why: str = ""


# Stripe, "Supported currencies" (https://docs.stripe.com/currencies): "All API requests expect amount values
# in the currency's minor unit"; two decimals unless listed below.
#   * Zero-decimal currencies: "the charge and the amount are the same" (500 is 500 JPY).
#   * Three-decimal currencies (BHD, JOD, KWD, OMR, TND): "these API calls require the least-significant (last)
#     digit to be 0" (5.124 KWD must be sent as 5120 or 5130).
#   * Special cases: ISK and UGX "transitioned to a zero-decimal currency, but backward compatibility requires
#     you to represent it as a two-decimal value, where the decimal amount is always 00" (5 ISK is 500; 550 is
#     refused). UGX still appears in Stripe's zero-decimal list too; the special case is what its API applies.
#     HUF and TWD: "Stripe treats HUF [TWD] as a zero-decimal currency for payouts, even though you can charge
#     two-decimal amounts": charges and refunds are ordinary two-decimal amounts (10.45 HUF is 1045), and only
#     manual payouts, which kubepay never makes, need multiples of 100.
_WHOLE_UNITS = "Stripe takes {code} in whole units written with two decimals that are always 00 (5 {code} is 500)"
_LAST_DIGIT_0 = "Stripe needs the last digit of a three-decimal amount to be 0 (5.120 {code} is 5120)"
_RULES: dict[str, Rule] = {
    **{code: Rule(0) for code in ("bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "vnd",
                                  "vuv", "xaf", "xof", "xpf")},
    **{code: Rule(3, 10, _LAST_DIGIT_0) for code in ("bhd", "jod", "kwd", "omr", "tnd")},
    **{code: Rule(2, 100, _WHOLE_UNITS) for code in ("isk", "ugx")},
}
_TWO_DECIMALS = Rule(2)
MAX_DIGITS = 18  # minor units fit a PostgreSQL bigint
_CODE = re.compile(r"[A-Za-z]{3}")


def _rule(currency: str) -> Rule:
    return _RULES.get(currency.lower(), _TWO_DECIMALS)


def exponent(currency: str) -> int:
    """Number of minor-unit digits Stripe's API uses for a currency (JPY 0, USD 2, ISK 2, KWD 3)."""
    return _rule(currency).exponent


def currency_code(raw: object) -> str:
    """A three-letter ISO 4217 code, exactly (no spaces, no trailing newline), lower-cased as Stripe wants it."""
    if not isinstance(raw, str) or not _CODE.fullmatch(raw):
        raise MoneyError("must be a three-letter ISO 4217 code such as USD")
    return raw.lower()


def check_amount(minor: int, currency: str) -> None:
    """Refuse (MoneyError) a minor-unit amount Stripe's API would refuse for this currency."""
    wanted = _rule(currency)
    if minor % wanted.multiple:
        code = currency.upper()
        raise MoneyError(f"must be a multiple of {wanted.multiple} for {code}: {wanted.why.format(code=code)}")


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
