"""FX: a batch in its events' currency, paid in its payee's settlement currency.

Inputs, files read once at start (a bad line is one `ConfigError` naming file and line):

- **Rates** (``--fx-rates FILE``, JSON lines, plain or gzipped; or, in a run
  from Kafka without a file, the messages of the ``fx-rates`` topic, below):
  ``{"base", "quote", "rate", "as_of"}``, ``rate`` a positive decimal string
  (units of quote per one base) with at most 12 fractional digits, below
  1,000,000. A rate is in force from its ``as_of`` until the next one for the
  same pair. A pair the file does not give directly is derived: the inverse
  of the opposite pair, or a cross through a currency both are quoted against
  (USD first, then EUR, then the others in code order). A derived rate, as
  every rate used, is a decimal of 12 places (half-even); that is the rate
  stored, so the amounts can be recomputed from what is stored.
- **Payee directory** (``--payee-directory FILE``, JSON lines
  ``{"payee_id", "settlement_currency"}``; and in a run from Kafka, the
  messages of ``--payee-directory-topic``, each in force from its ingestion,
  `decode_payee_messages`): a payee it does not list settles in its events'
  currency.

Conversion, per batch whose settlement currency differs from its currency:
every event converts at the rate in force at its own event time (latest
``as_of`` at or before ``occurred_at``), at full precision (micro-units ×
rate, exact integers); the batch's fees convert at the rate of its latest
event (the batch's ``fx_rate``). The exact sum is truncated once, toward zero,
to micro-units of the settlement currency: ``converted`` (below one micro-unit
is below the pipeline's unit of account). An FX spread of ``spread_bps``
(``[fx] spread_bps``) is kept as revenue: ``spread = floor(converted ×
spread_bps / 10 000)`` when converted is positive (a reversal earns none), and
the payee is credited ``converted − spread``. Payout, carry and splits then
work in the settlement currency (`centflow.money.payouts`).

A batch with an event for which no rate is in force is **never converted at a
guessed rate**: it is marked ``awaiting_rate``, pays nothing, and its net stays
on the payee's payable in the event currency (as does one whose converted
amount would not fit DECIMAL(18,6), ``fx_overflow``). `settlement_fx` holds,
per batch and rate used, the events' signed amount at that rate, so
``trunc(Σ amount × rate − fees × fx_rate)`` recomputes ``converted`` exactly.

**Rates from the topic** (`decode_rate_messages`, `RateBook.add`). Each message
is one rate line; one that is not a usable rate is a dead letter with a reason
code, never a rate. A rate's ingestion time is its message timestamp, and the
topic's partitions are inputs of settlement's frontier, so a window that closes
at ``C`` converts with exactly the rates ingested before ``C``, whatever the
order the topics were read in (`centflow.money.settlement`). A batch missing a
rate then waits (``[fx] rate_wait_s``; its row is written ``awaiting_rate``
once the wait is over) and settles when a rate completing it is ingested, at
that rate's ingestion time (`centflow.money.netting.settle_awaiting`). Rates
older than ``[fx] rate_horizon_s`` are forgotten, each pair keeping the one in
force at the cut (`RateBook.prune_before`): an older event then finds no rate.
"""

from __future__ import annotations

import gzip
import operator
from bisect import bisect_right
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from centflow.config import FxConfig
from centflow.errors import ConfigError, InvalidEvent, invariant
from centflow.ingest.events import DeadLetter
from centflow.ingest.timeparse import parse_rfc3339_us
from centflow.limits import BATCH_MICROS_MAX
from centflow.money.amounts import is_currency

RATE_DIGITS = 12
RATE_SCALE = 10**RATE_DIGITS  #: rates travel as int units of 10⁻¹²
RATE_LIMIT = 10**6  #: every rate is below this (DECIMAL(18,12))
BPS_WHOLE = 10_000
ENTRIES_MAX = 50_000_000
#: Currencies a cross rate may go through, in order of preference.
CROSS_FIRST = ("USD", "EUR")

#: ``settlement_fx`` in flight: per batch and rate used.
FX_SCHEMA = pa.schema(
    [
        ("batch_id", pa.string()),
        ("base", pa.string()),
        ("quote", pa.string()),
        ("rate_e12", pa.int64()),
        ("as_of_us", pa.int64()),
        ("events", pa.int64()),
        ("amount_micros", pa.int64()),
    ]
)


