"""Risk features from bounded per-key state, as of a moment in ingestion time.

Two books of state, each owned by the shard that owns its key:

- `PayeeBook` (payee shards): how busy a payee is, how many payers are new to it,
  and how many of its payments are tiny: the marks of card testing (bursts of
  tiny payments from many fresh cards at one payee); and how many refunds it
  made against its payments: the mark of refund abuse.
- `PayerBook` (payer shards): a payer's velocity over several horizons, its
  amount against its own history, the time since its previous payment,
  distinct payees, and novelty (first time this device, ip, country, payee):
  the marks of account takeover and velocity abuse.

**As of.** An event ingested at ``t`` is described by what was ingested before
``as_of_us(t)``, the start of its second (`AS_OF_STEP_US`). State only ever
grows by whole seconds, in ingestion order (`commit`), and only once every input
has moved past that second; so the features of an event are a function of the
log alone, never of the order in which partitions or workers delivered it, and
an event never waits for the slowest partition by more than the rest of its
second. Events of the same second do not see each other. The sequencing lives in
`centflow.risk.shard`; this module only keeps state and answers questions of it.

Bounds: a payer keeps its last `PAYER_RECENT_MAX` payments within
`PAYER_RECENT_S` (older ones fold into running moments, so velocity counts
saturate there), and at most `PAYER_FIRSTS_MAX` first sightings; a payee keeps
the seconds of its last `PAYEE_HORIZON_S` and `PAYEE_PAYERS_MAX` payers. A key
idle for `KEY_IDLE_S` is forgotten (its next event finds it new); whether a key
is idle is judged on ingestion times at commit, so forgetting changes no
feature in a way that depends on timing.

**Snapshots.** A book's state is one MessagePack bytes object (`PayerBook.state`):
pickle would walk every payer's lists and dicts and remember each in its memo,
which took seconds a snapshot for a few hundred thousand payers and held their
copies meanwhile; msgspec encodes a payer in about a microsecond.

Amounts become floats here, and only here: model features are logarithms of the
amount in its currency's major unit. No float ever goes back into money.
"""

from __future__ import annotations

import math
import struct
from array import array
from bisect import bisect_left
from sys import intern

import msgspec
from xxhash import xxh3_64_intdigest

from centflow.limits import MICROS_PER_SECOND, MICROS_PER_UNIT
from centflow.money.amounts import minor_unit_exponent
from centflow.risk.packed import ENCODER, decoder

AS_OF_STEP_US = MICROS_PER_SECOND
PAYER_RECENT_S = 24 * 3600
PAYER_RECENT_MAX = 256
PAYER_FIRSTS_MAX = 64
PAYEE_HORIZON_S = 600
PAYEE_PAYERS_MAX = 50_000
KEY_IDLE_S = 30 * 24 * 3600
GAP_S_MAX = 30 * 24 * 3600
#: The most a payment may be and still count as tiny, per currency, in micro-units:
#: about one US dollar, which is what card testers try stolen cards with. A feature
#: threshold, not money: rounded magnitudes, kept as they are while rates drift. A
#: currency not listed falls back on its exponent: one major unit
#: (`TINY_UNITS`), or `TINY_UNITS_NO_MINOR` of a currency without minor units.
TINY_MICROS = {
    code: round(units * MICROS_PER_UNIT)
    for code, units in {
        "USD": 1, "EUR": 1, "GBP": 1, "CHF": 1, "CAD": 1.5, "AUD": 1.5, "NZD": 1.7,
        "SGD": 1.4, "HKD": 8, "CNY": 7, "TWD": 32, "INR": 85, "PKR": 280, "BRL": 5,
        "MXN": 18, "ARS": 900, "COP": 4000, "CLP": 900, "PEN": 4, "ZAR": 18, "NGN": 1500,
        "KES": 130, "EGP": 50, "MAD": 10, "TRY": 35, "PLN": 4, "CZK": 23, "HUF": 360,
        "RON": 5, "SEK": 10, "NOK": 10, "DKK": 7, "ISK": 140, "ILS": 3.7, "AED": 3.7,
        "SAR": 3.75, "QAR": 3.6, "BHD": 0.4, "KWD": 0.3, "OMR": 0.4, "JOD": 0.7,
        "TND": 3, "LYD": 5, "IQD": 1300, "JPY": 150, "KRW": 1400, "IDR": 16000,
        "VND": 25000, "PHP": 58, "THB": 35, "MYR": 4.5, "UGX": 3800, "XOF": 600,
        "XAF": 600, "CLF": 0.03, "UYU": 40,
    }.items()
}  # fmt: skip
TINY_UNITS = 1
TINY_UNITS_NO_MINOR = 150

