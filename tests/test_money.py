"""Property tests of `centflow.money.amounts`, the one money convention (int micro-units).

What these tests prove:

* `parse_amount_micros` accepts exactly the decimal strings DESIGN.md allows
  (``[0-9]{1,12}(.[0-9]{1,6})?``, ASCII digits only, value > 0), returns their
  exact micro-units, and rejects everything else (floats, ints, None, exponents,
  signs, spaces, non-ASCII digits) with the stable reason ``invalid_amount``;
* `allocate_largest_remainder` conserves the total, keeps each part within one
  unit of its exact share, gives the leftover units to the largest fractional
  remainders (ties to the earliest weight), and is deterministic;
* `round_to_minor_unit` splits an amount into a payable part at the ISO 4217
  minor unit and a remainder below one minor unit that sum to the whole;
* `minor_unit_exponent` follows ISO 4217 (JPY 0, USD 2, BHD 3, CLF 4, N.A. 6);
* `sinks.arrow.money_array` writes decimal128(18, 6) exactly, extremes included.
"""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction

import pyarrow as pa
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from centflow.errors import InvalidEvent, InvariantViolation
from centflow.limits import AMOUNT_MICROS_MAX
from centflow.money.amounts import (
    allocate_largest_remainder,
    currency_codes,
    micros_to_decimal,
    minor_unit_exponent,
    parse_amount_micros,
    round_to_minor_unit,
)
from sinks.arrow import MONEY, money_array

# The rule of DESIGN.md's wire format, written independently of centflow.money.amounts.
# `fullmatch` (not `$`, which also matches before a trailing newline); `[0-9]`
# is ASCII only, unlike `\d`.
AMOUNT_RULE = re.compile(r"[0-9]{1,12}(\.[0-9]{1,6})?")
LARGEST_AMOUNT = "999999999999.999999"
CURRENCIES = sorted(currency_codes())
FAST = settings(max_examples=200, deadline=None)


def accepted_value(text: str) -> int | None:
    """The oracle: micro-units if `text` is a valid amount, else None."""
    if AMOUNT_RULE.fullmatch(text) is None:
        return None
    micros = int(Decimal(text) * 10**6)
    return micros if micros > 0 else None


# Strings near the rule: digits, dots and the usual suspects, so that most of
# them are borderline rather than obviously invalid.
near_amounts = st.text(
    alphabet=st.sampled_from("0123456789" * 4 + ".+-eE _\n\t,٣０"), min_size=0, max_size=22
)
valid_amounts = st.from_regex(AMOUNT_RULE, fullmatch=True)


@FAST
@given(st.one_of(valid_amounts, near_amounts, st.text(max_size=24)))
@example("0.000001")
@example(LARGEST_AMOUNT)
@example("000000000001")
@example("0")
@example("0.000000")
@example("1.")
@example(".5")
@example("1.0000001")
@example("1000000000000")
@example("1\n")
@example("١")  # ARABIC-INDIC DIGIT ONE: str.isdigit() says yes, the rule says no
@example("1.٥")
@example("²")  # SUPERSCRIPT TWO: isdigit() but not a decimal digit
def test_parse_amount_accepts_exactly_the_rule(text: str) -> None:
    expected = accepted_value(text)
    if expected is None:
        with pytest.raises(InvalidEvent) as error:
            parse_amount_micros(text)
        assert error.value.reason == "invalid_amount"
    else:
        assert parse_amount_micros(text) == expected
        assert micros_to_decimal(expected) == Decimal(text)


@FAST
@given(valid_amounts)
def test_every_valid_amount_is_exact(text: str) -> None:
    assume(Decimal(text) > 0)
    micros = parse_amount_micros(text)
    assert micros == int(Decimal(text) * 10**6)
    assert 1 <= micros <= AMOUNT_MICROS_MAX


def test_parse_amount_extremes() -> None:
    assert parse_amount_micros(LARGEST_AMOUNT) == AMOUNT_MICROS_MAX
    assert parse_amount_micros("0.000001") == 1
    assert parse_amount_micros("0.1") == parse_amount_micros("0.100000") == 100_000
    assert parse_amount_micros("12") == 12_000_000


@pytest.mark.parametrize(
    "value",
    [
        0.1,
        1.0,
        1,
        0,
        10**6,
        None,
        True,
        Decimal("1.5"),
        b"1.5",
        ["1"],
        {"amount": "1"},
        "1e5",
        "1E5",
        "+1",
        "-1",
        " 1",
        "1 ",
        "1,5",
        "1_000",
        "0x10",
        "",
        ".",
        "inf",
        "NaN",
        "１",
        "٣",
        "1.٥",
        "0",
        "0.0",
        "-0.000001",
        "1000000000000",
        "1.1234567",
    ],
    ids=repr,
)
def test_parse_amount_rejects(value: object) -> None:
    with pytest.raises(InvalidEvent) as error:
        parse_amount_micros(value)
    assert error.value.reason == "invalid_amount"