class _RateLine(msgspec.Struct):
    base: str
    quote: str
    rate: str
    as_of: str


class _PayeeLine(msgspec.Struct):
    payee_id: str
    settlement_currency: str


def parse_rate(text: str) -> int:
    """A rate's decimal text as int units of 10⁻¹²; `ValueError` if it is not a
    positive decimal of at most 12 fractional digits below `RATE_LIMIT`.

    >>> parse_rate("1.0850"), parse_rate("0.000000000001")
    (1085000000000, 1)
    """
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"rate {text!r} is not a decimal") from None
    if not text or not text.replace(".", "", 1).isdigit():
        raise ValueError(f"rate {text!r} is not a plain positive decimal")
    scaled = value.scaleb(RATE_DIGITS)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"rate {text!r} has more than {RATE_DIGITS} fractional digits")
    if not 0 < value < RATE_LIMIT:
        raise ValueError(f"rate {text!r} must be > 0 and < {RATE_LIMIT}")
    return int(scaled)


def _checked_rate(entry: _RateLine) -> tuple[str, str, int, int]:
    """(base, quote, as-of µs, rate 10⁻¹²) of a rate line; `InvalidEvent` with a reason
    code (``unknown_currency``, ``invalid_rate``, ``invalid_timestamp``) if unusable."""
    if not (is_currency(entry.base) and is_currency(entry.quote)):
        raise InvalidEvent(
            "unknown_currency",
            f"{entry.base[:8]}/{entry.quote[:8]} is not a pair of ISO 4217 codes",
        )
    if entry.base == entry.quote:
        raise InvalidEvent("invalid_rate", f"base and quote are both {entry.base}")
    try:
        rate = parse_rate(entry.rate)
    except ValueError as error:
        raise InvalidEvent("invalid_rate", str(error)[:200]) from None
    return entry.base, entry.quote, parse_rfc3339_us(entry.as_of), rate


def _divide_half_even(numerator: int, denominator: int) -> int:
    quotient, remainder = divmod(numerator, denominator)
    if 2 * remainder > denominator or (2 * remainder == denominator and quotient % 2):
        quotient += 1
    return quotient


def _lines(path: Path, what: str) -> list[bytes]:
    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise ConfigError(f"cannot read the {what} {path}: {error}") from None
    return data.splitlines()