PAYEE_FEATURES = (
    "payee_events_1m",
    "payee_new_payers_1m",
    "payee_new_payers_10m",
    "payee_tiny_share_1m",
    "payee_refunds_10m",
    "payee_refund_share_10m",
)
PAYER_FEATURES = (
    "payer_payments_1m",
    "payer_payments_10m",
    "payer_payments_1h",
    "payer_amount_1h",
    "payer_history",
    "payer_amount_z",
    "payer_gap",
    "payer_payees_10m",
    "new_device",
    "new_ip",
    "new_country",
    "new_payee",
    "log_amount",
    "tiny",
    "payer_age",
    "payer_burst",
    "payer_new_payees_10m",
    "device_age",
    "country_age",
    "payer_amount_rise",
)


def as_of_us(ingest_us: int) -> int:
    """The moment an event's features describe: the start of its second.

    >>> as_of_us(5_250_000), as_of_us(5_000_000)
    (5000000, 5000000)
    """
    return ingest_us - ingest_us % AS_OF_STEP_US


def log_amount(amount_micros: int) -> float:
    """log10 of an amount in major units (a model feature, never money).

    >>> log_amount(1_000_000), log_amount(100_000_000)
    (0.0, 2.0)
    """
    return math.log10(max(amount_micros, 1) / MICROS_PER_UNIT)


def is_tiny(amount_micros: int, currency: str) -> bool:
    """Whether an amount is tiny for its currency (about a dollar: `TINY_MICROS`).

    >>> is_tiny(500_000, "USD"), is_tiny(5_000_000, "USD"), is_tiny(4_000_000, "BRL")
    (True, False, True)
    >>> is_tiny(80 * 10**6, "INR"), is_tiny(100 * 10**6, "KMF"), is_tiny(900_000, "GEL")
    (True, True, True)
    """
    limit = _TINY_CACHE.get(currency)
    if limit is None:
        limit = TINY_MICROS.get(currency)
        if limit is None:
            units = TINY_UNITS if minor_unit_exponent(currency) else TINY_UNITS_NO_MINOR
            limit = units * MICROS_PER_UNIT
        _TINY_CACHE[currency] = limit
    return amount_micros <= limit


_TINY_CACHE: dict[str, int] = {}


class _Payee(msgspec.Struct, array_like=True, gc=False):
    """One payee: active seconds (ascending) with prefix sums of payments, tiny ones,
    first-time payers and refunds; the payers it has seen, as 64-bit keys in one
    sorted array (8 bytes a payer: a set of keys took some 80, a dict of strings and
    times some 130; an insert moves at most `PAYEE_PAYERS_MAX` keys, about 20 µs)."""

    seconds: list[int]
    events: list[int]  # prefix sums of payments, one per second
    tiny: list[int]
    new_payers: list[int]
    refunds: list[int]
    payers: array  # payer_key of each payer seen, ascending
    last_s: int


def payer_key(payer_id: str) -> int:
    """A payer as a 64-bit key (XXH3), the same in every process. Two payers of one
    payee sharing a key (odds about 1 in 10**10 for a payee's 50,000) would read as
    one: the second would not count as new.

    >>> payer_key("p1") == payer_key("p1") != payer_key("p2")
    True
    """
    return xxh3_64_intdigest(payer_id.encode()) - _SIGNED


