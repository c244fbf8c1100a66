"""Synthetic payment logs: seeded, deterministic, with the faults real producers make.

`generate_events` yields JSON lines (bytes, no newline) in log order;
`generate_lines` yields the same lines labelled with what each one is (a
payment, refund, chargeback, duplicate, or which fault) and the dead-letter
reason the pipeline must give it; `write_log` writes them to a file
(gzipped when the name ends in ``.gz``) and returns `GenerateStats`.

Determinism. Everything is drawn from one ``random.Random(seed)``, and only
through its ``random()`` method, whose sequence Python guarantees across
versions (``randrange``, ``choice`` and ``shuffle`` are not guaranteed), with
no transcendental functions on the way to a value that is written out. No
global randomness, no wall clock: the same arguments give the same bytes. A
gzipped log's *content* is likewise identical; its compressed bytes can
differ between zlib builds (the gzip header carries no name and no time).

What a log looks like (rates are per line and approximate):

- Payees and payers follow Zipf-like activity (a tenth of the payees take
  over half of the payments); about 200 payees and 2000 payers appear per
  5000 lines, scaling with the count. A payee mostly takes one currency
  (USD, EUR, GBP, JPY, BHD, BRL, INR); a payer has a home country, one to
  three devices and an IP, and now and then shows a device never seen before.
- Amounts are decimal strings, heavy-tailed: about two thirds between 0.001
  and 0.50 (USD-equivalent), a tail up to 20 000. They respect the currency's
  minor unit (JPY whole, BHD three decimals, others two), except about 5 %
  that carry up to 6 fraction digits (sub-minor amounts such as ``"0.004"``
  USD), never for JPY.
- Event time advances uniformly from `start_us` over `duration_s` with
  jitter; some timestamps carry an offset (``+05:30``, ``-03:00``, ...) or
  microsecond or whole-second precision.
- Refunds (~3 %) and chargebacks (~0.5 %) reference a valid payment earlier
  in the log (one of the 50 000 most recent) with the same payer, payee,
  currency, rail and country, at a later event time, never exceeding what is
  left of it (a chargeback takes all that is left). The same payer matters:
  `centflow produce` keys messages by payer, so a reversal follows its
  payment in one partition.
- ~5 % of payments carry splits, some carry ``risk_signals``, ~2 % of events
  carry unknown extra fields (``"channel": "app"``), which must be accepted.

With ``faults=True`` also: exact duplicates (~1 %: the bytes of a valid line
up to 20 lines earlier), out-of-order events (~3 %: 1.5-8 s behind the
latest event time so far), very late events (~0.5 %: 3-10 `window_hint_s`
windows behind it), and
malformed lines (~1.5 %) of every kind in `FAULT_REASONS`, each kind at
least once in the first malformed lines when the log is long enough
(oversize lines: at most one per 5000 lines). Three kinds decode fine and
only the pipeline can reject them (`PIPELINE_FAULTS`): a refund of a payment
never seen, a refund whose payee differs from its payment's, and a refund
exceeding what is left of its payment. Lines of the other kinds are dead
letters for `centflow.decode.decode_message`.

`python -m centflow.generate PATH --events N --seed S` writes a log and
prints its `GenerateStats` (``replay_data/README.md`` has the commands of
the shipped logs).
"""

from __future__ import annotations

import argparse
import gzip
import heapq
import json
import os
import sys
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from functools import cache
from itertools import accumulate
from math import gcd
from pathlib import Path
from queue import Queue
from random import Random
from threading import Thread
from typing import Any, NamedTuple

import msgspec

from centflow.errors import ConfigError
from centflow.limits import BPS_WHOLE, MESSAGE_BYTES_MAX, MICROS_PER_SECOND
from centflow.money import minor_unit_exponent
from centflow.timeparse import parse_rfc3339_us

#: Malformed-line kinds and the dead-letter reason each must get.
FAULT_REASONS: dict[str, str] = {
    "invalid_json": "invalid_json",
    "json_array": "invalid_json",
    "missing_field": "missing_field",
    "amount_number": "invalid_amount",
    "amount_zero": "invalid_amount",
    "unknown_currency": "unknown_currency",
    "timestamp_no_offset": "invalid_timestamp",
    "invalid_type": "invalid_type",
    "invalid_rail": "invalid_rail",
    "invalid_country": "invalid_country",
    "empty_id": "invalid_field",
    "risk_signal_text": "invalid_risk_signals",
    "splits_sum": "invalid_splits",
    "not_utf8": "not_utf8",
    "oversize": "oversize",
    "unknown_reference": "unknown_reference",
    "reference_mismatch": "reference_mismatch",
    "refund_exceeds_payment": "refund_exceeds_payment",
}
#: Fault kinds that decode into a valid `Payment`: only admission rejects them.
PIPELINE_FAULTS = frozenset({"unknown_reference", "reference_mismatch", "refund_exceeds_payment"})

