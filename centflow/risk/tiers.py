"""Tiered verification (KYC): each payer's tier and the limits that come with it.

A payer directory (JSON lines ``{"payer_id": ..., "tier": ...}``, the tier a
name from the configuration's tiers) gives a payer's verification tier; a payer
it does not list gets the lowest tier at once (frictionless), and the models
keep re-evaluating it as its behaviour accrues. A payment over its tier's limit
per payment, or that would take the payer's last 24 hours in that currency over
the daily limit, goes at least to ``review`` with reason ``tier_limit``.
Limits are in major units of the payment's currency (each tier may give a
currency its own, `centflow.config.Tier`); sums are exact integers.

What counts against the daily limit (`Spending`): the payer's payments of the
last 24 hours that were not declined (a declined payment moved no money; one
in review may still move it), as of the start of the payment's second, like
every risk feature. At most `SPENT_KEPT_MAX` payments per payer and currency
are kept: a payer past that many in a day is over any sane limit already.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from pathlib import Path
from sys import intern

import msgspec

from centflow.config import RiskConfig, Tier
from centflow.errors import ConfigError
from centflow.limits import MICROS_PER_SECOND, MICROS_PER_UNIT
from centflow.risk.packed import ENCODER, decoder

DAY_US = 86_400 * MICROS_PER_SECOND
DIRECTORY_ENTRIES_MAX = 50_000_000
SPENT_KEPT_MAX = 4096


class Spending:
    """Each payer's payments that count against its daily limit, per currency, the
    last 24 hours: their ingestion µs (ascending) and the running sums of their
    micro-units before each and after the last (one more sum than times, so a sum
    over any span is one difference), at most `SPENT_KEPT_MAX` per payer and
    currency.

    A payer's counts are one packed array (`centflow.risk.packed`): for each
    currency it paid in, a section ``[currency, n, n times, n + 1 sums]``."""

    def __init__(self, payers: dict[str, array] | None = None) -> None:
        self.payers: dict[str, array] = payers or {}

    def add(self, payer_id: str, ingest_us: int, currency: str, amount_micros: int) -> None:
        """Count a payment (calls come in ingestion order)."""
        code = _currency_code(currency)
        data = self.payers.get(payer_id)
        if data is None:
            self.payers[intern(payer_id)] = array("q", (code, 1, ingest_us, 0, amount_micros))
            return
        at = _section(data, code)
        if at < 0:
            data.extend((code, 1, ingest_us, 0, amount_micros))
            return
        count = data[at + 1]
        times = at + 2
        sums = times + count
        data.insert(sums + count + 1, data[sums + count] + amount_micros)  # the last first
        data.insert(sums, ingest_us)
        count += 1
        if data[times] < ingest_us - DAY_US or count > SPENT_KEPT_MAX:
            kept = bisect_left(data, ingest_us - DAY_US, times, times + count) - times
            cut = max(kept, count - SPENT_KEPT_MAX)
            del data[times + count : times + count + cut]  # running sums keep their
            del data[times : times + cut]  # meaning: differences
            count -= cut
        data[at + 1] = count

    def spent(self, payer_id: str, currency: str, since_us: int, before_us: int) -> int:
        """Micro-units counted for the payer in `currency`, ingested in [since, before)."""
        data = self.payers.get(payer_id)
        at = -1 if data is None else _section(data, _currency_code(currency))
        if data is None or at < 0:
            return 0
        times = at + 2
        stop = times + data[at + 1]
        start = bisect_left(data, since_us, times, stop)
        end = bisect_left(data, before_us, start, stop)
        return data[end + stop - times] - data[start + stop - times]

    def state(self) -> bytes:
        """Every payer's counts as one MessagePack bytes object: a snapshot pickles one
        object, not every payer's arrays (see "Snapshots" in `centflow.risk.features`)."""
        return ENCODER.encode(self.payers)

    @classmethod
    def restore(cls, state: bytes) -> Spending:
        return cls({intern(payer): data for payer, data in _SPENDING.decode(state).items()})

    def forget_before(self, cutoff_us: int) -> None:
        """Drop payers with nothing counted since `cutoff_us` (bounded state)."""
        stale = [payer for payer, data in self.payers.items() if _last_us(data) < cutoff_us]
        for payer in stale:
            del self.payers[payer]