class Series(msgspec.Struct, array_like=True):
    """One pair's rates in time order: as-of times (µs) and rates (10⁻¹²)."""

    as_of_us: list[int]
    rates: list[int]

    def at(self, times_us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rate, as-of) in force at each time; rate 0 where none is."""
        index = np.searchsorted(np.array(self.as_of_us, dtype=np.int64), times_us, side="right") - 1
        known = index >= 0
        safe = np.where(known, index, 0)
        rates = np.array(self.rates, dtype=np.int64)[safe] if self.rates else np.zeros(len(safe), np.int64)  # fmt: skip
        as_of = np.array(self.as_of_us, dtype=np.int64)[safe] if self.rates else np.zeros(len(safe), np.int64)  # fmt: skip
        return np.where(known, rates, 0), np.where(known, as_of, 0)


class RateBook:
    """Every pair's rates, as given and as derived (inverse, cross), cached per pair."""

    def __init__(self, given: dict[tuple[str, str], Series]) -> None:
        self.given = given
        self._pairs: dict[tuple[str, str], Series | None] = {}

    @classmethod
    def read(cls, path: Path) -> RateBook:
        """The rates file; a bad line is a one-line ConfigError naming it."""
        decoder = msgspec.json.Decoder(_RateLine)
        points: dict[tuple[str, str], dict[int, int]] = {}
        for number, line in enumerate(_lines(path, "FX rates file"), 1):
            if not line.strip():
                continue
            try:
                entry = decoder.decode(line)
                base, quote, as_of, rate = _checked_rate(entry)
            except (msgspec.DecodeError, InvalidEvent) as error:
                raise ConfigError(f"{path}:{number}: not a usable FX rate ({error})") from None
            points.setdefault((base, quote), {})[as_of] = rate
            if number > ENTRIES_MAX:
                raise ConfigError(f"{path}: more than {ENTRIES_MAX} rates")
        return cls(
            {
                pair: Series(sorted(values), [values[t] for t in sorted(values)])
                for pair, values in points.items()
            }
        )

    def add(self, update: RateUpdate) -> None:
        """Put a rate read from the stream in force from its as-of time (the same pair
        and as-of again: the later one wins); derived pairs are derived again."""
        pair = (update.base, update.quote)
        series = self.given.get(pair)
        as_of, rates = (list(series.as_of_us), list(series.rates)) if series else ([], [])
        place = bisect_right(as_of, update.as_of_us)
        if place and as_of[place - 1] == update.as_of_us:
            rates[place - 1] = update.rate_e12
        else:
            as_of.insert(place, update.as_of_us)
            rates.insert(place, update.rate_e12)
        self.given[pair] = Series(as_of, rates)
        self._pairs.clear()

    def prune_before(self, cut_us: int) -> None:
        """Forget the rates that stopped being in force before `cut_us` (each pair keeps
        the one in force at `cut_us`): an event older than a pair's first rate kept
        has no rate, and awaits one, rather than taking a later one."""
        pruned = False
        for pair, series in list(self.given.items()):
            first = bisect_right(series.as_of_us, cut_us) - 1
            if first > 0:
                self.given[pair] = Series(series.as_of_us[first:], series.rates[first:])
                pruned = True
        if pruned:
            self._pairs.clear()

    def keeps(self, update: RateUpdate) -> bool:
        """Whether `update` is still among the given rates (not pruned)."""
        series = self.given.get((update.base, update.quote))
        return (
            series is not None and bool(series.as_of_us) and update.as_of_us >= series.as_of_us[0]
        )

    def series(self, base: str, quote: str) -> Series | None:
        """The rates of base→quote, derived when not given; None if they cannot be."""
        pair = (base, quote)
        if pair not in self._pairs:
            self._pairs[pair] = self._derive(base, quote)
        return self._pairs[pair]

    def _from(self, via: str, currency: str) -> Series | None:
        """via→currency as given or as the inverse of currency→via."""
        if via == currency:
            return None
        if (via, currency) in self.given:
            return self.given[(via, currency)]
        opposite = self.given.get((currency, via))
        if opposite is None:
            return None
        return Series(
            opposite.as_of_us,
            [_divide_half_even(RATE_SCALE * RATE_SCALE, rate) for rate in opposite.rates],
        )

    def _derive(self, base: str, quote: str) -> Series | None:
        direct = self._from(base, quote)
        if direct is not None:
            return direct
        codes = sorted({code for pair in self.given for code in pair})
        for via in (*CROSS_FIRST, *codes):
            to_base, to_quote = self._from(via, base), self._from(via, quote)
            if to_base is None or to_quote is None:
                continue
            times = sorted(set(to_base.as_of_us) | set(to_quote.as_of_us))
            as_of, rates = [], []
            for time in times:
                low = bisect_right(to_base.as_of_us, time) - 1
                high = bisect_right(to_quote.as_of_us, time) - 1
                if low < 0 or high < 0:
                    continue  # one leg not yet in force
                rate = _divide_half_even(to_quote.rates[high] * RATE_SCALE, to_base.rates[low])
                if 0 < rate < RATE_LIMIT * RATE_SCALE:
                    as_of.append(time)
                    rates.append(rate)
            return Series(as_of, rates)
        return None


class RateUpdate(msgspec.Struct, array_like=True, frozen=True, gc=False, tag=True):
    """A rate read from the ``fx-rates`` topic: when it was ingested (its message's
    timestamp, µs), the pair, its as-of time (µs) and the rate (10⁻¹²)."""

    ingest_us: int
    base: str
    quote: str
    as_of_us: int
    rate_e12: int


class PayeeUpdate(msgspec.Struct, array_like=True, frozen=True, gc=False, tag=True):
    """A payee directory entry read from its topic: when it was ingested (µs), the
    payee and its settlement currency from then on."""

    ingest_us: int
    payee_id: str
    settlement_currency: str


#: What the FX topics bring settlement, in the order they are put in force.
FxUpdate = RateUpdate | PayeeUpdate