@FAST
@given(
    total=st.integers(-AMOUNT_MICROS_MAX, AMOUNT_MICROS_MAX),
    weights=st.lists(st.integers(0, 10_000), min_size=1, max_size=12).filter(lambda w: sum(w) > 0),
)
@example(total=1, weights=[5000, 5000])  # a split of one micro-unit
@example(total=-1, weights=[5000, 5000])
@example(total=100, weights=[1, 1, 1])
@example(total=AMOUNT_MICROS_MAX, weights=[3333, 3333, 3334])
@example(total=-AMOUNT_MICROS_MAX, weights=[1, 0, 2])
@example(total=0, weights=[7, 3])
@example(total=7, weights=[0, 0, 1])
def test_allocate_largest_remainder(total: int, weights: list[int]) -> None:
    parts = allocate_largest_remainder(total, list(weights))
    assert len(parts) == len(weights)
    assert sum(parts) == total
    weight_total = sum(weights)
    magnitude = abs(total)
    sign = -1 if total < 0 else 1
    shares = [Fraction(magnitude * weight, weight_total) for weight in weights]
    got = [part * sign for part in parts]  # magnitudes
    for share, part, weight in zip(shares, got, weights, strict=True):
        assert share.__floor__() <= part <= share.__ceil__()  # within one unit of the exact share
        assert abs(part - share) < 1
        if weight == 0:
            assert part == 0
    # Hamilton: a part rounded up has a fractional remainder at least as large
    # as any part rounded down; on a tie, the earlier weight is the one rounded up.
    up = [
        index
        for index, (share, part) in enumerate(zip(shares, got, strict=True))
        if part > share.__floor__()
    ]
    down = [index for index in range(len(weights)) if index not in up]
    fraction = [share - share.__floor__() for share in shares]
    for winner in up:
        for loser in down:
            assert fraction[winner] > fraction[loser] or (
                fraction[winner] == fraction[loser] and winner < loser
            )
    # Deterministic, and the caller's list is not changed.
    copy = list(weights)
    assert allocate_largest_remainder(total, copy) == parts
    assert copy == weights


def test_allocate_pinned() -> None:
    assert allocate_largest_remainder(100, [1, 1, 1]) == [34, 33, 33]
    assert allocate_largest_remainder(1, [5000, 5000]) == [1, 0]
    assert allocate_largest_remainder(-1, [5000, 5000]) == [-1, 0]
    assert allocate_largest_remainder(10, [1, 2, 3, 4]) == [1, 2, 3, 4]
    assert allocate_largest_remainder(5, [1, 3]) == [1, 4]


@pytest.mark.parametrize("weights", [[], [-1, 2], [0, 0]])
def test_allocate_rejects_impossible_weights(weights: list[int]) -> None:
    with pytest.raises(InvariantViolation):
        allocate_largest_remainder(10, weights)


@FAST
@given(
    micros=st.one_of(
        st.integers(-AMOUNT_MICROS_MAX, AMOUNT_MICROS_MAX), st.integers(-10_000, 10_000)
    ),
    currency=st.sampled_from(CURRENCIES),
)
@example(micros=1_234_567, currency="JPY")  # 0 decimals
@example(micros=1_234_567, currency="BHD")  # 3 decimals
@example(micros=1_234_567, currency="USD")
@example(micros=-1_234_567, currency="USD")
@example(micros=AMOUNT_MICROS_MAX, currency="USD")  # the largest amount
@example(micros=AMOUNT_MICROS_MAX, currency="JPY")
@example(micros=-AMOUNT_MICROS_MAX, currency="BHD")
@example(micros=1, currency="USD")  # one micro-unit
@example(micros=1, currency="JPY")
@example(micros=-1, currency="BHD")
@example(micros=0, currency="EUR")
@example(micros=999_999, currency="CLF")
@example(micros=123, currency="XAU")  # minor unit N.A.: the full micro precision
def test_round_to_minor_unit(micros: int, currency: str) -> None:
    payable, remainder = round_to_minor_unit(micros, currency)
    step = 10 ** (6 - minor_unit_exponent(currency))
    assert isinstance(payable, int) and isinstance(remainder, int)
    assert payable + remainder == micros
    assert payable % step == 0
    assert abs(remainder) < step
    # toward zero: neither part has the opposite sign of the whole
    assert abs(payable) <= abs(micros)
    assert payable * micros >= 0 and remainder * micros >= 0


