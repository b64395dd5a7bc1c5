from decimal import Decimal

import pytest

from kubepay.model.money import MoneyError, check_amount, currency_code, to_decimal_string, to_minor


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


# Stripe's "Supported currencies" page, case by case: what a major amount becomes, and which minor amounts
# Stripe's API accepts for a PaymentIntent (and refunds and captures alike).
@pytest.mark.parametrize(("currency", "major", "minor", "refused"), [
    ("usd", "10.99", 1099, None),         # ordinary two-decimal currency: any amount in cents
    ("jpy", "500", 500, None),            # ordinary zero-decimal currency: the amount is the yen
    ("kwd", "5.120", 5120, 5124),         # three-decimal: the last digit must be 0 ...
    ("bhd", "1.010", 1010, 1011),
    ("jod", "2.500", 2500, 2505),
    ("omr", "0.990", 990, 999),
    ("tnd", "12.340", 12340, 12341),
    ("isk", "5", 500, 550),               # written with two decimals that are always 00: 5 ISK is 500
    ("ugx", "5000", 500000, 500050),      # the same, although Stripe also lists UGX as zero-decimal
    ("huf", "10.45", 1045, None),         # two decimals for charges; only payouts need multiples of 100
    ("twd", "800.45", 80045, None),
])
def test_stripes_special_currencies(currency: str, major: str, minor: int, refused: int | None) -> None:
    assert to_minor(major, currency) == minor
    check_amount(minor, currency)
    if refused is not None:
        with pytest.raises(MoneyError, match=f"must be a multiple of (10|100) for {currency.upper()}"):
            check_amount(refused, currency)


def test_whole_unit_currencies_refuse_fractions_with_the_rule() -> None:
    with pytest.raises(MoneyError) as raised:
        check_amount(to_minor("5.50", "isk"), "ISK")
    assert str(raised.value) == ("must be a multiple of 100 for ISK: Stripe takes ISK in whole units written with two "
                                 "decimals that are always 00 (5 ISK is 500)")
    with pytest.raises(MoneyError, match=r"last digit .* to be 0 \(5.120 KWD is 5120\)"):
        check_amount(to_minor("5.124", "kwd"), "kwd")


@pytest.mark.parametrize(("raw", "code"), [("usd", "usd"), ("USD", "usd"), ("Eur", "eur")])
def test_currency_codes(raw: str, code: str) -> None:
    assert currency_code(raw) == code


@pytest.mark.parametrize("raw", ["usd\n", " usd", "usd ", "us", "usdd", "u$d", "", None, 840, "ÜSD"])
def test_currency_codes_are_exactly_three_letters(raw: object) -> None:
    with pytest.raises(MoneyError, match="three-letter ISO 4217"):
        currency_code(raw)


@pytest.mark.parametrize("amount", ["1E+1000000", "9" * 5000, "100000000000000000", "-1e40"])
def test_absurdly_large_amounts_are_refused_before_any_arithmetic(amount: str) -> None:
    with pytest.raises(MoneyError, match="too large: more than 18 digits in USD's minor units"):
        to_minor(amount, "usd")