class RateBlock:
    """What a partition of an FX topic (rates, or the payee directory) emits: the
    updates read, dead letters, its watermark."""

    __slots__ = ("dead", "partition", "rates", "watermark_us")

    def __init__(
        self, partition: str, rates: list[FxUpdate], dead: list[DeadLetter], watermark_us: int
    ) -> None:
        self.partition = partition
        self.rates = rates
        self.dead = dead
        self.watermark_us = watermark_us


class RateEnvelope(msgspec.Struct, frozen=True, array_like=True):
    """A settlement shard's copy of a `RateBlock` (every shard hears every update)."""

    origin: str
    shard: int
    watermark_us: int
    rates: list[FxUpdate]


def update_order(update: FxUpdate) -> tuple[int, int, str, str, int, int]:
    """Updates in the order they are put in force: by ingestion time, directory
    entries first, then by content (the same updates read in another order end the
    same)."""
    if isinstance(update, PayeeUpdate):
        return (update.ingest_us, 0, update.payee_id, update.settlement_currency, 0, 0)
    return (update.ingest_us, 1, update.base, update.quote, update.as_of_us, update.rate_e12)


#: A rate message is at most this long, like a payment (DESIGN.md).
RATE_MESSAGE_BYTES_MAX = 64 * 1024


def decode_rate_messages(
    sources: list[str], ingest_us: list[int], values: list[bytes]
) -> tuple[list[RateUpdate], list[DeadLetter]]:
    """The rates among messages of the ``fx-rates`` topic, and a dead letter for each
    message that is not a usable rate (reasons ``oversize``, ``invalid_json``,
    ``missing_field``, ``invalid_field``, ``unknown_currency``, ``invalid_rate``,
    ``invalid_timestamp``): never a guessed rate."""
    decoder = _rate_decoder
    rates: list[RateUpdate] = []
    dead: list[DeadLetter] = []
    for source, ingested, value in zip(sources, ingest_us, values, strict=True):
        try:
            base, quote, as_of, rate = _checked_rate(_decoded_line(decoder, value))
        except InvalidEvent as error:
            dead.append(DeadLetter(source, error.reason, error.detail, bytes(value), ingested))
            continue
        rates.append(RateUpdate(ingested, base, quote, as_of, rate))
    return rates, dead


_rate_decoder = msgspec.json.Decoder(_RateLine)


def decode_payee_messages(
    sources: list[str], ingest_us: list[int], values: list[bytes]
) -> tuple[list[PayeeUpdate], list[DeadLetter]]:
    """The directory entries among messages of the payee directory topic, and a dead
    letter for each message that is not one (``oversize``, ``invalid_json``,
    ``missing_field``, ``invalid_field`` for an id not of 1-64 characters,
    ``unknown_currency``)."""
    entries: list[PayeeUpdate] = []
    dead: list[DeadLetter] = []
    for source, ingested, value in zip(sources, ingest_us, values, strict=True):
        try:
            entry = _decoded_line(_payee_decoder, value)
            if not 1 <= len(entry.payee_id) <= 64:
                raise InvalidEvent("invalid_field", "payee_id must be 1-64 characters")
            if not is_currency(entry.settlement_currency):
                raise InvalidEvent(
                    "unknown_currency", f"{entry.settlement_currency[:8]!r} is not an ISO 4217 code"
                )
        except InvalidEvent as error:
            dead.append(DeadLetter(source, error.reason, error.detail, bytes(value), ingested))
            continue
        entries.append(PayeeUpdate(ingested, entry.payee_id, entry.settlement_currency))
    return entries, dead


def _decoded_line(decoder: msgspec.json.Decoder[Any], value: bytes) -> Any:
    """One JSON message decoded by `decoder`, or `InvalidEvent` with its reason."""
    if len(value) > RATE_MESSAGE_BYTES_MAX:
        raise InvalidEvent("oversize", f"{len(value)} bytes, over {RATE_MESSAGE_BYTES_MAX}")
    try:
        return decoder.decode(value)
    except msgspec.ValidationError as error:
        text = str(error)
        if text.startswith("Object missing"):
            reason = "missing_field"
        else:  # a field of the wrong type, or not a JSON object at all
            reason = "invalid_field" if " - at `$." in text else "invalid_json"
        raise InvalidEvent(reason, text[:200]) from None
    except msgspec.DecodeError as error:
        raise InvalidEvent("invalid_json", str(error)[:200]) from None


