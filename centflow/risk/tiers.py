"""Tiered verification (KYC): each payer's tier and the limits that come with it.

A payer directory (JSON lines ``{"payer_id": ..., "tier": ...}``, the tier a
name from the configuration's tiers) gives a payer's verification tier; a payer
it does not list gets the lowest tier at once (frictionless), and the models
keep re-evaluating it as its behaviour accrues. A payment over its tier's limit
per payment, or that would take the payer's last 24 hours in that currency over
the daily limit, goes at least to ``review`` with reason ``tier_limit``.
Limits are in major units of the payment's currency (each tier may give a
currency its own, `centflow.config.Tier`); sums are exact integers.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from centflow.config import RiskConfig, Tier
from centflow.errors import ConfigError
from centflow.limits import MICROS_PER_SECOND, MICROS_PER_UNIT
from centflow.risk.features import PayerBook

DAY_US = 86_400 * MICROS_PER_SECOND
DIRECTORY_ENTRIES_MAX = 50_000_000


class _Entry(msgspec.Struct):
    payer_id: str
    tier: str


class TierLimits:
    """The tier of every payer and the check of a payment against its limits."""

    def __init__(self, tiers: tuple[Tier, ...], directory: dict[str, Tier] | None = None) -> None:
        self.lowest = tiers[0]
        self.directory = directory or {}

    @classmethod
    def from_config(cls, risk: RiskConfig) -> TierLimits:
        if risk.payer_directory is None:
            return cls(risk.tiers)
        return cls(risk.tiers, read_payer_directory(Path(risk.payer_directory), risk.tiers))

    def tier_of(self, payer_id: str) -> Tier:
        return self.directory.get(payer_id, self.lowest)

    def over(
        self, book: PayerBook, payer_id: str, amount_micros: int, currency: str, as_of_us: int
    ) -> bool:
        """Whether a payment is over its payer's tier limits (see the module docstring)."""
        payment_max, day_max = self.tier_of(payer_id).limits(currency)
        if amount_micros > payment_max * MICROS_PER_UNIT:
            return True
        spent = book.spent_since(payer_id, currency, as_of_us - DAY_US)
        return spent + amount_micros > day_max * MICROS_PER_UNIT


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
