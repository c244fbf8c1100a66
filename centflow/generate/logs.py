"""Synthetic payment logs: seeded, deterministic, with the faults real producers make.

`generate_events` yields JSON lines (bytes, no newline) in log order;
`generate_lines` yields the same lines labelled with what each one is (a
payment, refund, chargeback, duplicate, or which fault) and the dead-letter
reason the pipeline must give it; `write_log` writes them to a file
(gzipped when the name ends in ``.gz``) and returns `GenerateStats`.

Determinism. The ordinary lines are drawn from one ``random.Random(seed)``,
and only through its ``random()`` method, whose sequence Python guarantees
across versions (``randrange``, ``choice`` and ``shuffle`` are not
guaranteed), with no transcendental functions on the way to a value that is
written out. Fraud scenarios, FX rates and the payee directory draw the same
way from streams of their own (``Random("centflow-scenarios:<seed>")`` and
the like: string seeds are hashed with SHA-512, stable too), so a log without
scenarios is byte for byte what it was before they existed. No global
randomness, no wall clock: the same arguments give the same bytes. A gzipped
log's *content* is likewise identical; its compressed bytes can differ
between zlib builds (the gzip header carries no name and no time).

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

With ``diurnal=True`` event time follows a daily cycle instead of advancing
uniformly: each UTC hour has a traffic weight (`_DIURNAL_WEIGHTS`, about five
times more lines an hour by day than at night), lines still in order.

With ``scenarios`` (names in `SCENARIOS`), fraud episodes are mixed into the
traffic: a few per 100 000 lines of each scenario (at least one from 2000
lines), starting between 15 % and 90 % of the log, their lines taking the
place of ordinary ones (the line count stays `count`). Every such line is a
valid event, labelled in ``GenerateStats.labels`` (`ScenarioLabel`: event
id, scenario, episode number) and, by `write_log`, in a labels file:

- ``card-testing``: 20-60 tiny card payments (0.01-1.00 USD-equivalent) at
  one payee within 40-90 s, each from a new payer with a new device and IP,
  most with a high ``risk_signals.bin_score``;
- ``account-takeover``: a payer who has paid before suddenly sends 3-8
  payments of 300-6000 USD-equivalent to one to three payees never seen
  before, from a new device and IP, in a country it never paid from
  (`_TAKEOVER_COUNTRIES`), within 2-17 minutes;
- ``velocity-abuse``: a payer who has paid before pays 15-40 different
  payees within 2-8 minutes;
- ``refund-abuse``: a payee with 4-25 payments among the 3000 most recent
  refunds 70-100 % of them (valid refunds: same payer, currency, never more
  than is left) within 2-20 minutes.

Later, the holders dispute some card-testing and account-takeover payments:
chargebacks (``GenerateStats.fraud_chargebacks``, not labelled) 30 minutes to
3 hours of event time after them. Times follow the log's clock, so a burst
spans "a minute or two" only in a log of at least about a line a second.

`write_fx_rates` writes a matching FX-rate stream (USD against the other
currencies, a seeded random walk), `write_payee_directory` the payees'
settlement currencies.

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
letters for `centflow.ingest.decode.decode_message`.

`python -m centflow.generate.logs PATH --events N --seed S` writes a log and
prints its `GenerateStats` (``--scenario NAME`` repeatable, ``--diurnal``,
``--labels``, ``--fx-rates`` and ``--payee-directory PATH`` for the rest) (``replay_data/README.md`` has the commands of
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
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from functools import cache, partial
from itertools import accumulate, islice
from math import gcd
from pathlib import Path
from queue import Queue
from random import Random
from threading import Thread
from typing import Any, NamedTuple

import msgspec

from centflow.errors import ConfigError, invariant
from centflow.ingest.timeparse import parse_rfc3339_us
from centflow.limits import BPS_WHOLE, MESSAGE_BYTES_MAX, MICROS_PER_SECOND
from centflow.money.amounts import minor_unit_exponent

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
_US_PER_HOUR = 3600 * MICROS_PER_SECOND
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_encode = msgspec.json.Encoder().encode
_decode_object = msgspec.json.Decoder(dict[str, Any]).decode
# Text the hot path would otherwise format for every line, made once. Scores are
# written by msgspec itself, so they read exactly as in an encoded dict.
_MILLIS_TEXT = tuple(f".{millis:03d}" for millis in range(1000))
_TWO_DIGITS = tuple(f"{number:02d}" for number in range(60))
_MINUTE_TEXTS_MAX = 4096  # minutes whose text `_Generator._second_text` keeps
_SCORE_TEXT_1000 = tuple(_encode(score / 1000).decode() for score in range(1000))
_SCORE_TEXT_10000 = tuple(_encode(score / 10_000).decode() for score in range(10_000))
_EXTRA_TAILS = tuple(b"," + _encode(fields)[1:] for fields in _EXTRA_FIELDS)
# Guide tables: cells per entry of a cumulative-weight table (see `_Ranks`).
_GUIDE_CELLS_PER_ENTRY = 1 / 16
_GUIDE_CELLS_MIN = 64

#: Fraud scenarios `generate_lines(..., scenarios=...)` can mix into a log.
SCENARIOS = ("card-testing", "account-takeover", "velocity-abuse", "refund-abuse")
_EPISODES_PER_EVENT = 3 / 100_000  # episodes of each scenario, at least one from 2000 lines
_EPISODES_MIN_COUNT = 2000
_P_FRAUD_CHARGEBACK = {"card-testing": 0.15, "account-takeover": 0.6}
_FRAUD_CHARGEBACK_LINES_MAX = 20_000  # well inside the refund pool and the de-duplication horizon
# Where taken-over accounts are suddenly used from: never a home country of a payer.
_TAKEOVER_COUNTRIES = ("NG", "RO", "VN", "UA", "ID", "PH", "TR", "MX", "CO", "KE")
_REFUND_ABUSE_RECENT = 3000  # a refund-abusing payee picks from its payments among these
# Traffic weight of each UTC hour with ``diurnal=True``: about 5 times more by day than at night.
_DIURNAL_WEIGHTS = (
    3,
    2,
    2,
    2,
    2,
    3,
    4,
    6,
    8,
    10,
    11,
    12,
    12,
    12,
    12,
    12,
    12,
    11,
    10,
    9,
    8,
    6,
    5,
    4,
)
# Payee directory: share of payees settling in their main currency, then in USD (else EUR).
_P_SETTLE_MAIN = 0.8
_P_SETTLE_USD = 0.6
# FX random walk: per-step relative move, and the pull back towards the reference rate.
_FX_STEP = 0.0004
_FX_REVERSION = 0.02
_FX_SIGNIFICANT_DIGITS = 10


class LogLine(NamedTuple):
    """One generated line: what it is, the dead-letter reason it must get, its bytes.

    `kind` is ``payment``, ``refund`` or ``chargeback`` for a valid event
    (reason ``""``), ``duplicate`` (reason ``duplicate``), or a key of
    `FAULT_REASONS`.
    """

    kind: str
    reason: str
    raw: bytes


class ScenarioLabel(NamedTuple):
    """A line that belongs to a fraud episode (one line of a labels file).

    `episode` numbers the episodes of a log from 1, across scenarios, in the
    order they start.
    """

    event_id: str
    scenario: str
    episode: int

    def as_json(self) -> bytes:
        return _encode(
            {"event_id": self.event_id, "scenario": self.scenario, "episode": self.episode}
        )


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
    # Fraud scenarios: lines per scenario, episodes per scenario, and chargebacks that
    # disputes of fraudulent payments bring later (counted in `chargebacks`, not labelled).
    scenario_events: dict[str, int] = field(default_factory=dict)
    episodes: dict[str, int] = field(default_factory=dict)
    fraud_chargebacks: int = 0
    #: The labelled lines, in log order (not in `as_dict`).
    labels: list[ScenarioLabel] = field(default_factory=list, repr=False)

    @property
    def valid(self) -> int:
        """Lines that decode and pass admission: payments, refunds, chargebacks."""
        return self.payments + self.refunds + self.chargebacks

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed.values())

    def as_dict(self) -> dict[str, Any]:
        labels, self.labels = self.labels, []
        try:
            summary = asdict(self)
        finally:
            self.labels = labels
        del summary["labels"]
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
    scale: int  # 10**digits
    large_units: int  # 5000 in units of 10**-digits: larger payments may go by swift


class _Ranks(NamedTuple):
    """Ranks drawn by cumulative weight: `rank` of a uniform draw is exactly
    ``bisect_right(cumulative, draw * total, 0, len(cumulative) - 1)``.

    A guide table narrows each search: cell ``int(x * scale)`` of ``x = draw * total``
    holds every x whose rank lies in ``guide[cell]..guide[cell + 2]`` (the cells'
    bounds are taken with a hundredth of a cell to spare, far above rounding
    error), so a draw probes a few neighbouring entries instead of a score of
    entries scattered over a long table. Both tables are flat arrays: the
    payers' would not fit in a cache as a list of float objects.

    >>> ranks = _Ranks.of([1.0, 3.0, 6.0])
    >>> [ranks.rank(draw) for draw in (0.0, 0.1666, 0.1667, 0.5, 0.9999)]
    [0, 0, 1, 2, 2]
    """

    cumulative: array[float]
    total: float
    scale: float  # guide cells per unit of weight
    guide: array[int]

    @classmethod
    def of(cls, cumulative: list[float]) -> _Ranks:
        last, total = len(cumulative) - 1, cumulative[-1]
        cells = max(_GUIDE_CELLS_MIN, int(len(cumulative) * _GUIDE_CELLS_PER_ENTRY))
        invariant(total > 0 and cumulative[0] > 0, "weights must be positive")
        scale = cells / total
        # x < total, so int(x * scale) <= cells: cells + 3 entries cover cell + 2.
        guide = array(
            "q",
            [bisect_right(cumulative, (cell - 0.01) / scale, 0, last) for cell in range(cells + 3)],
        )
        invariant(guide[0] == 0 and guide[-1] == last, "guide table does not span the ranks")
        return cls(array("d", cumulative), total, scale, guide)

    def rank(self, draw: float) -> int:
        x = draw * self.total
        cell = int(x * self.scale)
        return bisect_right(self.cumulative, x, self.guide[cell], self.guide[cell + 2])


class _Payer(msgspec.Struct, frozen=True, gc=False):
    """A payer: made on first use, so there are many; like `_OpenPayment`, a struct
    the garbage collector does not track (it refers to strings, an int and a tuple
    of strings only)."""

    payer_id: str
    country: str
    offset_min: int
    devices: tuple[str, ...]
    ip: str


class _OpenPayment(msgspec.Struct, eq=False, gc=False):
    """A valid payment refunds may still reverse, and what is left of it.

    One is made for every payment, so it is a struct the garbage collector does
    not track (it refers to strings, ints and tuples only: no cycle can pass
    through it), cheap to make and to free.
    """

    event_id: str
    payer: _Payer
    payee: _Payee
    currency: str
    remaining: int  # in units of 10**-digits
    digits: int
    occurred_us: int
    rail: str
    country: str


def generate_lines(
    count: int,
    *,
    seed: int = 7,
    start_us: int,
    duration_s: int,
    window_hint_s: int = 60,
    faults: bool = True,
    scenarios: Sequence[str] = (),
    diurnal: bool = False,
    stats: GenerateStats | None = None,
) -> Iterator[LogLine]:
    """Yield `count` labelled lines in log order; fill `stats` (if given) as they go.

    Lines of fraud `scenarios` are valid events (kind ``payment`` or
    ``refund``); which they are, is in ``stats.labels`` (appended to as each
    such line is yielded), so pass `stats` to know them.
    """
    stats = GenerateStats() if stats is None else stats
    generator = _Generator(
        count, seed, start_us, duration_s, window_hint_s, faults, stats, scenarios, diurnal
    )
    return map(LogLine._make, generator.lines())


def generate_events(
    count: int,
    *,
    seed: int = 7,
    start_us: int,
    duration_s: int,
    window_hint_s: int = 60,
    faults: bool = True,
    scenarios: Sequence[str] = (),
    diurnal: bool = False,
) -> Iterator[bytes]:
    """Yield `count` JSON lines (bytes without newline) in log order."""
    lines = generate_lines(
        count,
        seed=seed,
        start_us=start_us,
        duration_s=duration_s,
        window_hint_s=window_hint_s,
        faults=faults,
        scenarios=scenarios,
        diurnal=diurnal,
    )
    return (line.raw for line in lines)


def write_log(
    path: Path,
    count: int,
    *,
    seed: int = 7,
    start_us: int,
    duration_s: int,
    window_hint_s: int = 60,
    faults: bool = True,
    scenarios: Sequence[str] = (),
    diurnal: bool = False,
    labels_path: Path | None = None,
    compresslevel: int = 3,
) -> GenerateStats:
    """Write a generated log to `path` (gzip if it ends in ``.gz``), atomically.

    Arguments are those of `generate_events`, plus gzip's `compresslevel`
    (low by default: generation speed matters more than size). One line per
    event, each ending in ``\\n``. With `scenarios`, the labels of the fraud
    lines go to `labels_path` (default ``<path>.labels.jsonl``; keep it out of
    a directory that is replayed as a log), one JSON object a line:
    ``{"event_id", "scenario", "episode"}``.
    """
    path = Path(path)
    stats = GenerateStats()
    generator = _Generator(
        count, seed, start_us, duration_s, window_hint_s, faults, stats, scenarios, diurnal
    )
    _write_atomic(path, lambda write: _write_lines(write, generator.lines()), compresslevel)
    if labels_path is None and scenarios:
        labels_path = path.with_name(f"{path.name}.labels.jsonl")
    if labels_path is not None:
        _write_atomic(Path(labels_path), _json_lines(label.as_json() for label in stats.labels))
    return stats


def write_fx_rates(
    path: Path,
    *,
    seed: int = 7,
    start_us: int,
    duration_s: int,
    interval_s: int = 60,
) -> int:
    """Write an FX-rate stream for the generator's currencies; return its line count.

    Every `interval_s` from `start_us` to ``start_us + duration_s`` (both
    included), one line per currency the generator uses other than USD:
    ``{"base": "USD", "quote": ..., "rate": ..., "as_of": ...}`` (units of
    quote per US dollar), in time order. Each rate is a seeded random walk
    pulled back towards a realistic level, written as decimal text with 10
    significant digits (at most 12 fraction digits). Gzipped if `path` ends
    in ``.gz``; written atomically.
    """
    if duration_s < 0 or interval_s <= 0:
        raise ConfigError(
            f"duration ({duration_s} s) must be >= 0 and interval ({interval_s} s) > 0"
        )
    random = Random(f"centflow-fx:{seed}").random
    references = {code: spec[1] for code, spec in _CURRENCIES.items() if code != "USD"}
    rates = dict(references)
    steps = duration_s // interval_s + 1

    def lines() -> Iterator[bytes]:
        for step in range(steps):
            as_of = _Generator._render(start_us + step * interval_s * MICROS_PER_SECOND, 0, "")
            for quote, reference in references.items():
                rate = rates[quote]
                if step:
                    rate *= 1 + _FX_STEP * (2 * random() - 1)
                    rate += _FX_REVERSION * (reference - rate)
                    rates[quote] = rate
                line = {"base": "USD", "quote": quote, "rate": _format_rate(rate), "as_of": as_of}
                yield _encode(line)

    _write_atomic(Path(path), _json_lines(lines()))
    return steps * len(references)


def write_payee_directory(path: Path, *, seed: int = 7, events: int) -> int:
    """Write the settlement currency of each payee of the log of `events` lines and
    this `seed`; return the number of payees.

    One line per payee of the generator's pool (`GenerateStats.payees` of
    them; the payees fraud scenarios invent are not listed, so they settle in
    their events' currency), in payee-number order: ``{"payee_id",
    "settlement_currency"}``. Most payees settle in their main currency, the
    others in USD or EUR (never their own). The pool depends only on `seed`
    and `events`, not on faults, scenarios or time. Gzipped if `path` ends in
    ``.gz``; written atomically.
    """
    generator = _Generator(events, seed, 0, 1, 1, False, GenerateStats(), (), False)
    random = Random(f"centflow-payees:{seed}").random
    entries = []
    for payee in generator.payees:
        currency = payee.currency
        if random() >= _P_SETTLE_MAIN:
            other = "USD" if random() < _P_SETTLE_USD else "EUR"
            currency = other if other != currency else payee.secondary_currency
        entries.append((int(payee.payee_id.rpartition("-")[2]), payee.payee_id, currency))
    entries.sort()
    lines = (
        _encode({"payee_id": payee_id, "settlement_currency": currency})
        for _, payee_id, currency in entries
    )
    _write_atomic(Path(path), _json_lines(lines))
    return len(entries)


def _json_lines(lines: Iterable[bytes]) -> Callable[[Callable[[bytes], Any]], None]:
    def body(write: Callable[[bytes], Any]) -> None:
        for line in lines:
            write(line + b"\n")

    return body


def _write_atomic(
    path: Path, body: Callable[[Callable[[bytes], Any]], None], compresslevel: int = 3
) -> None:
    """Write a file through `body(write)`, gzipped if its name ends in ``.gz``, and
    rename it into place only once it is complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with partial.open("wb") as file:
            if path.name.endswith(".gz"):
                # No file name and time zero in the header: same content, same header.
                with gzip.GzipFile(
                    filename="", mode="wb", fileobj=file, compresslevel=compresslevel, mtime=0
                ) as stream:
                    body(stream.write)
            else:
                body(file.write)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _format_rate(rate: float) -> str:
    """A positive rate as decimal text with `_FX_SIGNIFICANT_DIGITS` significant digits.

    >>> _format_rate(150.123456789), _format_rate(0.376), _format_rate(0.000123456789012)
    ('150.1234568', '0.3760000000', '0.000123456789')
    """
    integer_digits = len(str(int(rate))) if rate >= 1 else 0
    fraction_digits = _FX_SIGNIFICANT_DIGITS - integer_digits
    if rate < 1:  # count the leading zeros of the fraction as well
        scaled = rate
        while scaled < 0.1 and fraction_digits < 12:
            scaled *= 10
            fraction_digits += 1
    fraction_digits = max(1, min(12, fraction_digits))
    return f"{rate:.{fraction_digits}f}"


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
        while not failures:
            chunk = [raw for _, _, raw in islice(lines, chunk_lines)]
            if not chunk:
                break
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
        scenarios: Sequence[str] = (),
        diurnal: bool = False,
    ) -> None:
        if isinstance(scenarios, str):
            scenarios = (scenarios,)
        unknown = sorted(set(scenarios) - set(SCENARIOS))
        if unknown:
            raise ConfigError(f"unknown scenario(s) {unknown}: choose from {list(SCENARIOS)}")
        if count < 0:
            raise ConfigError(f"event count must be >= 0, got {count}")
        if duration_s <= 0 or window_hint_s <= 0:
            raise ConfigError(
                f"duration ({duration_s} s) and window ({window_hint_s} s) must be > 0"
            )
        self.count = count
        self.seed = seed
        self.event_prefix = f"evt-{seed}-"
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
                10 ** minor_unit_exponent(code),
                5000 * 10 ** minor_unit_exponent(code),
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
        self.payee_ranks = _Ranks.of(
            list(accumulate(1 / rank for rank in range(1, payee_count + 1)))
        )
        self.payer_ranks = _Ranks.of(
            list(
                accumulate(
                    1 / rank for rank in range(_PAYER_RANK_SHIFT, payer_count + _PAYER_RANK_SHIFT)
                )
            )
        )
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
        self.minute_cached = -1
        self.minute_text = ""
        self.minute_texts: dict[int, str] = {}  # local minute since the epoch -> "...THH:MM:"
        stats.payees = payee_count
        self.diurnal = diurnal
        if diurnal:
            self._diurnal_segments(duration_s)
        # Fraud episodes: (due line, sequence, action), drawn from a stream of their own.
        self.scheduled: list[tuple[int, int, Callable[[int], _Emitted | None]]] = []
        if scenarios:
            self.scenarios: _Scenarios | None = _Scenarios(self, sorted(set(scenarios)))
        else:
            self.scenarios = None

    # -- event time of a line

    def _diurnal_segments(self, duration_s: int) -> None:
        """Cut the span at UTC hour boundaries; each piece has its hour's traffic weight."""
        end_rel = duration_s * MICROS_PER_SECOND
        starts, weights, cumulative = [], [], []
        at_rel, total = 0, 0.0
        while at_rel < end_rel:
            absolute = self.start_us + at_rel
            hour = absolute // _US_PER_HOUR % 24
            next_rel = min(end_rel, (absolute // _US_PER_HOUR + 1) * _US_PER_HOUR - self.start_us)
            weight = float(_DIURNAL_WEIGHTS[hour])
            starts.append(float(at_rel))
            weights.append(weight)
            cumulative.append(total)
            total += weight * (next_rel - at_rel)
            at_rel = next_rel
        self.segment_starts, self.segment_weights = starts, weights
        self.segment_cumulative, self.segment_last = cumulative, len(starts) - 1
        self.weight_per_line = total / max(self.count, 1)

    def clock_at(self, position: float) -> int:
        """The event time (µs) of a position in the log (line number plus a fraction)."""
        if not self.diurnal:
            return self.start_us + int(position * self.step_us)
        target = position * self.weight_per_line
        index = bisect_right(self.segment_cumulative, target, 0, self.segment_last + 1) - 1
        elapsed = self.segment_starts[index] + (
            (target - self.segment_cumulative[index]) / self.segment_weights[index]
        )
        return self.start_us + int(elapsed)

    def position_at(self, at_us: int) -> float:
        """The inverse of `clock_at`: where in the log the clock reads `at_us`."""
        elapsed = float(at_us - self.start_us)
        if not self.diurnal:
            return elapsed / self.step_us
        index = max(0, bisect_right(self.segment_starts, elapsed, 0, self.segment_last + 1) - 1)
        target = self.segment_cumulative[index] + (
            (elapsed - self.segment_starts[index]) * self.segment_weights[index]
        )
        return target / self.weight_per_line

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
        device_count = 1 + int(random() * 3)
        devices: tuple[str, ...] = (f"dev-{int(random() * _DEVICE_IDS):012x}",)
        while len(devices) < device_count:
            devices += (f"dev-{int(random() * _DEVICE_IDS):012x}",)
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
            fraction = _MILLIS_TEXT[occurred_us % MICROS_PER_SECOND // 1000]
        elif draw < 0.97:
            fraction = f".{occurred_us % MICROS_PER_SECOND:06d}"
        else:
            occurred_us -= occurred_us % MICROS_PER_SECOND
            fraction = ""
        second = occurred_us // MICROS_PER_SECOND
        if offset_min and random() < _P_OFFSET:  # what `_render` writes, through the caches
            self.stats.offset_timestamps += 1
            local_text = self._second_text(second + offset_min * 60)
            return f"{local_text}{fraction}{_zone_text(offset_min)}", occurred_us
        if second != self.second_cached:
            self.second_cached = second
            minute = second // 60
            if minute != self.minute_cached:
                self.minute_cached = minute
                self.minute_text = self._render(occurred_us, 0, "")[:-3]  # up to "HH:MM:"
            self.second_text = f"{self.minute_text}{second % 60:02d}"
        return f"{self.second_text}{fraction}Z", occurred_us

    def _second_text(self, second: int) -> str:
        """``YYYY-MM-DDTHH:MM:SS`` of a (local) second since the epoch; minutes' text cached."""
        minute, second_of_minute = divmod(second, 60)
        minute_text = self.minute_texts.get(minute)
        if minute_text is None:
            if len(self.minute_texts) >= _MINUTE_TEXTS_MAX:
                self.minute_texts.clear()
            minute_us = minute * 60 * MICROS_PER_SECOND
            minute_text = self.minute_texts[minute] = self._render(minute_us, 0, "")[:-3]
        return minute_text + _TWO_DIGITS[second_of_minute]

    @staticmethod
    def _render(occurred_us: int, offset_min: int, fraction: str) -> str:
        local_us = occurred_us + offset_min * 60 * MICROS_PER_SECOND
        day, of_day = divmod(local_us, _US_PER_DAY)
        seconds = of_day // MICROS_PER_SECOND
        clock = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        return f"{_day_text(day)}T{clock}{fraction}{_zone_text(offset_min)}"

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
        units = int(major * profile.scale)
        return units or 1, digits, False

    # -- events

    def _payment(self, number: int, occurred_us: int) -> tuple[bytes, _OpenPayment, bool, bool]:
        """A valid payment: its wire object as JSON, what refunds need of it, whether
        it is sub-minor, whether it has splits.

        The JSON is written here, byte for byte what msgspec writes for the
        object (keys in this order, no spaces): every string in it is made here
        of ASCII letters, digits and ``-.:``, which JSON writes as they are.
        """
        random = self.random
        cumulative, total, scale, guide = self.payee_ranks  # inlined `_Ranks.rank`, twice
        x = random() * total
        cell = int(x * scale)
        payee = self.payees[bisect_right(cumulative, x, guide[cell], guide[cell + 2])]
        cumulative, total, scale, guide = self.payer_ranks
        x = random() * total
        cell = int(x * scale)
        rank = bisect_right(cumulative, x, guide[cell], guide[cell + 2])
        payer = self.payers[rank] or self._make_payer(rank)
        currency = payee.currency if random() >= _P_SECONDARY_CURRENCY else payee.secondary_currency
        profile = self.profiles[currency]
        units, digits, sub_minor = self._amount(profile)
        rails = profile.rails
        rail = rails[
            bisect_right(profile.rail_cumulative, random() * profile.rail_total, 0, len(rails) - 1)
        ]
        large_units = 5000 * 10**digits if sub_minor else profile.large_units
        if units > large_units and random() < 0.5:
            rail = "swift"
        country = payer.country
        if random() < _P_CROSS_BORDER:
            countries = profile.countries
            country = countries[int(random() * len(countries))]
        occurred_at, occurred_us = self._timestamp(occurred_us, payer.offset_min)
        event_id = f"{self.event_prefix}{number}"
        text = (
            f'{{"event_id":"{event_id}","type":"payment","occurred_at":"{occurred_at}",'
            f'"payer_id":"{payer.payer_id}","payee_id":"{payee.payee_id}",'
            f'"amount":"{_format_units(units, digits)}","currency":"{currency}",'
            f'"rail":"{rail}","country":"{country}"'
        )
        draw = random()
        if draw < 0.83:
            devices = payer.devices
            text += f',"device_id":"{devices[int(random() * len(devices))]}"'
        elif draw < 0.85:  # a device never seen before
            text += f',"device_id":"dev-{self._hex(12)}"'
        if random() < 0.9:
            text += f',"ip":"{payer.ip}"'
        with_splits = random() < _P_SPLITS
        if with_splits:
            text += f',"splits":{self._splits(payee)}'
        if random() < (0.5 if rail == "card" else 0.15):
            text += f',"risk_signals":{self._risk_signals(rail)}'
        opened = _OpenPayment(
            event_id, payer, payee, currency, units, digits, occurred_us, rail, country
        )
        return f"{text}}}".encode(), opened, sub_minor, with_splits

    def _splits(self, payee: _Payee) -> str:
        """The splits array as JSON text: the payee's parties, basis points summing to whole."""
        parties = payee.split_parties
        cuts: set[int] = set()
        while len(cuts) < len(parties) - 1:
            cuts.add(1 + self._below(BPS_WHOLE - 1))
        bounds = [0, *sorted(cuts), BPS_WHOLE]
        splits = ",".join(
            f'{{"party_id":"{party}","bps":{bounds[index + 1] - bounds[index]}}}'
            for index, party in enumerate(parties)
        )
        return f"[{splits}]"

    def _risk_signals(self, rail: str) -> str:
        """The risk signals object as JSON text (scores of 1/1000 or 1/10 000)."""
        random = self.random
        signals = []
        if rail == "card":
            signals.append('"bin_score":' + _SCORE_TEXT_1000[int(random() * 1000)])
        if rail != "card" or random() < 0.3:
            signals.append('"device_score":' + _SCORE_TEXT_1000[int(random() * 1000)])
        if random() < 0.1:
            signals.append('"upstream_model":' + _SCORE_TEXT_10000[int(random() * 10_000)])
        return "{" + ",".join(signals) + "}"

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
        raw, _, _, _ = self._payment(number, clock_us)
        event = _decode_object(raw)  # rare: a malformed line starts as a valid one
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
        scheduled, diurnal, clock_at = self.scheduled, self.diurnal, self.clock_at
        start_us, step_us, payment = self.start_us, self.step_us, self._payment
        encode, p_reversal = _encode, _P_REFUND + _P_CHARGEBACK
        for number in range(self.count):
            stats.events += 1
            if pending and pending[0][0] <= number:
                stats.duplicates += 1
                yield "duplicate", "duplicate", heapq.heappop(pending)[2]
                continue
            if scheduled and scheduled[0][0] <= number:
                emitted = self._scheduled_line(number)
                if emitted is not None:
                    kind, raw, rendered_us = emitted
                    if rendered_us > high_us:
                        high_us = rendered_us
                    yield kind, "", raw
                    continue
            if diurnal:
                clock_us = clock_at(number + random())
            else:
                clock_us = start_us + int((number + random()) * step_us)
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
            if draw < p_reversal:
                reversed_payment = self._open_payment()
                if reversed_payment is not None:
                    kind = "refund" if draw < _P_REFUND else "chargeback"
            if reversed_payment is None:
                raw, opened, sub_minor, with_splits = payment(number, occurred_us)
                rendered_us = opened.occurred_us
                if len(open_payments) < _REFUND_POOL:
                    open_payments.append(opened)
                else:
                    open_payments[stats.payments % _REFUND_POOL] = opened
                stats.payments += 1
                if sub_minor:
                    stats.sub_minor_amounts += 1
                if with_splits:
                    stats.with_splits += 1
            else:
                event, rendered_us, held = self._reversal(
                    number, kind, reversed_payment, occurred_us, clock_us
                )
                raw = encode(event)
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
            if random() < _P_EXTRA:  # as if the fields were added to the object: at its end
                raw = raw[:-1] + _EXTRA_TAILS[int(random() * len(_EXTRA_TAILS))]
                stats.extra_fields += 1
            if faults and random() < _P_DUPLICATE:
                due = number + 1 + self._below(_DUPLICATE_DELAY_LINES_MAX)
                heapq.heappush(pending, (due, number, raw))
            yield kind, "", raw

    def _scheduled_line(self, number: int) -> _Emitted | None:
        """The first due scenario line that comes about (an action may come to nothing)."""
        scheduled = self.scheduled
        while scheduled and scheduled[0][0] <= number:
            emitted = heapq.heappop(scheduled)[2](number)
            if emitted is not None:
                return emitted
        return None

    def remember(self, opened: _OpenPayment) -> None:
        """Count a valid payment and put it in the pool refunds pick from."""
        open_payments, stats = self.open_payments, self.stats
        if len(open_payments) < _REFUND_POOL:
            open_payments.append(opened)
        else:
            open_payments[stats.payments % _REFUND_POOL] = opened
        stats.payments += 1

    def recent_payments(self, limit: int) -> list[_OpenPayment]:
        """Up to `limit` of the most recent payments in the pool, oldest first."""
        pool = self.open_payments
        if len(pool) < _REFUND_POOL:
            return pool[-limit:]
        newest = self.stats.payments % _REFUND_POOL  # the oldest entry of a full ring
        return (pool[newest:] + pool[:newest])[-limit:]


#: What a scenario action puts on a line: (kind, bytes, the event time it says).
_Emitted = tuple[str, bytes, int]


class _Scenarios:
    """Fraud episodes mixed into a log, drawn from their own random stream.

    Each episode is planned when its first line comes: it picks its people
    from the log so far and schedules its lines (`_Generator.scheduled`),
    which take the place of ordinary lines. Everything here draws from
    ``Random("centflow-scenarios:<seed>")``; the main stream is only
    consumed by the ordinary lines, so a log without scenarios is unchanged.
    Event times follow the log's clock at each scheduled line, so a burst of
    n lines spans their share of event time: "within a minute or two" needs
    a log of at least about one line a second.
    """

    def __init__(self, generator: _Generator, scenarios: list[str]) -> None:
        self.generator = generator
        self.random = Random(f"centflow-scenarios:{generator.seed}").random
        self.sequence = 0
        self.scenario_payment_ids: set[str] = set()
        self.fresh_payer_ids: set[str] = set()
        self.fresh_payers = 0
        self.fresh_payees = 0
        count = generator.count
        per_scenario = (
            max(1, round(count * _EPISODES_PER_EVENT)) if count >= _EPISODES_MIN_COUNT else 0
        )
        starts = sorted(
            (int(count * (0.15 + 0.75 * self.random())), scenario)
            for scenario in scenarios
            for _ in range(per_scenario)
        )
        for episode, (line, scenario) in enumerate(starts, 1):
            self.schedule(line, partial(self._start, scenario, episode))

    # -- helpers

    def schedule(self, line: int, action: Callable[[int], _Emitted | None]) -> None:
        self.sequence += 1
        heapq.heappush(self.generator.scheduled, (line, self.sequence, action))

    def _below(self, bound: int) -> int:
        return int(self.random() * bound)

    def _hex(self, digits: int) -> str:
        return format(self._below(16**digits), f"0{digits}x")

    def _ip(self) -> str:
        return f"100.{64 + self._below(64)}.{self._below(256)}.{1 + self._below(254)}"

    def _slots(self, number: int, size: int, span_s: float) -> list[int]:
        """`size` distinct lines from `number` on (`number` first), within `span_s`
        seconds of event time if the log is dense enough, else consecutive-ish."""
        generator = self.generator
        end = generator.position_at(generator.clock_at(number) + int(span_s * MICROS_PER_SECOND))
        span = max(size, int(end) - number)
        chosen = {0}
        while len(chosen) < size:
            chosen.add(self._below(span))
        return [number + offset for offset in sorted(chosen)]

    def _clock(self, number: int) -> int:
        return self.generator.clock_at(number + self.random())

    def _timestamp(self, occurred_us: int, offset_min: int) -> tuple[str, int]:
        """Like `_Generator._timestamp` (the same mix of precisions and offsets)."""
        draw = self.random()
        if draw < 0.82:
            occurred_us -= occurred_us % 1000
            fraction = f".{occurred_us % MICROS_PER_SECOND // 1000:03d}"
        elif draw < 0.97:
            fraction = f".{occurred_us % MICROS_PER_SECOND:06d}"
        else:
            occurred_us -= occurred_us % MICROS_PER_SECOND
            fraction = ""
        if not offset_min or self.random() >= _P_OFFSET:
            offset_min = 0
        else:
            self.generator.stats.offset_timestamps += 1
        return _Generator._render(occurred_us, offset_min, fraction), occurred_us

    def _rail(self, profile: _Profile) -> str:
        rails = profile.rails
        draw = self.random() * profile.rail_total
        return rails[bisect_right(profile.rail_cumulative, draw, 0, len(rails) - 1)]

    def _established(self) -> _OpenPayment | None:
        """A recent ordinary payment of a payer of the log's pool."""
        pool = self.generator.open_payments
        for _ in range(50):
            if not pool:
                return None
            opened = pool[self._below(len(pool))]
            if (
                opened.event_id not in self.scenario_payment_ids
                and opened.payer.payer_id not in self.fresh_payer_ids
            ):
                return opened
        return None

    def _fresh_payer(self) -> _Payer:
        """A payer never seen before, with one new device and an address of its own."""
        generator = self.generator
        self.fresh_payers += 1
        number = generator.payer_numbers[2] + self.fresh_payers
        countries = generator.payer_countries
        country = countries[self._below(len(countries))]
        payer = _Payer(
            f"payer-{number}",
            country,
            _COUNTRY_OFFSETS_MIN.get(country, 0),
            (f"dev-{self._hex(12)}",),
            self._ip(),
        )
        self.fresh_payer_ids.add(payer.payer_id)
        generator.stats.payers += 1
        return payer

    def _fresh_payee(self, currency: str) -> _Payee:
        """A payee never seen before (a mule account: not in the payee directory)."""
        self.fresh_payees += 1
        payee_id = f"payee-{self.generator.payee_numbers[2] + self.fresh_payees}"
        return _Payee(payee_id, currency, "EUR" if currency == "USD" else "USD", (payee_id,))

    def _units(self, profile: _Profile, usd: float) -> int:
        return max(1, int(usd * profile.units_per_usd * 10**profile.digits))

    def _emit(
        self,
        scenario: str,
        episode: int,
        kind: str,
        event: dict[str, Any],
        occurred_us: int,
        opened: _OpenPayment | None = None,
    ) -> _Emitted:
        generator = self.generator
        stats = generator.stats
        if opened is not None:
            generator.remember(opened)
            self.scenario_payment_ids.add(opened.event_id)
        elif kind == "refund":
            stats.refunds += 1
        stats.scenario_events[scenario] = stats.scenario_events.get(scenario, 0) + 1
        stats.labels.append(ScenarioLabel(event["event_id"], scenario, episode))
        return kind, _encode(event), occurred_us

    def _payment(
        self,
        number: int,
        payer: _Payer,
        payee: _Payee,
        currency: str,
        units: int,
        rail: str,
        country: str,
        device_id: str,
        ip: str,
        risk_signals: dict[str, float] | None = None,
    ) -> tuple[dict[str, Any], _OpenPayment]:
        profile = self.generator.profiles[currency]
        occurred_at, occurred_us = self._timestamp(self._clock(number), payer.offset_min)
        event_id = f"evt-{self.generator.seed}-{number}"
        event: dict[str, Any] = {
            "event_id": event_id,
            "type": "payment",
            "occurred_at": occurred_at,
            "payer_id": payer.payer_id,
            "payee_id": payee.payee_id,
            "amount": _format_units(units, profile.digits),
            "currency": currency,
            "rail": rail,
            "country": country,
            "device_id": device_id,
            "ip": ip,
        }
        if risk_signals:
            event["risk_signals"] = risk_signals
        opened = _OpenPayment(
            event_id, payer, payee, currency, units, profile.digits, occurred_us, rail, country
        )
        return event, opened

    def _dispute_later(self, scenario: str, opened: _OpenPayment, number: int) -> None:
        """Perhaps schedule the chargeback the real card or account holder files later."""
        if self.random() >= _P_FRAUD_CHARGEBACK.get(scenario, 0.0):
            return
        generator = self.generator
        delay_us = int((1800 + 9000 * self.random()) * MICROS_PER_SECOND)
        due = int(generator.position_at(opened.occurred_us + delay_us))
        due = min(max(due, number + 1), number + _FRAUD_CHARGEBACK_LINES_MAX)
        if due < generator.count:
            self.schedule(due, partial(self._chargeback, opened))

    def _chargeback(self, opened: _OpenPayment, number: int) -> _Emitted | None:
        if not opened.remaining:  # refunded in full meanwhile
            return None
        units, opened.remaining = opened.remaining, 0
        occurred_at, occurred_us = self._timestamp(self._clock(number), opened.payer.offset_min)
        if occurred_us <= opened.occurred_us:
            occurred_us = opened.occurred_us + 1000 - opened.occurred_us % 1000
            fraction = f".{occurred_us % MICROS_PER_SECOND // 1000:03d}"
            occurred_at = _Generator._render(occurred_us, 0, fraction)
        generator = self.generator
        event = generator._reversal_object(
            number, "chargeback", occurred_at, opened, opened.payee.payee_id, units
        )
        generator.stats.chargebacks += 1
        generator.stats.fraud_chargebacks += 1
        return "chargeback", _encode(event), occurred_us

    # -- episodes

    def _start(self, scenario: str, episode: int, number: int) -> None:
        """Plan an episode from `number` on; its first line is due at `number` itself."""
        planned = getattr(self, "_plan_" + scenario.replace("-", "_"))(scenario, episode, number)
        if planned:
            stats = self.generator.stats
            stats.episodes[scenario] = stats.episodes.get(scenario, 0) + 1
        return None

    def _plan_card_testing(self, scenario: str, episode: int, number: int) -> bool:
        """Tens of tiny card payments at one payee within a minute or two, each from a
        new payer on a new device: someone checking which stolen cards work."""
        payees = self.generator.payees
        payee = payees[self._below(len(payees))]
        size = 20 + self._below(41)
        for line in self._slots(number, size, 40 + 50 * self.random()):
            self.schedule(line, partial(self._card_test, scenario, episode, payee))
        return True

    def _card_test(self, scenario: str, episode: int, payee: _Payee, number: int) -> _Emitted:
        profile = self.generator.profiles[payee.currency]
        payer = self._fresh_payer()
        if self.random() < 0.3:
            usd = (0.01, 0.5, 1.0)[self._below(3)]
        else:
            usd = 0.01 + 0.99 * self.random()
        signals = None
        if self.random() < 0.8:
            signals = {"bin_score": (600 + self._below(400)) / 1000}
        event, opened = self._payment(
            number,
            payer,
            payee,
            payee.currency,
            self._units(profile, usd),
            "card",
            payer.country,
            payer.devices[0],
            payer.ip,
            signals,
        )
        self._dispute_later(scenario, opened, number)
        return self._emit(scenario, episode, "payment", event, opened.occurred_us, opened)

    def _plan_account_takeover(self, scenario: str, episode: int, number: int) -> bool:
        """An established payer suddenly sends several large payments to new payees,
        from a new device and address, in a country it never paid from."""
        known = self._established()
        if known is None:
            return False
        payer = known.payer
        countries = [country for country in _TAKEOVER_COUNTRIES if country != payer.country]
        country = countries[self._below(len(countries))]
        device_id, ip = f"dev-{self._hex(12)}", self._ip()
        mules = [self._fresh_payee(known.currency) for _ in range(1 + self._below(3))]
        size = 3 + self._below(6)
        for index, line in enumerate(self._slots(number, size, 120 + 900 * self.random())):
            mule = mules[index] if index < len(mules) else mules[self._below(len(mules))]
            self.schedule(
                line,
                partial(
                    self._takeover,
                    scenario,
                    episode,
                    payer,
                    mule,
                    known.currency,
                    country,
                    device_id,
                    ip,
                ),
            )
        return True

    def _takeover(
        self,
        scenario: str,
        episode: int,
        payer: _Payer,
        payee: _Payee,
        currency: str,
        country: str,
        device_id: str,
        ip: str,
        number: int,
    ) -> _Emitted:
        profile = self.generator.profiles[currency]
        usd = 1 / (1 / 300 - self.random() * (1 / 300 - 1 / 6000))  # 300 to 6000, heavy-tailed
        units = self._units(profile, usd)
        rail = "swift" if usd > 3000 and self.random() < 0.5 else self._rail(profile)
        event, opened = self._payment(
            number, payer, payee, currency, units, rail, country, device_id, ip
        )
        self._dispute_later(scenario, opened, number)
        return self._emit(scenario, episode, "payment", event, opened.occurred_us, opened)

    def _plan_velocity_abuse(self, scenario: str, episode: int, number: int) -> bool:
        """One payer pays many different payees in a few minutes."""
        known = self._established()
        if known is None:
            return False
        payees = self.generator.payees
        size = min(15 + self._below(26), len(payees))
        chosen: dict[int, None] = {}
        while len(chosen) < size:
            chosen[self._below(len(payees))] = None
        lines = self._slots(number, size, 120 + 360 * self.random())
        for line, index in zip(lines, chosen, strict=True):
            self.schedule(
                line, partial(self._velocity, scenario, episode, known.payer, payees[index])
            )
        return True

    def _velocity(
        self, scenario: str, episode: int, payer: _Payer, payee: _Payee, number: int
    ) -> _Emitted:
        profile = self.generator.profiles[payee.currency]
        units = self._units(profile, 0.5 + 30 * self.random())
        devices = payer.devices
        event, opened = self._payment(
            number,
            payer,
            payee,
            payee.currency,
            units,
            self._rail(profile),
            payer.country,
            devices[self._below(len(devices))],
            payer.ip,
        )
        return self._emit(scenario, episode, "payment", event, opened.occurred_us, opened)

    def _plan_refund_abuse(self, scenario: str, episode: int, number: int) -> bool:
        """A payee refunds most of its recent payments (to accomplices, or to launder)."""
        by_payee: dict[str, list[_OpenPayment]] = {}
        for opened in self.generator.recent_payments(_REFUND_ABUSE_RECENT):
            if opened.event_id not in self.scenario_payment_ids:
                by_payee.setdefault(opened.payee.payee_id, []).append(opened)
        candidates = [payments for payments in by_payee.values() if 4 <= len(payments) <= 25]
        if not candidates:
            return False
        payments = candidates[self._below(len(candidates))]
        share = 0.7 + 0.3 * self.random()
        open_ones = [opened for opened in payments if opened.remaining]
        for index in range(len(open_ones) - 1, 0, -1):  # shuffle
            other = self._below(index + 1)
            open_ones[index], open_ones[other] = open_ones[other], open_ones[index]
        chosen = open_ones[: max(3, round(share * len(payments)))]
        if len(chosen) < 3:
            return False
        lines = self._slots(number, len(chosen), 120 + 1080 * self.random())
        for line, opened in zip(lines, chosen, strict=True):
            self.schedule(line, partial(self._refund, scenario, episode, opened))
        return True

    def _refund(
        self, scenario: str, episode: int, opened: _OpenPayment, number: int
    ) -> _Emitted | None:
        if not opened.remaining:  # reversed meanwhile
            return None
        full = self.random() < 0.75
        units = opened.remaining if full else 1 + self._below(opened.remaining)
        opened.remaining -= units
        occurred_at, occurred_us = self._timestamp(self._clock(number), opened.payer.offset_min)
        if occurred_us <= opened.occurred_us:
            occurred_us = opened.occurred_us + 1000 - opened.occurred_us % 1000
            fraction = f".{occurred_us % MICROS_PER_SECOND // 1000:03d}"
            occurred_at = _Generator._render(occurred_us, 0, fraction)
        event = self.generator._reversal_object(
            number, "refund", occurred_at, opened, opened.payee.payee_id, units
        )
        return self._emit(scenario, episode, "refund", event, occurred_us)


def _weighted_table(pairs: tuple[tuple[str, int], ...]) -> tuple[list[float], float, list[str]]:
    """(cumulative weights, total, names) of weighted names."""
    cumulative = list(accumulate(float(weight) for _, weight in pairs))
    return cumulative, cumulative[-1], [name for name, _ in pairs]


def _choose(table: tuple[list[float], float, list[str]], draw: float) -> str:
    cumulative, total, names = table
    return names[bisect_right(cumulative, draw * total, 0, len(names) - 1)]


@cache
def _zone_text(offset_min: int) -> str:
    """``Z``, or the UTC offset ``+HH:MM``/``-HH:MM`` of a local time.

    >>> _zone_text(0), _zone_text(330), _zone_text(-180)
    ('Z', '+05:30', '-03:00')
    """
    if not offset_min:
        return "Z"
    hours, minutes = divmod(abs(offset_min), 60)
    return f"{'+' if offset_min > 0 else '-'}{hours:02d}:{minutes:02d}"


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
    """``python -m centflow.generate.logs PATH --events N --seed S``: write a log, print its stats."""
    parser = argparse.ArgumentParser(
        prog="python -m centflow.generate.logs", description=main.__doc__
    )
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
    parser.add_argument(
        "--scenario",
        action="append",
        choices=SCENARIOS,
        default=[],
        help="mix in episodes of this fraud scenario (repeatable)",
    )
    parser.add_argument(
        "--diurnal", action="store_true", help="pace event time by a daily cycle (UTC hours)"
    )
    parser.add_argument(
        "--labels", type=Path, help="labels file of the scenario lines (default PATH.labels.jsonl)"
    )
    parser.add_argument(
        "--fx-rates", type=Path, help="also write USD FX rates over the log's span here"
    )
    parser.add_argument(
        "--payee-directory", type=Path, help="also write the payees' settlement currencies here"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    start_us = parse_rfc3339_us(args.start)
    stats = write_log(
        args.path,
        args.events,
        seed=args.seed,
        start_us=start_us,
        duration_s=args.duration_s,
        window_hint_s=args.window_hint_s,
        faults=not args.no_faults,
        scenarios=tuple(args.scenario),
        diurnal=args.diurnal,
        labels_path=args.labels,
    )
    extra: dict[str, Any] = {}
    if args.scenario:
        extra["labels"] = str(args.labels or args.path.with_name(f"{args.path.name}.labels.jsonl"))
    if args.fx_rates:
        write_fx_rates(args.fx_rates, seed=args.seed, start_us=start_us, duration_s=args.duration_s)
        extra["fx_rates"] = str(args.fx_rates)
    if args.payee_directory:
        write_payee_directory(args.payee_directory, seed=args.seed, events=args.events)
        extra["payee_directory"] = str(args.payee_directory)
    elapsed = time.perf_counter() - started
    summary = stats.as_dict() | extra | {"path": str(args.path), "seconds": round(elapsed, 3)}
    print(json.dumps(summary, indent=2), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
