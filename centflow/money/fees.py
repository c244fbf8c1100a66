"""Fees: a per-rail schedule, applied once per batch, never per event.

The schedule has one entry per (rail, currency) (`RailFee`), its amounts
decimal text in major units of that currency. For the payments of one rail in
one settlement batch (gross ``G`` micro-units, ``n`` payments, ``c``
chargebacks):

- **fee** charged to the payee: ``fixed + round(G * bps / 10 000)``, raised to
  ``min`` and lowered to ``cap`` when they are set, once for the ``n``
  payments together (none when ``n = 0``), plus ``chargeback`` for each of
  the ``c`` chargebacks;
- **rail cost** (what the rail charges the platform): ``cost_fixed +
  round(G * cost_bps / 10 000)`` when ``n > 0``;
- **margin**: fee less rail cost (it may be negative: the schedule is the
  operator's business).

``round`` is half up to the micro-unit, on integers (no float, no Decimal in
the loop). A rail and currency the schedule does not name costs nothing and
charges nothing; `recon_unit_economics` shows it with zero fees.

**Had each payment settled on its own** (`standalone_fees`): the same rule
applied to one payment at a time. The sum of those, against the batch fees,
is the saving netting brings; a payment whose own fee would exceed its value
is one that could never have been paid out alone.

The shipped schedule (`DEFAULT_SCHEDULE`) is a template in US dollars, scaled
to the other currencies by rough magnitudes (`CURRENCY_SCALE`) and rounded to
each currency's minor unit: a starting point, not anyone's price list. Give
your own with ``[[fees]]`` entries in the ``--config`` file.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import NamedTuple

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from centflow.errors import ConfigError, invariant
from centflow.limits import AMOUNT_MICROS_MAX, MICROS_PER_UNIT
from centflow.money.amounts import is_currency, minor_unit_exponent

BPS_DENOMINATOR = 10_000


class RailFee(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One schedule entry: the fees of a rail in a currency (amounts in its major unit)."""

    rail: str
    currency: str
    fixed: str = "0"
    bps: int = 0
    min: str | None = None
    cap: str | None = None
    cost_fixed: str = "0"
    cost_bps: int = 0
    chargeback: str = "0"


class FeeTerms(msgspec.Struct, frozen=True, array_like=True):
    """A `RailFee` in micro-units, checked (`terms`)."""

    fixed: int
    bps: int
    min: int
    cap: int  # AMOUNT_MICROS_MAX when the entry sets none
    cost_fixed: int
    cost_bps: int
    chargeback: int


#: (rail, fixed, bps, cap, cost_fixed, cost_bps, chargeback), US dollars.
_TEMPLATE = (
    ("card", "0.30", 290, None, "0.10", 180, "15.00"),
    ("ach", "0.25", 80, "5.00", "0.05", 20, "5.00"),
    ("sepa", "0.20", 50, "5.00", "0.02", 10, "5.00"),
    ("swift", "15.00", 10, None, "10.00", 0, "25.00"),
    ("wallet", "0.10", 150, None, "0.05", 100, "10.00"),
    ("lightning", "0.01", 20, None, "0", 5, "0"),
)
#: Rough units of each currency per US dollar, for the shipped schedule only.
CURRENCY_SCALE = {
    "USD": "1", "EUR": "1", "GBP": "1", "CHF": "1", "CAD": "1.4", "AUD": "1.5",
    "BHD": "0.4", "KWD": "0.3", "JPY": "150", "KRW": "1400", "INR": "85", "BRL": "5",
    "MXN": "20", "ZAR": "18", "IDR": "16000",
}  # fmt: skip


def _scaled(text: str | None, scale: str, currency: str) -> str | None:
    if text is None:
        return None
    step = Decimal(1).scaleb(-minor_unit_exponent(currency))
    return str((Decimal(text) * Decimal(scale)).quantize(step, ROUND_HALF_UP))