_payee_decoder = msgspec.json.Decoder(_PayeeLine)


def read_payee_directory(path: Path) -> dict[str, str]:
    """The payee directory as {payee_id: settlement currency}; a bad line is one
    ConfigError line naming it."""
    decoder = msgspec.json.Decoder(_PayeeLine)
    directory: dict[str, str] = {}
    for number, line in enumerate(_lines(path, "payee directory"), 1):
        if not line.strip():
            continue
        try:
            entry = decoder.decode(line)
        except msgspec.DecodeError as error:
            raise ConfigError(f"{path}:{number}: not a payee directory entry ({error})") from None
        if not 1 <= len(entry.payee_id) <= 64 or not is_currency(entry.settlement_currency):
            raise ConfigError(
                f"{path}:{number}: payee {entry.payee_id[:64]!r} needs a 1-64 character id and "
                f"an ISO 4217 settlement currency (got {entry.settlement_currency!r})"
            )
        directory[entry.payee_id] = entry.settlement_currency
        if len(directory) > ENTRIES_MAX:
            raise ConfigError(f"{path}: more than {ENTRIES_MAX} payees")
    return directory


class FxBook:
    """What settlement needs for FX: the rates, the payee directory, the spread."""

    def __init__(self, rates: RateBook, payees: dict[str, str], spread_bps: int) -> None:
        if not 0 <= spread_bps < BPS_WHOLE:
            raise ConfigError(f"FX spread {spread_bps} bps must be in 0..{BPS_WHOLE - 1}")
        self.rates = rates
        self.payees = payees
        self.spread_bps = spread_bps


#: A batch's FX status, coded in `Conversion.status`.
STATUS_NAMES = pa.array(["settled", "awaiting_rate", "fx_overflow"], pa.string())
SETTLED, AWAITING_RATE, FX_OVERFLOW = 0, 1, 2


class Conversion:
    """A window's batches after FX (one row per batch): the settlement currency, the
    status (``settled``, ``awaiting_rate``, ``fx_overflow``, coded as in `STATUS_NAMES`;
    `status_names` gives the text), the batch's rate (the
    latest event's, 10⁻¹²; `RATE_SCALE` when no conversion), what the net converted
    to, the spread kept, and what the payee is credited (its net when not
    converted); plus the `FX_SCHEMA` rows of the rates used."""

    __slots__ = (
        "converted",
        "credited",
        "currencies",
        "differs",
        "rate",
        "rows",
        "settlement_currency",
        "spread",
        "status",
    )

    def __init__(self, currencies: list[str], net: np.ndarray) -> None:
        size = len(currencies)
        self.currencies = currencies
        self.settlement_currency = list(currencies)
        self.differs = np.zeros(size, dtype=bool)  # settlement currency is not the batch's
        self.status = np.full(size, SETTLED, dtype=np.int8)  # codes into STATUS_NAMES
        self.rate = np.full(size, RATE_SCALE, dtype=np.int64)
        self.converted = np.zeros(size, dtype=np.int64)
        self.spread = np.zeros(size, dtype=np.int64)
        self.credited = net.copy()
        self.rows: pa.Table = FX_SCHEMA.empty_table()

    @property
    def held(self) -> np.ndarray:
        """Batches that pay nothing until they can be converted."""
        return self.status != SETTLED

    @property
    def fx(self) -> np.ndarray:
        """Batches converted from their currency."""
        return (self.status == SETTLED) & self.differs

    def status_names(self) -> pa.Array:
        """Each batch's status as text (``settled``, ``awaiting_rate``, ``fx_overflow``)."""
        return STATUS_NAMES.take(pa.array(self.status))