#: Labels of the lines that are not faults (`LogLine.kind`).
VALID_KINDS = ("payment", "refund", "chargeback")

# Per-line rates.
_P_MALFORMED = 0.015
_P_REFUND = 0.03
_P_CHARGEBACK = 0.005
_P_DUPLICATE = 0.01
_P_LATE = 0.005
_P_OUT_OF_ORDER = 0.03
_P_SPLITS = 0.05
_P_EXTRA = 0.02
_P_OFFSET = 0.12  # of the events of a payer whose country has a UTC offset
_P_SECONDARY_CURRENCY = 0.06
_P_CROSS_BORDER = 0.05
_DUPLICATE_DELAY_LINES_MAX = 20
_OVERSIZE_LINES_PER = 5000
_PAYEES_PER_EVENT = 200 / 5000
_PAYERS_PER_EVENT = 4000 / 5000  # a pool from which about 2000 per 5000 lines appear
_PAYER_RANK_SHIFT = 20  # payer weights 1/(rank + shift): the heaviest payer has ~1.5 %

# Currency: (share of payees, units per USD, rails with weights, payer countries).
_CURRENCIES: dict[str, tuple[int, float, tuple[tuple[str, int], ...], tuple[str, ...]]] = {
    "USD": (
        30,
        1.0,
        (("card", 55), ("ach", 20), ("wallet", 15), ("lightning", 7), ("swift", 3)),
        ("US",),
    ),
    "EUR": (
        22,
        0.92,
        (("sepa", 40), ("card", 40), ("wallet", 14), ("lightning", 4), ("swift", 2)),
        ("DE", "FR", "ES", "IT", "NL", "IE", "PT", "AT", "BE", "FI"),
    ),
    "GBP": (10, 0.79, (("card", 60), ("wallet", 25), ("lightning", 10), ("swift", 5)), ("GB",)),
    "JPY": (10, 150.0, (("card", 60), ("wallet", 34), ("lightning", 4), ("swift", 2)), ("JP",)),
    "BHD": (5, 0.376, (("card", 55), ("wallet", 25), ("swift", 20)), ("BH",)),
    "BRL": (11, 5.0, (("wallet", 50), ("card", 44), ("lightning", 4), ("swift", 2)), ("BR",)),
    "INR": (12, 83.0, (("wallet", 60), ("card", 36), ("lightning", 2), ("swift", 2)), ("IN",)),
}
# UTC offsets (minutes) some payers' devices report their local time in.
_COUNTRY_OFFSETS_MIN = {"IN": 330, "BR": -180, "JP": 540, "BH": 180, "US": -300}
# USD-equivalent amount buckets: (cumulative probability, low, high); the last
# is a truncated Pareto tail (alpha 1), the others uniform.
_AMOUNT_BUCKETS = (
    (0.12, 0.001, 0.01),
    (0.40, 0.01, 0.10),
    (0.65, 0.10, 0.50),
    (0.85, 0.50, 5.0),
    (0.95, 5.0, 50.0),
    (0.99, 50.0, 500.0),
    (1.00, 500.0, 20_000.0),
)
_AMOUNT_CUMULATIVE = [bucket[0] for bucket in _AMOUNT_BUCKETS]
_AMOUNT_LAST = len(_AMOUNT_BUCKETS) - 1
_P_SUB_MINOR_TINY = 0.25  # sub-minor share of amounts below 0.01 USD
_P_SUB_MINOR_OTHER = 0.023  # and of the others: about 5 % overall
_EXTRA_FIELDS: tuple[dict[str, Any], ...] = (
    {"channel": "app"},
    {"channel": "web"},
    {"channel": "pos"},
    {"schema_version": 2},
    {"producer": "edge-eu-1", "trace_id": "00f067aa0ba902b7"},
    {"metadata": {"sku": "api-call", "tags": ["metered"]}},
)
_BAD_TYPES = ("purchase", "PAYMENT", "reversal", "")
_BAD_RAILS = ("paypal", "cash", "CARD", "wire")
_BAD_COUNTRIES = ("UK", "EU", "ZZ", "usa", "de")
_BAD_TIMESTAMP_SUFFIXES = ("", " ", "UTC")
_OVERSIZE_PAD_CHARS = MESSAGE_BYTES_MAX + 4096
_DEVICE_IDS = 16**12
_REFUND_POOL = 50_000  # refunds reverse one of the most recent payments
_NEEDS_OPEN_PAYMENT = frozenset({"reference_mismatch", "refund_exceeds_payment"})

_US_PER_DAY = 86_400 * MICROS_PER_SECOND
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_encode = msgspec.json.Encoder().encode