class PayeeBook:
    """Payee state for one payee shard (see the module docstring)."""

    def __init__(self, payees: dict[str, _Payee] | None = None) -> None:
        self.payees: dict[str, _Payee] = payees or {}

    def commit(self, second: int, rows: list[tuple[str, str, bool, bool]]) -> None:
        """Add the events of one whole second: (payee, payer, tiny, refund) each: a
        payment, or a refund (which counts only as a refund)."""
        for payee_id, payer_id, tiny, refund in rows:
            payee = self.payees.get(payee_id)
            if payee is None or second - payee.last_s > KEY_IDLE_S:
                payee = self.payees[payee_id] = _Payee([], [], [], [], [], array("q"), second)
            if not payee.seconds or payee.seconds[-1] != second:
                _trim(payee, second - PAYEE_HORIZON_S)
                payee.seconds.append(second)
                for prefix in (payee.events, payee.tiny, payee.new_payers, payee.refunds):
                    prefix.append(prefix[-1] if prefix else 0)
            payee.last_s = second
            if refund:
                payee.refunds[-1] += 1
                continue
            payer = payer_key(payer_id)
            payers = payee.payers
            at = bisect_left(payers, payer)
            new = at == len(payers) or payers[at] != payer
            if new:
                if len(payers) >= PAYEE_PAYERS_MAX:
                    del payers[:]  # bounded: the payee's payers are all new again
                    at = 0
                payers.insert(at, payer)
            payee.events[-1] += 1
            payee.tiny[-1] += tiny
            payee.new_payers[-1] += new

    def features(self, payee_id: str, as_of_s: int) -> tuple[float, ...]:
        """`PAYEE_FEATURES` of a payee as of a second (state holds only earlier seconds)."""
        payee = self.payees.get(payee_id)
        if payee is None or not payee.seconds or as_of_s - payee.last_s > KEY_IDLE_S:
            return (0.0,) * len(PAYEE_FEATURES)
        minute = _since(payee, as_of_s - 60)
        ten = _since(payee, as_of_s - 600)
        events_1m = _window(payee.events, minute)
        tiny_1m = _window(payee.tiny, minute)
        refunds_10m = _window(payee.refunds, ten)
        return (
            float(events_1m),
            float(_window(payee.new_payers, minute)),
            float(_window(payee.new_payers, ten)),
            tiny_1m / events_1m if events_1m else 0.0,
            float(refunds_10m),
            refunds_10m / max(_window(payee.events, ten), 1),
        )

    def state(self) -> bytes:
        """The book as one bytes object (see "Snapshots" in the module docstring)."""
        return ENCODER.encode(self.payees)

    @classmethod
    def restore(cls, state: bytes) -> PayeeBook:
        return cls(_PAYEES.decode(state))


def _since(payee: _Payee, first_s: int) -> int:
    return bisect_left(payee.seconds, first_s)


def _window(prefix: list[int], start: int) -> int:
    """The sum from index `start` to the end, from prefix sums."""
    if start >= len(prefix):
        return 0
    return prefix[-1] - (prefix[start - 1] if start else 0)


def _trim(payee: _Payee, first_s: int) -> None:
    """Drop seconds before `first_s` (the prefix sums keep their meaning: differences)."""
    cut = bisect_left(payee.seconds, first_s)
    if cut > len(payee.seconds) // 2 and cut > 16:
        keep = slice(cut - 1, None)  # keep one before the horizon as the base
        payee.seconds = payee.seconds[keep]
        payee.events = payee.events[keep]
        payee.tiny = payee.tiny[keep]
        payee.new_payers = payee.new_payers[keep]
        payee.refunds = payee.refunds[keep]
        payee.seconds[0] = first_s - 1  # the base entry lies before every window


#: A payer's state, packed in one ``array("q")``: a header of these four integers
#: and the running moments of the log-amounts of all its payments (two doubles,
#: their 64 bits in the slots `MOMENTS` and after); then its recent payments'
#: ingestion µs, their micro-units and their payees' keys (`RECENT` each,
#: ascending ingestion), then the keys of its first sightings and their ingestion
#: µs (`FIRSTS` each), then to the end the ingestion µs of its first payments to a
#: new payee within the last hour. Its first payment's time is its first
#: sighting's: a payer's first payment records four, and sightings are never let
#: go (only capped), so that needs no slot of its own.
#:
#: One array, not a list and a dict per field: a payer seen once held some 1.2 KB
#: as lists of int objects, a dict of key strings and a record; so about 0.3 KB.
COUNT, LAST_US, RECENT, FIRSTS, MOMENTS = range(5)
_HEADER = MOMENTS + 2
_MOMENTS = struct.Struct("=dd")  # sum and sum of squares, at slot MOMENTS
_MOMENTS_AT = MOMENTS * 8
_HOUR_US = 3600 * MICROS_PER_SECOND
_SIGNED = 2**63  # an unsigned 64-bit hash less this fits an int64