def convert(
    book: FxBook | None,
    events: pa.Table,
    starts: np.ndarray,
    counts: np.ndarray,
    is_payment: np.ndarray,
    batch_ids: pa.Array,
    payees: list[str],
    currencies: list[str],
    fees: np.ndarray,
    net: np.ndarray,
) -> Conversion:
    """The FX of a window's batches (see the module's rules). `events` are the window's
    sorted events, batch ``b`` its rows ``starts[b]`` to ``starts[b] + counts[b]``.

    A column at a time per currency pair: each row's rate by a binary search of its
    pair's as-of times, the exact products in Python ints held in NumPy object arrays
    (micro-units times 10⁻¹² rates pass int64), summed per batch in one pass.
    """
    result = Conversion(currencies, net)
    if book is None or not book.payees:
        return result
    invariant(len(payees) == len(currencies), "payees and currencies misaligned")
    targets = list(map(book.payees.get, payees, currencies))
    result.settlement_currency = targets
    differs = np.fromiter(map(operator.ne, targets, currencies), dtype=bool, count=len(targets))
    result.differs = differs
    by_pair: dict[tuple[str, str], list[int]] = {}
    for batch in np.flatnonzero(differs).tolist():
        by_pair.setdefault((currencies[batch], targets[batch]), []).append(batch)
    if not by_pair:
        return result
    occurred = events["occurred_us"].to_numpy()
    signed = np.where(is_payment, 1, -1) * events["amount_micros"].to_numpy()
    tables: list[pa.Table] = []
    for (currency, target), batch_list in sorted(by_pair.items()):
        batches = np.array(batch_list, dtype=np.int64)
        series = book.rates.series(currency, target)
        if series is None:
            result.status[batches] = AWAITING_RATE
            continue
        sizes = counts[batches]
        rows = np.repeat(starts[batches] - np.cumsum(sizes) + sizes, sizes) + np.arange(int(sizes.sum()))  # fmt: skip
        firsts = np.cumsum(sizes) - sizes  # each batch's first row among `rows`
        rates, as_of = series.at(occurred[rows])
        known = np.minimum.reduceat(rates, firsts) > 0
        last_rate = rates[firsts + sizes - 1]
        exact = np.add.reduceat(signed[rows].astype(object) * rates.astype(object), firsts)
        exact = exact - fees[batches].astype(object) * last_rate.astype(object)
        # 10⁻¹⁸ of the major unit to micro-units, toward zero, in Python ints
        converted = np.where(exact >= 0, exact // RATE_SCALE, -((-exact) // RATE_SCALE))
        fits = (np.abs(converted) <= BATCH_MICROS_MAX).astype(bool)
        result.status[batches[~fits]] = FX_OVERFLOW
        result.status[batches[~known]] = AWAITING_RATE
        done = known & fits
        kept = batches[done]
        value = converted[done].astype(np.int64)
        spread = np.where(value > 0, value * book.spread_bps // BPS_WHOLE, 0)
        result.rate[kept] = last_rate[done]
        result.converted[kept] = value
        result.spread[kept] = spread
        result.credited[kept] = value - spread
        # one row per (batch, rate used): events are in time order, so each rate's are contiguous
        row_done = np.repeat(done, sizes)
        row_batch = np.repeat(batches, sizes)[row_done]
        row_as_of, row_rate, row_signed = as_of[row_done], rates[row_done], signed[rows][row_done]
        if not len(row_batch):
            continue
        cuts = np.flatnonzero(
            np.concatenate(
                ([True], (row_batch[1:] != row_batch[:-1]) | (row_as_of[1:] != row_as_of[:-1]))
            )
        )
        tables.append(
            pa.table(
                [
                    batch_ids.take(pa.array(row_batch[cuts])),
                    pa.repeat(pa.scalar(currency, pa.string()), len(cuts)),
                    pa.repeat(pa.scalar(target, pa.string()), len(cuts)),
                    pa.array(row_rate[cuts]),
                    pa.array(row_as_of[cuts]),
                    pa.array(np.diff(np.append(cuts, len(row_batch)))),
                    pa.array(np.add.reduceat(row_signed, cuts)),
                ],
                schema=FX_SCHEMA,
            )
        )
    if tables:
        result.rows = pa.concat_tables(tables)
    return result


def fx_book(config: FxConfig) -> FxBook | None:
    """The FX inputs a configuration names, read and checked (None: no payee directory,
    file or topic, so nothing converts); a bad line is one ConfigError."""
    if config.payee_directory is None and config.payee_directory_topic is None:
        return None
    rates = RateBook.read(Path(config.rates)) if config.rates else RateBook({})
    payees = {} if config.payee_directory is None else read_payee_directory(Path(config.payee_directory))  # fmt: skip
    return FxBook(rates, payees, config.spread_bps)
