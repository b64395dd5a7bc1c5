from decimal import Decimal

import pytest

from kubepay.money import MoneyError, to_decimal_string, to_minor


@pytest.mark.parametrize(("amount", "currency", "minor"), [
    ("19.99", "usd", 1999), ("1200", "jpy", 1200), ("1.234", "kwd", 1234), ("0.29", "usd", 29),
    ("12", "USD", 1200), (Decimal("4.35"), "eur", 435), ("1.10", "usd", 110),
])
def test_decimal_strings_become_exact_minor_units(amount: str, currency: str, minor: int) -> None:
    assert to_minor(amount, currency) == minor


@pytest.mark.parametrize(("amount", "currency"), [("19.999", "usd"), ("1.5", "jpy"), ("abc", "usd"),
                                                  ("NaN", "usd"), ("1.2345", "kwd")])
def test_amounts_that_lose_precision_are_refused(amount: str, currency: str) -> None:
    with pytest.raises(MoneyError):
        to_minor(amount, currency)


def test_floats_are_refused() -> None:
    with pytest.raises(MoneyError, match="float"):
        to_minor(19.99, "usd")  # type: ignore[arg-type]


@pytest.mark.parametrize(("minor", "currency", "text"), [(1200, "usd", "12.00"), (1200, "jpy", "1200"),
                                                         (1234, "kwd", "1.234"), (5, "usd", "0.05")])
def test_minor_units_render_as_the_go_service_did(minor: int, currency: str, text: str) -> None:
    assert to_decimal_string(minor, currency) == text


@pytest.mark.parametrize("amount", ["1E+1000000", "9" * 5000, "100000000000000000", "-1e40"])
def test_absurdly_large_amounts_are_refused_before_any_arithmetic(amount: str) -> None:
    with pytest.raises(MoneyError, match="too large: more than 18 digits in USD's minor units"):
        to_minor(amount, "usd")