def _first_payment(
    ingest_us: int,
    amount_micros: int,
    payee_id: str,
    device_id: str | None,
    ip: str | None,
    country: str,
) -> array:
    """A payer's state after its first payment, built at its exact size (most payers
    pay once in a while: an array grown by inserts would hold a third more)."""
    keys = _sightings(payee_id, country, device_id, ip)
    header = (1, ingest_us, 1, len(keys), 0, 0)
    data = array("q", (*header, ingest_us, amount_micros, keys[0], *keys, *(ingest_us,) * 5))
    value = log_amount(amount_micros)
    _MOMENTS.pack_into(data, _MOMENTS_AT, value, value * value)
    return data


def _sightings(
    payee_id: str, country: str, device_id: str | None, ip: str | None
) -> tuple[int, int, int, int]:
    """The keys a payment's sightings are recorded under, its payee's first."""
    return (
        sighting_key("p", payee_id),
        sighting_key("c", country),
        sighting_key("d", device_id),
        sighting_key("i", ip),
    )


def sighting_key(kind: str, value: object) -> int:
    """A first sighting (``p`` payee, ``c`` country, ``d`` device, ``i`` ip) as a
    signed 64-bit integer, the same in every process (Python's own `hash` of a
    string is not): XXH3, fast and well spread. Two values of one payer sharing a key (odds about 1 in 10**16
    for 64 sightings) would read as one: the second would not look new.

    >>> sighting_key("d", "phone-1") == sighting_key("d", "phone-1") != sighting_key("i", "phone-1")
    True
    """
    return xxh3_64_intdigest(f"{kind}:{value}".encode()) - _SIGNED