def test_round_to_minor_unit_pinned() -> None:
    assert round_to_minor_unit(1_234_567, "JPY") == (1_000_000, 234_567)
    assert round_to_minor_unit(1_234_567, "BHD") == (1_234_000, 567)
    assert round_to_minor_unit(1_234_567, "USD") == (1_230_000, 4_567)
    assert round_to_minor_unit(-1_234_567, "USD") == (-1_230_000, -4_567)
    assert round_to_minor_unit(1, "USD") == (0, 1)
    assert round_to_minor_unit(AMOUNT_MICROS_MAX, "USD") == (AMOUNT_MICROS_MAX - 9_999, 9_999)
    assert round_to_minor_unit(1_664_900, "BHD") == (1_664_000, 900)


@pytest.mark.parametrize(
    ("currency", "exponent"),
    [
        ("JPY", 0),
        ("KRW", 0),
        ("USD", 2),
        ("EUR", 2),
        ("BHD", 3),
        ("KWD", 3),
        ("CLF", 4),
        ("XAU", 6),
    ],
)
def test_minor_unit_exponent(currency: str, exponent: int) -> None:
    assert minor_unit_exponent(currency) == exponent


def test_every_exponent_fits_micro_units() -> None:
    """A minor unit finer than a micro-unit could not be represented at all."""
    assert len(CURRENCIES) > 150
    assert all(0 <= minor_unit_exponent(code) <= 6 for code in CURRENCIES)


def test_minor_unit_exponent_rejects_non_currencies() -> None:
    for code in ("usd", "XYZ", ""):
        with pytest.raises(InvariantViolation):
            minor_unit_exponent(code)


EXTREMES = [AMOUNT_MICROS_MAX, -AMOUNT_MICROS_MAX, 1, -1, 0, 2**63 // 10**6, 10**17]


def test_money_array_extremes() -> None:
    array = money_array(EXTREMES)
    assert array.type == MONEY == pa.decimal128(18, 6)
    array.validate(full=True)
    assert array.to_pylist() == [Decimal(value).scaleb(-6) for value in EXTREMES]
    assert array.to_pylist()[0] == Decimal("999999999999.999999")
    assert array.to_pylist()[1] == Decimal("-999999999999.999999")
    assert array.to_pylist()[2] == Decimal("0.000001")
    assert array.null_count == 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-AMOUNT_MICROS_MAX, AMOUNT_MICROS_MAX), max_size=40))
@example(EXTREMES)
@example([])
def test_money_array_matches_pyarrow(micros: list[int]) -> None:
    """The hand-built buffers equal what pyarrow builds from exact Decimals."""
    array = money_array(micros)
    reference = pa.array([micros_to_decimal(value) for value in micros], type=MONEY)
    assert array.equals(reference)
    assert [int(value.scaleb(6)) for value in array.to_pylist()] == micros


@settings(max_examples=60, deadline=None)
@given(
    ids=st.lists(st.text("0123456789abcdef", min_size=1, max_size=12), min_size=1, max_size=8),
    even=st.booleans(),
    skip=st.integers(0, 2),
    picks=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 1_200_000)), max_size=40),
)
def test_entry_ids_are_the_batch_id_and_the_entry_number_on_every_path(ids, even, skip, picks):
    """The raw-bytes path (batch ids of one width, entry numbers below a million) and
    Arrow's (any other) give ``batch_id + ":" + the number, six digits at least``; a
    sliced array (an offset into its buffers) as well."""
    import numpy as np

    from centflow.money.ledger import entry_ids

    if even:
        ids = [text.ljust(12, "0") for text in ids]
    array = pa.array(["x" * 5] * skip + ids, pa.string()).slice(skip)
    rows = np.array([row % len(ids) for row, _ in picks], np.int64)
    sequence = np.array([number for _, number in picks], np.int64)
    entries, batches = entry_ids(array, rows, sequence)
    assert batches.to_pylist() == [ids[row] for row in rows.tolist()]
    expected = [
        f"{ids[row]}:{number:06d}"
        for row, number in zip(rows.tolist(), sequence.tolist(), strict=True)
    ]
    assert entries.to_pylist() == expected
    small = sequence < 1_000_000
    entries, _ = entry_ids(array, rows[small], sequence[small])
    assert entries.to_pylist() == [
        text for text, keep in zip(expected, small.tolist(), strict=True) if keep
    ]