class LogLine(NamedTuple):
    """One generated line: what it is, the dead-letter reason it must get, its bytes.

    `kind` is ``payment``, ``refund`` or ``chargeback`` for a valid event
    (reason ``""``), ``duplicate`` (reason ``duplicate``), or a key of
    `FAULT_REASONS`.
    """

    kind: str
    reason: str
    raw: bytes


@dataclass
class GenerateStats:
    """What a generated log holds (every line is counted exactly once in
    `payments`, `refunds`, `chargebacks`, `duplicates` or `malformed`)."""

    events: int = 0
    payments: int = 0
    refunds: int = 0
    chargebacks: int = 0
    duplicates: int = 0
    malformed: dict[str, int] = field(default_factory=dict)
    out_of_order: int = 0
    late: int = 0
    offset_timestamps: int = 0
    sub_minor_amounts: int = 0
    with_splits: int = 0
    extra_fields: int = 0
    payees: int = 0  # the payee pool (nearly all appear)
    payers: int = 0  # distinct payers that appear

    @property
    def valid(self) -> int:
        """Lines that decode and pass admission: payments, refunds, chargebacks."""
        return self.payments + self.refunds + self.chargebacks

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed.values())

    def as_dict(self) -> dict[str, Any]:
        summary = asdict(self)
        summary["malformed"] = dict(sorted(self.malformed.items()))
        summary["valid"] = self.valid
        summary["malformed_total"] = self.malformed_total
        return summary


class _Payee(NamedTuple):
    payee_id: str
    currency: str
    secondary_currency: str
    split_parties: tuple[str, ...]


class _Profile(NamedTuple):
    """What a currency implies: rate against USD, minor unit, rails, payer countries."""

    code: str
    units_per_usd: float
    digits: int
    rail_cumulative: list[float]
    rail_total: float
    rails: list[str]
    countries: tuple[str, ...]


class _Payer(NamedTuple):
    payer_id: str
    country: str
    offset_min: int
    devices: tuple[str, ...]
    ip: str


class _OpenPayment:
    """A valid payment refunds may still reverse, and what is left of it."""

    __slots__ = (
        "country",
        "currency",
        "digits",
        "event_id",
        "occurred_us",
        "payee",
        "payer",
        "rail",
        "remaining",
    )

    def __init__(
        self,
        event_id: str,
        payer: _Payer,
        payee: _Payee,
        currency: str,
        units: int,
        digits: int,
        occurred_us: int,
        rail: str,
        country: str,
    ) -> None:
        self.event_id = event_id
        self.payer = payer
        self.payee = payee
        self.currency = currency
        self.remaining = units  # in units of 10**-digits
        self.digits = digits
        self.occurred_us = occurred_us
        self.rail = rail
        self.country = country


def generate_lines(
    count: int,
    *,
    seed: int = 7,
    start_us: int,
    duration_s: int,
    window_hint_s: int = 60,
    faults: bool = True,
    stats: GenerateStats | None = None,
) -> Iterator[LogLine]:
    """Yield `count` labelled lines in log order; fill `stats` (if given) as they go."""
    stats = GenerateStats() if stats is None else stats
    generator = _Generator(count, seed, start_us, duration_s, window_hint_s, faults, stats)
    return map(LogLine._make, generator.lines())


def generate_events(
    count: int,
    *,
    seed: int = 7,
    start_us: int,
    duration_s: int,
    window_hint_s: int = 60,
    faults: bool = True,
) -> Iterator[bytes]:
    """Yield `count` JSON lines (bytes without newline) in log order."""
    generator = _Generator(
        count, seed, start_us, duration_s, window_hint_s, faults, GenerateStats()
    )
    return (raw for _, _, raw in generator.lines())


def write_log(
    path: Path,
    count: int,
    *,
    seed: int = 7,
    start_us: int,
    duration_s: int,
    window_hint_s: int = 60,
    faults: bool = True,
    compresslevel: int = 3,
) -> GenerateStats:
    """Write a generated log to `path` (gzip if it ends in ``.gz``), atomically.

    Arguments are those of `generate_events`, plus gzip's `compresslevel`
    (low by default: generation speed matters more than size). One line per
    event, each ending in ``\\n``.
    """
    path = Path(path)
    stats = GenerateStats()
    generator = _Generator(count, seed, start_us, duration_s, window_hint_s, faults, stats)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with partial.open("wb") as file:
            if path.name.endswith(".gz"):
                # No file name and time zero in the header: same content, same header.
                with gzip.GzipFile(
                    filename="", mode="wb", fileobj=file, compresslevel=compresslevel, mtime=0
                ) as stream:
                    _write_lines(stream.write, generator.lines())
            else:
                _write_lines(file.write, generator.lines())
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return stats