class PayerBook:
    """Payer state for one payer shard (see the module docstring)."""

    def __init__(self, payers: dict[str, array] | None = None) -> None:
        self.payers: dict[str, array] = payers or {}

    def commit(
        self,
        payer_id: str,
        ingest_us: int,
        amount_micros: int,
        payee_id: str,
        device_id: str | None,
        ip: str | None,
        country: str,
    ) -> None:
        """Add one payment (calls come in ingestion order, a whole second at a time)."""
        data = self.payers.get(payer_id)
        if data is None or ingest_us - data[LAST_US] > KEY_IDLE_S * MICROS_PER_SECOND:
            self.payers[intern(payer_id)] = _first_payment(
                ingest_us, amount_micros, payee_id, device_id, ip, country
            )
            return
        recent, firsts = data[RECENT], data[FIRSTS]
        horizon_us = ingest_us - PAYER_RECENT_S * MICROS_PER_SECOND
        at = _HEADER
        if recent and (recent >= PAYER_RECENT_MAX or data[at] < horizon_us):
            kept = bisect_left(data, horizon_us, at, at + recent) - at
            cut = max(kept, recent - PAYER_RECENT_MAX + 1)
            for start in (at + 2 * recent, at + recent, at):  # the last section first
                del data[start : start + cut]
            recent -= cut
        sightings = _sightings(payee_id, country, device_id, ip)
        payee = sightings[0]
        data.insert(at + 3 * recent, payee)  # each section's end, the last one first
        data.insert(at + 2 * recent, amount_micros)
        data.insert(at + recent, ingest_us)
        recent += 1
        data[RECENT] = recent
        data[COUNT] += 1
        value = log_amount(amount_micros)
        total, squares = _MOMENTS.unpack_from(data, _MOMENTS_AT)
        _MOMENTS.pack_into(data, _MOMENTS_AT, total + value, squares + value * value)
        keys = at + 3 * recent
        seen = data[keys : keys + firsts].tolist()  # a list: `in` without boxing each key
        for kind, key in enumerate(sightings):
            if firsts >= PAYER_FIRSTS_MAX or key in seen:
                continue
            seen.append(key)
            data.insert(keys + 2 * firsts, ingest_us)
            data.insert(keys + firsts, key)
            firsts += 1
            if kind == 0:  # a new payee
                data.append(ingest_us)
                fresh = keys + 2 * firsts
                cutoff_us = ingest_us - _HOUR_US
                if data[fresh] < cutoff_us:
                    del data[fresh : bisect_left(data, cutoff_us, fresh, len(data))]
        data[FIRSTS] = firsts
        data[LAST_US] = ingest_us

    def features(
        self,
        payer_id: str,
        as_of: int,
        amount_micros: int,
        payee_id: str,
        device_id: str | None,
        ip: str | None,
        country: str,
        tiny: bool,
    ) -> list[float]:
        """`PAYER_FEATURES` of a payment as of `as_of` µs (state holds only earlier ones)."""
        value = log_amount(amount_micros)
        data = self.payers.get(payer_id)
        if data is None or as_of - data[LAST_US] > KEY_IDLE_S * MICROS_PER_SECOND:
            gap = math.log1p(GAP_S_MAX)
            return [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, gap, 0.0, 1.0, 1.0, 1.0, 1.0, value, float(tiny), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]  # fmt: skip
        count, last_us, recent, firsts = data[:MOMENTS]
        total, squares = _MOMENTS.unpack_from(data, _MOMENTS_AT)
        times = _HEADER
        amounts = times + recent
        payees = amounts + recent
        keys = payees + recent
        fresh = keys + 2 * firsts
        first_us = data[keys + firsts]  # its first sighting's: its first payment's
        minute = bisect_left(data, as_of - 60 * MICROS_PER_SECOND, times, amounts) - times
        ten = bisect_left(data, as_of - 600 * MICROS_PER_SECOND, times, amounts) - times
        hour = bisect_left(data, as_of - _HOUR_US, times, amounts) - times
        amount_1h = sum(data[amounts + hour : payees]) / MICROS_PER_UNIT  # a feature, not money
        mean = total / count
        variance = max(squares / count - mean * mean, 0.0)
        z = (value - mean) / math.sqrt(variance + 0.25) if count >= 3 else 0.0
        gap_s = (as_of - last_us) / MICROS_PER_SECOND
        seen = data[keys : keys + firsts].tolist()  # a list: `in` without boxing each key
        full = firsts >= PAYER_FIRSTS_MAX  # cannot tell new from forgotten: not new
        age_s = max(as_of - first_us, 0) / MICROS_PER_SECOND
        recent_10m = recent - ten  # payments in the last 10 minutes
        before = count - recent_10m  # every payment before them
        span_s = max(age_s - 600, 600)  # the rate before the last 10 minutes
        expected = before * 600 / span_s
        payee, country_key, device, ip_key = _sightings(payee_id, country, device_id, ip)
        device_us = data[keys + firsts + seen.index(device)] if device in seen else None
        country_us = data[keys + firsts + seen.index(country_key)] if country_key in seen else None
        unknown_age = math.log1p(age_s) if full else 0.0
        fresh_10m = bisect_left(data, as_of - 600 * MICROS_PER_SECOND, fresh, len(data)) - fresh
        return [
            float(recent - minute),
            float(recent - ten),
            float(recent - hour),
            math.log1p(amount_1h),
            math.log1p(count),
            z,
            math.log1p(min(max(gap_s, 0.0), GAP_S_MAX)),
            float(len(set(data[payees + ten : keys]))),
            float(device_id is not None and device_us is None and not full),
            float(ip is not None and ip_key not in seen and not full),
            float(country_us is None and not full),
            float(payee not in seen and not full),
            value,
            float(tiny),
            math.log1p(age_s),
            math.log1p(recent_10m) - math.log1p(expected),
            float(len(data) - fresh - fresh_10m),
            math.log1p(max(as_of - device_us, 0) / MICROS_PER_SECOND) if device_us is not None else unknown_age,
            math.log1p(max(as_of - country_us, 0) / MICROS_PER_SECOND) if country_us is not None else unknown_age,
            value - mean,
        ]  # fmt: skip

    def state(self) -> bytes:
        """The book as one bytes object (see "Snapshots" in the module docstring)."""
        return ENCODER.encode(self.payers)

    @classmethod
    def restore(cls, state: bytes) -> PayerBook:
        return cls({intern(payer): entry for payer, entry in _PAYERS.decode(state).items()})


_PAYEES = decoder(dict[str, _Payee])
_PAYERS = decoder(dict[str, array])