def _default_schedule() -> tuple[RailFee, ...]:
    entries = []
    for rail, fixed, bps, cap, cost_fixed, cost_bps, chargeback in _TEMPLATE:
        for currency, scale in CURRENCY_SCALE.items():
            if rail == "sepa" and currency != "EUR":
                continue
            if rail == "ach" and currency != "USD":
                continue
            entries.append(
                RailFee(
                    rail,
                    currency,
                    fixed=_scaled(fixed, scale, currency) or "0",
                    bps=bps,
                    cap=_scaled(cap, scale, currency),
                    cost_fixed=_scaled(cost_fixed, scale, currency) or "0",
                    cost_bps=cost_bps,
                    chargeback=_scaled(chargeback, scale, currency) or "0",
                )
            )
    return tuple(entries)


DEFAULT_SCHEDULE = _default_schedule()


def _micros(entry: RailFee, name: str, text: str) -> int:
    """Decimal text in major units -> micro-units; a one-line ConfigError if unusable."""
    where = f"fee schedule entry {entry.rail}/{entry.currency}: {name}"
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ConfigError(f"{where} {text!r} is not a decimal number") from None
    if not value.is_finite() or value < 0:
        raise ConfigError(f"{where} {text!r} must be a non-negative amount")
    micros = value * MICROS_PER_UNIT
    if micros != micros.to_integral_value() or micros > AMOUNT_MICROS_MAX:
        raise ConfigError(f"{where} {text!r} has more than 6 decimals or is too large")
    return int(micros)


def terms(entry: RailFee) -> FeeTerms:
    """The entry in micro-units; raises a one-line `ConfigError` for a bad value."""
    if not is_currency(entry.currency):
        raise ConfigError(f"fee schedule entry {entry.rail}/{entry.currency}: unknown currency")
    for name, bps in (("bps", entry.bps), ("cost_bps", entry.cost_bps)):
        if not 0 <= bps <= BPS_DENOMINATOR:
            raise ConfigError(
                f"fee schedule entry {entry.rail}/{entry.currency}: {name} {bps} is out of "
                f"range 0..{BPS_DENOMINATOR}"
            )
    minimum = _micros(entry, "min", entry.min) if entry.min is not None else 0
    cap = _micros(entry, "cap", entry.cap) if entry.cap is not None else AMOUNT_MICROS_MAX
    if cap < minimum:
        raise ConfigError(
            f"fee schedule entry {entry.rail}/{entry.currency}: cap {entry.cap} is below "
            f"min {entry.min}"
        )
    return FeeTerms(
        _micros(entry, "fixed", entry.fixed),
        entry.bps,
        minimum,
        cap,
        _micros(entry, "cost_fixed", entry.cost_fixed),
        entry.cost_bps,
        _micros(entry, "chargeback", entry.chargeback),
    )


def schedule_terms(schedule: tuple[RailFee, ...]) -> dict[tuple[str, str], FeeTerms]:
    """{(rail, currency): terms}; a rail named twice for one currency is an error."""
    out: dict[tuple[str, str], FeeTerms] = {}
    for entry in schedule:
        key = (entry.rail, entry.currency)
        if key in out:
            raise ConfigError(f"fee schedule names {entry.rail}/{entry.currency} twice")
        out[key] = terms(entry)
    return out


_NONE = FeeTerms(0, 0, 0, AMOUNT_MICROS_MAX, 0, 0, 0)


_INT64_SAFE = (2**63 - 1 - BPS_DENOMINATOR) // BPS_DENOMINATOR