def _currency_code(currency: str) -> int:
    """A currency code as an integer (its bytes, big-endian).

    >>> _currency_code("USD") == int.from_bytes(b"USD", "big")
    True
    """
    return int.from_bytes(currency.encode(), "big")


def _section(data: array, code: int) -> int:
    """Where a currency's section starts in a payer's array, -1 if it has none."""
    at = 0
    while at < len(data):
        if data[at] == code:
            return at
        at += 3 + 2 * data[at + 1]
    return -1


def _last_us(data: array) -> int:
    """The latest ingestion µs counted in any currency of a payer's array."""
    at, latest = 0, -1
    while at < len(data):
        count = data[at + 1]
        latest = max(latest, data[at + 1 + count])
        at += 3 + 2 * count
    return latest


_SPENDING = decoder(dict[str, array])


class _Entry(msgspec.Struct):
    payer_id: str
    tier: str


class TierLimits:
    """The tier of every payer and the check of a payment against its limits."""

    def __init__(self, tiers: tuple[Tier, ...], directory: dict[str, Tier] | None = None) -> None:
        self.lowest = tiers[0]
        self.directory = directory or {}
        #: (tier name, currency) -> (per payment, per day) in micro-units
        self._micros: dict[tuple[str, str], tuple[int, int]] = {}

    @classmethod
    def from_config(cls, risk: RiskConfig) -> TierLimits:
        if risk.payer_directory is None:
            return cls(risk.tiers)
        return cls(risk.tiers, read_payer_directory(Path(risk.payer_directory), risk.tiers))

    def tier_of(self, payer_id: str) -> Tier:
        return self.directory.get(payer_id, self.lowest)

    def over(
        self,
        spending: Spending,
        payer_id: str,
        amount_micros: int,
        currency: str,
        as_of_us: int,
    ) -> bool:
        """Whether a payment is over its payer's tier limits (see the module docstring)."""
        tier = self.directory.get(payer_id, self.lowest)
        limits = self._micros.get((tier.name, currency))
        if limits is None:
            payment_max, day_max = tier.limits(currency)
            limits = self._micros[tier.name, currency] = (
                payment_max * MICROS_PER_UNIT,
                day_max * MICROS_PER_UNIT,
            )
        if amount_micros > limits[0]:
            return True
        spent = spending.spent(payer_id, currency, as_of_us - DAY_US, as_of_us)
        return spent + amount_micros > limits[1]


def read_payer_directory(path: Path, tiers: tuple[Tier, ...]) -> dict[str, Tier]:
    """The payer directory file as {payer_id: Tier}; a bad line is a one-line ConfigError."""
    by_name = {tier.name: tier for tier in tiers}
    decoder = msgspec.json.Decoder(_Entry)
    directory: dict[str, Tier] = {}
    try:
        lines = path.read_bytes().splitlines()
    except OSError as error:
        raise ConfigError(f"cannot read the payer directory {path}: {error.strerror}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = decoder.decode(line)
        except msgspec.DecodeError as error:
            raise ConfigError(f"{path}:{number}: not a payer directory entry ({error})") from None
        tier = by_name.get(entry.tier)
        if tier is None:
            raise ConfigError(
                f"{path}:{number}: unknown tier {entry.tier!r} (configured: {', '.join(by_name)})"
            )
        directory[entry.payer_id] = tier
        if len(directory) > DIRECTORY_ENTRIES_MAX:
            raise ConfigError(f"{path}: more than {DIRECTORY_ENTRIES_MAX} payers")
    return directory
