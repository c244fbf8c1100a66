"""Money: exact integer micro-units (10⁻⁶ of the major unit) and ISO 4217 data.

The one money convention of centflow is an ``int`` of micro-units beside a
currency code. Nothing here accepts a float: amounts arrive as decimal text,
are parsed into micro-units, and leave as ``decimal.Decimal`` (DECIMAL(18,6)
in DuckDB, decimal128(18, 6) in Parquet). Minor-unit exponents come from the
maintained ``iso4217`` package, never a hand-typed table.
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import cache

import iso4217

from centflow.errors import InvalidEvent, invariant
from centflow.limits import AMOUNT_MICROS_MAX, MICROS_PER_UNIT

# At most 12 integer digits and 6 fractional digits; the schema uses the same
# rule (schemas/payment_event.schema.json). "> 0" is checked after parsing.
_AMOUNT_PATTERN = re.compile(r"([0-9]{1,12})(?:\.([0-9]{1,6}))?")

_FRACTION_SCALE = tuple(10 ** (6 - digits) for digits in range(7))

#: ISO 4217 codes whose minor unit is "N.A." (gold, SDR, test codes) settle
#: at the full micro-unit precision.
EXPONENT_NOT_APPLICABLE = 6


@cache
def currency_codes() -> frozenset[str]:
    """Every alphabetic ISO 4217 code the ``iso4217`` package knows."""
    return frozenset(currency.code for currency in iso4217.Currency)


def is_currency(code: str) -> bool:
    """True for an ISO 4217 alphabetic code.

    >>> is_currency("JPY"), is_currency("usd"), is_currency("XYZ")
    (True, False, False)
    """
    return code in currency_codes()


@cache
def minor_unit_exponent(currency: str) -> int:
    """Digits of the currency's minor unit (ISO 4217).

    >>> minor_unit_exponent("JPY"), minor_unit_exponent("USD"), minor_unit_exponent("BHD")
    (0, 2, 3)
    """
    invariant(is_currency(currency), f"not an ISO 4217 currency: {currency!r}")
    exponent = iso4217.Currency(currency).exponent
    return EXPONENT_NOT_APPLICABLE if exponent is None else int(exponent)


def parse_amount_micros(text: object) -> int:
    """Parse untrusted decimal text into micro-units; raise `InvalidEvent` if bad.

    >>> parse_amount_micros("0.10"), parse_amount_micros("12"), parse_amount_micros("0.000001")
    (100000, 12000000, 1)
    >>> parse_amount_micros(0.1)
    Traceback (most recent call last):
    ...
    centflow.errors.InvalidEvent: invalid_amount: amount must be a decimal string, got float 0.1
    """
    if not isinstance(text, str):
        raise InvalidEvent(
            "invalid_amount", f"amount must be a decimal string, got {type(text).__name__} {text!r}"
        )
    whole, dot, fraction = text.partition(".")
    if (
        text.isascii()
        and whole.isdigit()
        and len(whole) <= 12
        and (not dot or (fraction.isdigit() and len(fraction) <= 6))
    ):  # fast path; same rule as _AMOUNT_PATTERN
        micros = int(whole) * MICROS_PER_UNIT + (
            int(fraction) * _FRACTION_SCALE[len(fraction)] if dot else 0
        )
        if micros > 0:
            return micros
    match = _AMOUNT_PATTERN.fullmatch(text)
    if match is None:
        raise InvalidEvent(
            "invalid_amount",
            f"amount {text[:40]!r} is not a decimal with at most 12 integer and 6 fraction digits",
        )
    whole, fraction = match.group(1), match.group(2) or ""
    micros = int(whole) * MICROS_PER_UNIT + int(fraction.ljust(6, "0") or "0")
    if micros <= 0:
        raise InvalidEvent("invalid_amount", f"amount {text!r} must be greater than zero")
    invariant(micros <= AMOUNT_MICROS_MAX, "parsed amount %s exceeds DECIMAL(18,6)", micros)
    return micros


def micros_to_decimal(micros: int) -> Decimal:
    """Micro-units as an exact Decimal of the major unit.

    >>> micros_to_decimal(100000), micros_to_decimal(-1)
    (Decimal('0.100000'), Decimal('-0.000001'))
    """
    return Decimal(micros).scaleb(-6)


def format_amount(micros: int, currency: str) -> str:
    """Human text at the currency's minor unit, or finer when sub-minor.

    >>> format_amount(1234500000, "USD"), format_amount(5000, "USD"), format_amount(7000000, "JPY")
    ('1,234.50 USD', '0.005 USD', '7 JPY')
    """
    exponent = minor_unit_exponent(currency)
    value = micros_to_decimal(micros).normalize()
    places = max(exponent, -value.as_tuple().exponent if value.as_tuple().exponent < 0 else 0)  # type: ignore[operator]
    return f"{value:,.{places}f} {currency}"


@cache
def minor_unit_step(currency: str) -> int:
    """Micro-units in one minor unit of `currency`.

    >>> minor_unit_step("USD"), minor_unit_step("JPY"), minor_unit_step("BHD")
    (10000, 1000000, 1000)
    """
    return 10 ** (6 - minor_unit_exponent(currency))


def round_to_minor_unit(micros: int, currency: str) -> tuple[int, int]:
    """Split micro-units into (payable at the minor unit, sub-minor remainder).

    Rounds toward zero, so the remainder keeps the sign of the amount and the
    two parts always sum to the whole.

    >>> round_to_minor_unit(1_234_567, "USD"), round_to_minor_unit(-1_234_567, "USD")
    ((1230000, 4567), (-1230000, -4567))
    """
    step = minor_unit_step(currency)
    payable = abs(micros) // step * step * (1 if micros >= 0 else -1)
    remainder = micros - payable
    invariant(payable + remainder == micros, "rounding lost money")
    invariant(abs(remainder) < step, "remainder not below one minor unit")
    return payable, remainder


def allocate_largest_remainder(total: int, weights: list[int]) -> list[int]:
    """Split `total` micro-units in proportion to `weights`; parts sum to `total`.

    Largest-remainder (Hamilton) allocation: each part gets the floor of its
    exact share, then the leftover units go one each to the largest fractional
    remainders, ties to the earliest weight. Deterministic.

    >>> allocate_largest_remainder(100, [1, 1, 1])
    [34, 33, 33]
    >>> allocate_largest_remainder(1, [5000, 5000])
    [1, 0]
    """
    invariant(len(weights) > 0, "allocation needs at least one weight")
    invariant(all(weight >= 0 for weight in weights), f"negative weight in {weights}")
    weight_total = sum(weights)
    invariant(weight_total > 0, "allocation weights sum to zero")
    sign = -1 if total < 0 else 1
    magnitude = abs(total)
    shares = [magnitude * weight // weight_total for weight in weights]
    remainders = [magnitude * weight % weight_total for weight in weights]
    leftover = magnitude - sum(shares)
    order = sorted(range(len(weights)), key=lambda index: (-remainders[index], index))
    for index in order[:leftover]:
        shares[index] += 1
    parts = [sign * share for share in shares]
    invariant(sum(parts) == total, "allocation of %s summed to %s", total, parts)
    return parts