def _percent(gross: np.ndarray, bps: np.ndarray) -> np.ndarray:
    """round(gross * bps / 10 000), half up, exact: int64 where the product fits,
    Python integers for the rare batch beyond (amounts near a trillion)."""
    if not len(gross) or int(gross.max()) <= _INT64_SAFE:
        return (gross * bps + BPS_DENOMINATOR // 2) // BPS_DENOMINATOR
    return np.array(
        [
            (amount * rate + BPS_DENOMINATOR // 2) // BPS_DENOMINATOR
            for amount, rate in zip(gross.tolist(), bps.tolist(), strict=True)
        ],
        np.int64,
    )


class GroupFees(NamedTuple):
    """Fees of (batch, rail) groups, one entry per group, int64 micro-units."""

    fee: np.ndarray  # the payments' fee (min/cap applied), none without payments
    chargeback_fee: np.ndarray
    rail_cost: np.ndarray


def group_fees(
    table: dict[tuple[str, str], FeeTerms],
    rails: list[str],
    currencies: list[str],
    gross: np.ndarray,
    payments: np.ndarray,
    chargebacks: np.ndarray,
) -> GroupFees:
    """The fees of (batch, rail) groups (see the module docstring)."""
    columns = _term_columns(table, pa.array(rails, pa.string()), pa.array(currencies, pa.string()))
    return _fees(columns, gross, payments, chargebacks)


def _term_columns(
    table: dict[tuple[str, str], FeeTerms],
    rails: pa.Array | pa.ChunkedArray,
    currencies: pa.Array | pa.ChunkedArray,
) -> dict[str, np.ndarray]:
    """Each row's `FeeTerms` as int64 columns, looked up once per distinct (rail, currency)."""
    rail_codes = pc.dictionary_encode(_whole(rails))
    currency_codes = pc.dictionary_encode(_whole(currencies))
    width = len(currency_codes.dictionary)
    keys = rail_codes.indices.to_numpy(zero_copy_only=False).astype(np.int64) * width
    keys += currency_codes.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    unique, row_of = np.unique(keys, return_inverse=True)
    rail_names = rail_codes.dictionary.to_pylist()
    currency_names = currency_codes.dictionary.to_pylist()
    found = [table.get((rail_names[key // width], currency_names[key % width]), _NONE) for key in unique.tolist()]  # fmt: skip
    return {
        name: np.array([getattr(entry, name) for entry in found], np.int64)[row_of]
        for name in FeeTerms.__struct_fields__
    }


def _whole(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _fees(
    column: dict[str, np.ndarray], gross: np.ndarray, payments: np.ndarray, chargebacks: np.ndarray
) -> GroupFees:
    paid = payments > 0
    fee = np.clip(column["fixed"] + _percent(gross, column["bps"]), column["min"], column["cap"])
    cost = column["cost_fixed"] + _percent(gross, column["cost_bps"])
    return GroupFees(
        np.where(paid, fee, 0),
        chargebacks * column["chargeback"],
        np.where(paid, cost, 0),
    )


def standalone_fees(
    table: dict[tuple[str, str], FeeTerms],
    rails: list[str],
    currencies: list[str],
    amounts: np.ndarray,
) -> np.ndarray:
    """What each payment's fee would have been had it settled on its own."""
    ones = np.ones(len(amounts), np.int64)
    return group_fees(table, rails, currencies, amounts, ones, 0 * ones).fee


#: ``settlement_fees`` in flight: one row per (batch, rail), money as int64 micro-units.
FEES_SCHEMA = pa.schema(
    [
        ("batch_id", pa.string()),
        ("rail", pa.string()),
        ("currency", pa.string()),
        ("payments", pa.int64()),
        ("gross_micros", pa.int64()),
        ("fee_micros", pa.int64()),
        ("chargebacks", pa.int64()),
        ("chargeback_fee_micros", pa.int64()),
        ("rail_cost_micros", pa.int64()),
        ("margin_micros", pa.int64()),
        ("standalone_fee_micros", pa.int64()),
        ("unpayable_alone", pa.int64()),
    ]
)


class BatchFees(NamedTuple):
    """The fees of a window's batches: the total per batch, and per (batch, rail)
    group the `FEES_SCHEMA` rows with what the ledger needs to post them."""

    per_batch: np.ndarray  # fee + chargeback fees, per batch
    groups_per_batch: np.ndarray  # (batch, rail) groups of each batch, for entry numbering
    batch_of_group: np.ndarray
    rails: pa.Array
    charged: np.ndarray  # fee + chargeback fees, per group
    rail_cost: np.ndarray
    rows: pa.Table


def _sum_by(codes: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """Exact int64 sums of `values` per code (np.bincount would go through float64)."""
    out = np.zeros(size, np.int64)
    np.add.at(out, codes, values)
    return out


def _unique_codes(keys: np.ndarray, key_limit: int) -> tuple[np.ndarray, np.ndarray]:
    """`np.unique(keys, return_inverse=True)` for non-negative keys below `key_limit`,
    by marking the keys present rather than sorting them when the range is small."""
    if not len(keys) or key_limit > 4 * len(keys) + 1024:
        unique, inverse = np.unique(keys, return_inverse=True)
        return unique, inverse.reshape(-1)
    invariant(int(keys.min()) >= 0 and int(keys.max()) < key_limit, "a key out of range")
    present = np.zeros(key_limit, dtype=bool)
    present[keys] = True
    unique = np.flatnonzero(present)
    code_of_key = np.cumsum(present, dtype=np.int64) - 1
    return unique, code_of_key[keys]


def batch_fees(
    table: dict[tuple[str, str], FeeTerms],
    events: pa.Table,
    batch_of_row: np.ndarray,
    batch_ids: pa.Array,
    batch_count: int,
    rails: pa.DictionaryArray | None = None,
) -> BatchFees:
    """Fees of every batch of a window, once per batch and rail (module docstring).

    `events` are the window's sorted events (``type``, ``rail``, ``currency``,
    ``amount_micros``), `batch_of_row` the batch of each; a batch is in one currency.
    `rails` is ``events["rail"]`` dictionary-encoded, when the caller has it."""
    encoded = pc.dictionary_encode(_whole(events["rail"])) if rails is None else rails
    invariant(len(encoded) == events.num_rows, "rail codes misaligned with their events")
    # Codes in the order of the rail names, not of first appearance: a batch's
    # groups (and so its entry ids) must not depend on how its events arrived.
    order = pc.sort_indices(encoded.dictionary).to_numpy()
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    rail_names = encoded.dictionary.take(pa.array(order))
    rail_codes = rank[encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)]
    keys = batch_of_row * len(rail_names) + rail_codes
    unique, group_of_row = _unique_codes(keys, batch_count * len(rail_names))
    count = len(unique)
    batch_of_group = unique // len(rail_names)
    rails = rail_names.take(pa.array(unique % len(rail_names)))
    kinds = events["type"]
    is_payment = pc.equal(kinds, "payment").to_numpy(zero_copy_only=False)
    is_chargeback = pc.equal(kinds, "chargeback").to_numpy(zero_copy_only=False)
    amounts = events["amount_micros"].to_numpy()
    payments = _sum_by(group_of_row, is_payment.astype(np.int64), count)
    chargebacks = _sum_by(group_of_row, is_chargeback.astype(np.int64), count)
    gross = _sum_by(group_of_row, np.where(is_payment, amounts, 0), count)
    first_row = np.zeros(count, np.int64)
    first_row[group_of_row[::-1]] = np.arange(len(group_of_row))[::-1]
    currencies = events["currency"].take(pa.array(first_row))
    group_terms = _term_columns(table, rails, currencies)
    fees = _fees(group_terms, gross, payments, chargebacks)
    ones = np.ones(len(amounts), np.int64)
    # a row's terms are its group's: one rail, and one currency per batch
    row_terms = {name: column[group_of_row] for name, column in group_terms.items()}
    own = _fees(row_terms, amounts, ones, 0 * ones).fee  # each payment's fee, had it been alone
    own = np.where(is_payment, own, 0)
    exceeds = is_payment & (own > amounts)
    charged = fees.fee + fees.chargeback_fee
    rows = pa.table(
        [
            batch_ids.take(pa.array(batch_of_group)),
            rails,
            currencies,
            payments,
            gross,
            fees.fee,
            chargebacks,
            fees.chargeback_fee,
            fees.rail_cost,
            charged - fees.rail_cost,
            _sum_by(group_of_row, own, count),
            _sum_by(group_of_row, exceeds.astype(np.int64), count),
        ],
        schema=FEES_SCHEMA,
    )
    return BatchFees(
        _sum_by(batch_of_group, charged, batch_count),
        np.bincount(batch_of_group, minlength=batch_count).astype(np.int64),
        batch_of_group,
        rails,
        charged,
        fees.rail_cost,
        rows,
    )