def _write_lines(
    write: Callable[[bytes], Any], lines: Iterator[tuple[str, str, bytes]], chunk_lines: int = 4096
) -> None:
    """Write lines in chunks from a second thread, so compression (which releases
    the GIL) overlaps with generation; the bytes and their order are unchanged."""
    chunks: Queue[bytes | None] = Queue(maxsize=8)
    failures: list[BaseException] = []

    def drain() -> None:
        while (chunk := chunks.get()) is not None:
            if not failures:
                try:
                    write(chunk)
                except BaseException as error:  # re-raised by the caller below
                    failures.append(error)

    writer = Thread(target=drain, name="centflow-generate-writer", daemon=True)
    writer.start()
    try:
        chunk: list[bytes] = []
        for _, _, raw in lines:
            chunk.append(raw)
            if len(chunk) >= chunk_lines:
                chunk.append(b"")
                chunks.put(b"\n".join(chunk))
                chunk.clear()
                if failures:
                    break
        if chunk and not failures:
            chunk.append(b"")
            chunks.put(b"\n".join(chunk))
    finally:
        chunks.put(None)
        writer.join()
    if failures:
        raise failures[0]


class _Generator:
    """The state of one log: its people, its clock, the payments open to refunds.

    Written for speed (the benchmark generates half a million lines): the hot
    path binds attributes to locals, payers are made on first use, and the
    text of the current second of the clock is cached.
    """

    def __init__(
        self,
        count: int,
        seed: int,
        start_us: int,
        duration_s: int,
        window_hint_s: int,
        faults: bool,
        stats: GenerateStats,
    ) -> None:
        if count < 0:
            raise ConfigError(f"event count must be >= 0, got {count}")
        if duration_s <= 0 or window_hint_s <= 0:
            raise ConfigError(
                f"duration ({duration_s} s) and window ({window_hint_s} s) must be > 0"
            )
        self.count = count
        self.seed = seed
        self.start_us = start_us
        self.step_us = duration_s * MICROS_PER_SECOND / max(count, 1)
        self.window_us = window_hint_s * MICROS_PER_SECOND
        self.faults = faults
        self.stats = stats
        self.random = Random(seed).random
        # The most recent payments, which refunds pick from (a ring: memory stays bounded).
        self.open_payments: list[_OpenPayment] = []
        self.profiles = {
            code: _Profile(
                code,
                spec[1],
                minor_unit_exponent(code),
                *_weighted_table(spec[2]),
                spec[3],
            )
            for code, spec in _CURRENCIES.items()
        }
        # Payers' home countries, each currency's share spread over its countries.
        self.payer_countries = [
            country
            for spec in _CURRENCIES.values()
            for country in spec[3]
            for _ in range(max(1, round(spec[0] * 10 / len(spec[3]))))
        ]
        self.currency_table = _weighted_table(
            tuple((code, spec[0]) for code, spec in _CURRENCIES.items())
        )
        # Zipf-like activity: weight 1/(rank+1) for payees, a flatter 1/(rank+20) for payers.
        payee_count = max(3, round(count * _PAYEES_PER_EVENT))
        payer_count = max(10, round(count * _PAYERS_PER_EVENT))
        self.payee_cumulative = list(accumulate(1 / rank for rank in range(1, payee_count + 1)))
        self.payer_cumulative = list(
            accumulate(
                1 / rank for rank in range(_PAYER_RANK_SHIFT, payer_count + _PAYER_RANK_SHIFT)
            )
        )
        self.payee_total, self.payee_last = self.payee_cumulative[-1], payee_count - 1
        self.payer_total, self.payer_last = self.payer_cumulative[-1], payer_count - 1
        self.payee_numbers = self._permutation(payee_count)
        self.payer_numbers = self._permutation(payer_count)
        self.payees = [self._make_payee(rank) for rank in range(payee_count)]
        self.payers: list[_Payer | None] = [None] * payer_count  # made on first use
        self.fault_kinds = [kind for kind in FAULT_REASONS if kind != "oversize"]
        self.oversize_budget = count // _OVERSIZE_LINES_PER
        # The first malformed lines go through every kind once, in a seeded order.
        opening = self.fault_kinds + (["oversize"] if self.oversize_budget else [])
        self.fault_opening = self._shuffled(opening)
        self.second_cached = -1
        self.second_text = ""
        stats.payees = payee_count

    # -- random helpers (only `random()` is used: its sequence is stable across Pythons)

    def _below(self, bound: int) -> int:
        """0 <= n < bound (int(random() * bound) < bound for every bound below 2**53)."""
        return int(self.random() * bound)

    def _pick(self, items: Sequence[Any]) -> Any:
        return items[int(self.random() * len(items))]

    def _shuffled(self, items: list[Any]) -> list[Any]:
        items = list(items)
        for index in range(len(items) - 1, 0, -1):
            other = self._below(index + 1)
            items[index], items[other] = items[other], items[index]
        return items

    def _hex(self, digits: int) -> str:
        return format(self._below(16**digits), f"0{digits}x")

    def _permutation(self, size: int) -> tuple[int, int, int]:
        """An affine bijection of 0..size-1 (rank -> id number), so ids do not give ranks away."""
        while True:
            multiplier = 1 + self._below(size * 7 + 1000)
            if gcd(multiplier, size) == 1:
                return multiplier, self._below(size), size

    # -- the people

    def _make_payee(self, rank: int) -> _Payee:
        multiplier, offset, size = self.payee_numbers
        number = (rank * multiplier + offset) % size + 1
        payee_id = f"payee-{number}"
        currency = _choose(self.currency_table, self.random())
        secondary = "EUR" if currency == "USD" else "USD"
        platform = f"platform-{1 + self._below(3)}"
        partners = [f"partner-{number}-{index}" for index in range(self._below(3))]
        return _Payee(payee_id, currency, secondary, (payee_id, platform, *partners))

    def _make_payer(self, rank: int) -> _Payer:
        multiplier, offset, size = self.payer_numbers
        number = (rank * multiplier + offset) % size + 1
        random = self.random
        countries = self.payer_countries
        country = countries[int(random() * len(countries))]
        devices = tuple(
            [f"dev-{int(random() * _DEVICE_IDS):012x}" for _ in range(1 + int(random() * 3))]
        )
        if random() < 0.2:
            group, host = int(random() * 65536), int(random() * 65536)
            ip = f"2001:db8:{group:x}:{host:x}::{int(random() * 4096):x}"
        else:  # the shared address space of carrier-grade NAT: plausible, never a real host
            ip = f"100.{64 + int(random() * 64)}.{int(random() * 256)}.{1 + int(random() * 254)}"
        offset_min = _COUNTRY_OFFSETS_MIN.get(country, 0)
        payer = self.payers[rank] = _Payer(f"payer-{number}", country, offset_min, devices, ip)
        self.stats.payers += 1
        return payer

    # -- time

    def _timestamp(self, occurred_us: int, offset_min: int) -> tuple[str, int]:
        """RFC 3339 text for an instant, and the instant it really says (after truncation).

        Mostly milliseconds, some microseconds, a few whole seconds; in UTC
        (``Z``), or for a payer whose country has an offset, sometimes local.
        """
        random = self.random
        draw = random()
        if draw < 0.82:
            occurred_us -= occurred_us % 1000
            fraction = f".{occurred_us % MICROS_PER_SECOND // 1000:03d}"
        elif draw < 0.97:
            fraction = f".{occurred_us % MICROS_PER_SECOND:06d}"
        else:
            occurred_us -= occurred_us % MICROS_PER_SECOND
            fraction = ""
        if offset_min and random() < _P_OFFSET:
            self.stats.offset_timestamps += 1
            return self._render(occurred_us, offset_min, fraction), occurred_us
        second = occurred_us // MICROS_PER_SECOND
        if second != self.second_cached:
            self.second_cached = second
            self.second_text = self._render(occurred_us, 0, "")[:-1]
        return f"{self.second_text}{fraction}Z", occurred_us

    @staticmethod
    def _render(occurred_us: int, offset_min: int, fraction: str) -> str:
        local_us = occurred_us + offset_min * 60 * MICROS_PER_SECOND
        day, of_day = divmod(local_us, _US_PER_DAY)
        seconds = of_day // MICROS_PER_SECOND
        clock = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if offset_min:
            hours, minutes = divmod(abs(offset_min), 60)
            zone = f"{'+' if offset_min > 0 else '-'}{hours:02d}:{minutes:02d}"
        else:
            zone = "Z"
        return f"{_day_text(day)}T{clock}{fraction}{zone}"

    # -- money

    def _amount(self, profile: _Profile) -> tuple[int, int, bool]:
        """(units, fraction digits, sub-minor?) of a heavy-tailed amount."""
        random = self.random
        bucket = bisect_right(_AMOUNT_CUMULATIVE, random(), 0, _AMOUNT_LAST)
        _, low, high = _AMOUNT_BUCKETS[bucket]
        if bucket == _AMOUNT_LAST:  # the Pareto tail, by inversion: division only
            usd = 1 / (1 / low - random() * (1 / low - 1 / high))
        else:
            usd = low + random() * (high - low)
        major = usd * profile.units_per_usd
        digits = profile.digits
        if digits and random() < (_P_SUB_MINOR_TINY if usd < 0.01 else _P_SUB_MINOR_OTHER):
            minor_digits = digits
            digits += 1 + int(random() * (6 - digits))
            units = max(1, int(major * 10**digits))
            if units % 10 ** (digits - minor_digits) == 0:
                units += 1
            return units, digits, True
        return max(1, int(major * 10**digits)), digits, False

    # -- events

    def _payment(self, number: int, occurred_us: int) -> tuple[dict[str, Any], _OpenPayment, bool]:
        """A valid payment: its wire object, what refunds need of it, whether it is sub-minor."""
        random = self.random
        payee = self.payees[
            bisect_right(self.payee_cumulative, random() * self.payee_total, 0, self.payee_last)
        ]
        rank = bisect_right(self.payer_cumulative, random() * self.payer_total, 0, self.payer_last)
        payer = self.payers[rank] or self._make_payer(rank)
        currency = payee.currency if random() >= _P_SECONDARY_CURRENCY else payee.secondary_currency
        profile = self.profiles[currency]
        units, digits, sub_minor = self._amount(profile)
        rails = profile.rails
        rail = rails[
            bisect_right(profile.rail_cumulative, random() * profile.rail_total, 0, len(rails) - 1)
        ]
        if units > 5000 * 10**digits and random() < 0.5:
            rail = "swift"
        country = payer.country
        if random() < _P_CROSS_BORDER:
            countries = profile.countries
            country = countries[int(random() * len(countries))]
        occurred_at, occurred_us = self._timestamp(occurred_us, payer.offset_min)
        event_id = f"evt-{self.seed}-{number}"
        event: dict[str, Any] = {
            "event_id": event_id,
            "type": "payment",
            "occurred_at": occurred_at,
            "payer_id": payer.payer_id,
            "payee_id": payee.payee_id,
            "amount": _format_units(units, digits),
            "currency": currency,
            "rail": rail,
            "country": country,
        }
        draw = random()
        if draw < 0.83:
            devices = payer.devices
            event["device_id"] = devices[int(random() * len(devices))]
        elif draw < 0.85:  # a device never seen before
            event["device_id"] = f"dev-{self._hex(12)}"
        if random() < 0.9:
            event["ip"] = payer.ip
        if random() < _P_SPLITS:
            event["splits"] = self._splits(payee)
        if random() < (0.5 if rail == "card" else 0.15):
            event["risk_signals"] = self._risk_signals(rail)
        opened = _OpenPayment(
            event_id, payer, payee, currency, units, digits, occurred_us, rail, country
        )
        return event, opened, sub_minor

    def _splits(self, payee: _Payee) -> list[dict[str, Any]]:
        parties = payee.split_parties
        cuts: set[int] = set()
        while len(cuts) < len(parties) - 1:
            cuts.add(1 + self._below(BPS_WHOLE - 1))
        bounds = [0, *sorted(cuts), BPS_WHOLE]
        return [
            {"party_id": party, "bps": bounds[index + 1] - bounds[index]}
            for index, party in enumerate(parties)
        ]

    def _risk_signals(self, rail: str) -> dict[str, float]:
        signals: dict[str, float] = {}
        if rail == "card":
            signals["bin_score"] = self._below(1000) / 1000
        if rail != "card" or self.random() < 0.3:
            signals["device_score"] = self._below(1000) / 1000
        if self.random() < 0.1:
            signals["upstream_model"] = self._below(10_000) / 10_000
        return signals

    def _open_payment(self) -> _OpenPayment | None:
        """A recent payment with something left to reverse, or None (rarely)."""
        pool = self.open_payments
        if pool:
            for _ in range(8):
                opened = pool[int(self.random() * len(pool))]
                if opened.remaining:
                    return opened
        return None

    def _reversal(
        self, number: int, kind: str, opened: _OpenPayment, occurred_us: int, clock_us: int
    ) -> tuple[dict[str, Any], int, bool]:
        """A refund or chargeback of an open payment, its event time, and whether the
        event time asked for (perhaps a fault) held: a reversal never precedes its payment."""
        if kind == "chargeback" or self.random() < 0.5:
            units = opened.remaining
        else:
            units = 1 + self._below(opened.remaining)
        opened.remaining -= units
        occurred_at, rendered_us = self._timestamp(occurred_us, opened.payer.offset_min)
        held = rendered_us > opened.occurred_us
        if not held:
            rendered_us = max(clock_us, opened.occurred_us + 1000)
            rendered_us -= rendered_us % 1000
            fraction = f".{rendered_us % MICROS_PER_SECOND // 1000:03d}"
            occurred_at = self._render(rendered_us, 0, fraction)
        payee_id = opened.payee.payee_id
        event = self._reversal_object(number, kind, occurred_at, opened, payee_id, units)
        return event, rendered_us, held

    def _reversal_object(
        self,
        number: int,
        kind: str,
        occurred_at: str,
        opened: _OpenPayment,
        payee_id: str,
        units: int,
    ) -> dict[str, Any]:
        return {
            "event_id": f"evt-{self.seed}-{number}",
            "type": kind,
            "occurred_at": occurred_at,
            "payer_id": opened.payer.payer_id,
            "payee_id": payee_id,
            "amount": _format_units(units, opened.digits),
            "currency": opened.currency,
            "rail": opened.rail,
            "country": opened.country,
            "ref_event_id": opened.event_id,
        }

    # -- faults

    def _fault_kind(self) -> str:
        if self.fault_opening:
            kind = self.fault_opening[-1]
            if kind not in _NEEDS_OPEN_PAYMENT or self.open_payments:
                return self.fault_opening.pop()
        elif (
            self.stats.malformed.get("oversize", 0) < self.oversize_budget and self.random() < 0.01
        ):
            return "oversize"
        return self._pick(self.fault_kinds)

    def _malformed(self, kind: str, number: int, clock_us: int) -> tuple[str, bytes]:
        """A line of this fault kind (or of ``unknown_reference`` if no payment is open)."""
        opened = self._open_payment() if kind in _NEEDS_OPEN_PAYMENT else None
        if kind in _NEEDS_OPEN_PAYMENT and opened is None:
            kind = "unknown_reference"
        return kind, self._malformed_bytes(kind, number, clock_us, opened)

    def _malformed_bytes(
        self, kind: str, number: int, clock_us: int, opened: _OpenPayment | None
    ) -> bytes:
        event, _, _ = self._payment(number, clock_us)
        event.pop("risk_signals", None)
        if kind != "splits_sum":
            event.pop("splits", None)
        if kind == "invalid_json":
            raw = _encode(event)
            if self.random() < 0.5:
                return raw[: 1 + self._below(len(raw) - 2)]  # a truncated write
            return raw[:-1] + b",}"
        if kind == "json_array":
            return _encode(list(event.values()))
        if kind == "missing_field":
            del event[self._pick(list(event)[:9])]
        elif kind == "amount_number":
            event["amount"] = (
                float(event["amount"]) if "." in event["amount"] else int(event["amount"])
            )
        elif kind == "amount_zero":
            event["amount"] = self._pick(("0", "0.00", "0.000000"))
        elif kind == "unknown_currency":
            event["currency"] = "XYZ"
        elif kind == "timestamp_no_offset":
            at_ms = clock_us - clock_us % 1000
            naive = self._render(
                at_ms, 0, f".{at_ms % MICROS_PER_SECOND // 1000:03d}"
            ).removesuffix("Z")
            event["occurred_at"] = naive + self._pick(_BAD_TIMESTAMP_SUFFIXES)  # a naive datetime
        elif kind == "invalid_type":
            event["type"] = self._pick(_BAD_TYPES)
        elif kind == "invalid_rail":
            event["rail"] = self._pick(_BAD_RAILS)
        elif kind == "invalid_country":
            event["country"] = self._pick(_BAD_COUNTRIES)
        elif kind == "empty_id":
            event[self._pick(("payer_id", "payee_id"))] = ""
        elif kind == "risk_signal_text":
            event["risk_signals"] = {"bin_score": "high"}
        elif kind == "splits_sum":
            payee_id = event["payee_id"]
            off = self._pick((-100, -1, 1, 2500))
            event["splits"] = [
                {"party_id": payee_id, "bps": 7000 + off},
                {"party_id": "platform-1", "bps": 3000},
            ]
        elif kind == "not_utf8":  # a Latin-1 "é" in a device name or in a payer id
            if self.random() < 0.5:
                event["device_id"] = "Caf\u00e9-POS"
            else:
                event["payer_id"] = f"{event['payer_id']}-jos\u00e9"
            return _encode(event).replace("\u00e9".encode(), b"\xe9")
        elif kind == "oversize":
            event["note"] = "x" * _OVERSIZE_PAD_CHARS
        elif kind == "unknown_reference":
            event["type"] = "refund"
            event["ref_event_id"] = f"evt-{self.seed}-ghost-{number}"
        elif opened is not None:  # reference_mismatch, refund_exceeds_payment
            payee_id = opened.payee.payee_id
            if kind == "reference_mismatch":  # the payment's payee, in another currency
                units = 1 + self._below(opened.remaining)
            else:
                units = opened.remaining + 1 + self._below(opened.remaining)
            event = self._reversal_object(
                number, "refund", event["occurred_at"], opened, payee_id, units
            )
            if kind == "reference_mismatch":
                event["currency"] = "EUR" if opened.currency == "USD" else "USD"
        return _encode(event)

    # -- the log

    def lines(self) -> Iterator[tuple[str, str, bytes]]:
        """(kind, expected dead-letter reason, bytes) of each line, in log order."""
        stats, random, faults = self.stats, self.random, self.faults
        malformed, open_payments = stats.malformed, self.open_payments
        pending: list[tuple[int, int, bytes]] = []  # (due line, sequence, bytes) of duplicates
        high_us = self.start_us  # the latest event time of a valid line so far
        for number in range(self.count):
            stats.events += 1
            if pending and pending[0][0] <= number:
                stats.duplicates += 1
                yield "duplicate", "duplicate", heapq.heappop(pending)[2]
                continue
            clock_us = self.start_us + int((number + random()) * self.step_us)
            if faults and random() < _P_MALFORMED:
                kind, raw = self._malformed(self._fault_kind(), number, clock_us)
                malformed[kind] = malformed.get(kind, 0) + 1
                yield kind, FAULT_REASONS[kind], raw
                continue
            occurred_us, time_fault = clock_us, ""
            if faults:
                draw = random()
                if draw < _P_LATE:  # 3 to 10 windows behind
                    occurred_us = high_us - int((3 + 7 * random()) * self.window_us)
                    time_fault = "late"
                elif draw < _P_LATE + _P_OUT_OF_ORDER:  # 1.5 to 8 seconds behind
                    occurred_us = high_us - int((1.5 + 6.5 * random()) * MICROS_PER_SECOND)
                    time_fault = "out_of_order"
            draw = random()
            kind, reversed_payment = "payment", None
            if draw < _P_REFUND + _P_CHARGEBACK:
                reversed_payment = self._open_payment()
                if reversed_payment is not None:
                    kind = "refund" if draw < _P_REFUND else "chargeback"
            if reversed_payment is None:
                event, opened, sub_minor = self._payment(number, occurred_us)
                rendered_us = opened.occurred_us
                if len(open_payments) < _REFUND_POOL:
                    open_payments.append(opened)
                else:
                    open_payments[stats.payments % _REFUND_POOL] = opened
                stats.payments += 1
                stats.sub_minor_amounts += sub_minor
                stats.with_splits += "splits" in event
            else:
                event, rendered_us, held = self._reversal(
                    number, kind, reversed_payment, occurred_us, clock_us
                )
                time_fault = time_fault if held else ""
                if kind == "refund":
                    stats.refunds += 1
                else:
                    stats.chargebacks += 1
            if rendered_us > high_us:
                high_us = rendered_us
            if time_fault == "late":
                stats.late += 1
            elif time_fault:
                stats.out_of_order += 1
            if random() < _P_EXTRA:
                event.update(self._pick(_EXTRA_FIELDS))
                stats.extra_fields += 1
            raw = _encode(event)
            if faults and random() < _P_DUPLICATE:
                due = number + 1 + self._below(_DUPLICATE_DELAY_LINES_MAX)
                heapq.heappush(pending, (due, number, raw))
            yield kind, "", raw


def _weighted_table(pairs: tuple[tuple[str, int], ...]) -> tuple[list[float], float, list[str]]:
    """(cumulative weights, total, names) of weighted names."""
    cumulative = list(accumulate(float(weight) for _, weight in pairs))
    return cumulative, cumulative[-1], [name for name, _ in pairs]


def _choose(table: tuple[list[float], float, list[str]], draw: float) -> str:
    cumulative, total, names = table
    return names[bisect_right(cumulative, draw * total, 0, len(names) - 1)]


@cache
def _day_text(day: int) -> str:
    """``YYYY-MM-DD`` of a day number since the epoch."""
    return date.fromordinal(_EPOCH_ORDINAL + day).isoformat()


def _format_units(units: int, digits: int) -> str:
    """Units of 10**-digits as decimal text.

    >>> _format_units(1234, 2), _format_units(4, 3), _format_units(150, 0), _format_units(10, 2)
    ('12.34', '0.004', '150', '0.10')
    """
    if digits == 0:
        return str(units)
    text = str(units).rjust(digits + 1, "0")
    return f"{text[:-digits]}.{text[-digits:]}"


def main(argv: list[str] | None = None) -> int:
    """``python -m centflow.generate PATH --events N --seed S``: write a log, print its stats."""
    parser = argparse.ArgumentParser(prog="python -m centflow.generate", description=main.__doc__)
    parser.add_argument("path", type=Path, help="output file (.jsonl, or .jsonl.gz to gzip)")
    parser.add_argument("--events", type=int, default=5000, help="lines to write (default 5000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--start", default="2026-11-02T09:00:00Z", help="RFC 3339 time of the first event"
    )
    parser.add_argument(
        "--duration-s", type=int, default=7200, help="event-time span (default 2 h)"
    )
    parser.add_argument(
        "--window-hint-s", type=int, default=60, help="window length late events are measured in"
    )
    parser.add_argument(
        "--no-faults", action="store_true", help="only valid, unique, in-order-ish events"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    stats = write_log(
        args.path,
        args.events,
        seed=args.seed,
        start_us=parse_rfc3339_us(args.start),
        duration_s=args.duration_s,
        window_hint_s=args.window_hint_s,
        faults=not args.no_faults,
    )
    elapsed = time.perf_counter() - started
    summary = stats.as_dict() | {"path": str(args.path), "seconds": round(elapsed, 3)}
    print(json.dumps(summary, indent=2), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
