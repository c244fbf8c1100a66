"""A labelled stream of anonymised signals: what a card network or an acquirer shares.

Some producers can send no usable ids: every payment comes from a payer never
seen before, to one payee (the acquirer), with only numeric ``risk_signals``
(components of an upstream model, say) and the amount. The risk stage must
still rank such a stream from the signals alone, and learn from chargebacks
that arrive an hour after each fraud. `write_signals_log` writes one:

- `SIGNALS` signals per payment, ``v0`` ... ``v27``. A legitimate payment's
  are standard normal plus a heavy-tailed (Student-t, 3 degrees of freedom)
  disturbance, so legitimate traffic has outliers too;
- a payment is fraud with probability `FRAUD_SHARE`; a fraud's signals are
  spread wider (1 to 2.5 times) and shifted by 1 to 3 standard deviations
  along `SHIFTED` of them (drawn once per log, so which signals matter is
  for the models to find), and its amount is drawn from a wider lognormal;
- every fraud is disputed: a chargeback `CHARGEBACK_DELAY_S` of event time
  after it (the log is in event order, so its ingestion is that much later
  too);
- `LINES_PER_S` payments a second on average (exponential gaps).

The labels file (``<log>.labels.jsonl``) names each fraud payment, scenario
`SCENARIO`, episode 1 (one long attack: `episodes_stopped` says nothing here).
Same seed, same bytes.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np

from centflow.ingest.timeparse import format_us, parse_rfc3339_us
from centflow.limits import MICROS_PER_SECOND

SCENARIO = "signals-only"
SIGNALS = 28
SHIFTED = 10
FRAUD_SHARE = 0.004
CHARGEBACK_DELAY_S = 3_600
LINES_PER_S = 1.6
START = "2026-11-02T00:00:00Z"
PAYEE = "acquirer-1"
CURRENCY = "EUR"


@dataclass(frozen=True)
class SignalsLog:
    path: Path
    labels_path: Path
    payments: int
    frauds: int
    lines: int


def write_signals_log(path: Path, payments: int, seed: int) -> SignalsLog:
    """Write `payments` payments (and a chargeback per fraud) to `path` (gzipped
    JSON lines), and their labels beside it."""
    generator = np.random.default_rng(seed)
    fraud = generator.random(payments) < FRAUD_SHARE
    frauds = int(fraud.sum())
    values = generator.normal(0.0, 1.0, (payments, SIGNALS))
    shift = np.zeros(SIGNALS)
    shift[:SHIFTED] = generator.choice([-1.0, 1.0], SHIFTED) * generator.uniform(1.0, 3.0, SHIFTED)
    shift = generator.permutation(shift)
    spread = generator.uniform(1.0, 2.5, SIGNALS)
    values[fraud] = values[fraud] * spread + shift
    values[~fraud] += 0.3 * generator.standard_t(3, (payments - frauds, SIGNALS))
    cents = np.exp(generator.normal(3.0, 1.3, payments)) * 100
    cents[fraud] = np.exp(generator.normal(2.5, 2.0, frauds)) * 100
    cents = np.clip(np.rint(cents), 1, 10**9).astype(np.int64)
    gaps_us = generator.exponential(MICROS_PER_SECOND / LINES_PER_S, payments)
    times_us = parse_rfc3339_us(START) + np.cumsum(gaps_us).astype(np.int64)
    encoder = msgspec.json.Encoder()
    lines: list[tuple[int, int, bytes]] = []
    for index in range(payments):
        occurred_us = int(times_us[index])
        event = {
            "event_id": f"sig-{seed}-{index}",
            "type": "payment",
            "occurred_at": format_us(occurred_us),
            "payer_id": f"anon-{seed}-{index}",
            "payee_id": PAYEE,
            "amount": f"{cents[index] // 100}.{cents[index] % 100:02d}",
            "currency": CURRENCY,
            "rail": "card",
            "country": "BE",
            "risk_signals": {
                f"v{column}": round(float(values[index, column]), 4) for column in range(SIGNALS)
            },
        }
        lines.append((occurred_us, 0, encoder.encode(event)))
        if fraud[index]:
            disputed_us = occurred_us + CHARGEBACK_DELAY_S * MICROS_PER_SECOND
            chargeback = {
                **{key: value for key, value in event.items() if key != "risk_signals"},
                "event_id": f"sig-{seed}-{index}-cb",
                "type": "chargeback",
                "occurred_at": format_us(disputed_us),
                "ref_event_id": event["event_id"],
            }
            lines.append((disputed_us, 1, encoder.encode(chargeback)))
    lines.sort(key=lambda line: (line[0], line[1]))
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(b"".join(line + b"\n" for _, _, line in lines))
    labels_path = path.with_name(f"{path.name}.labels.jsonl")
    labels_path.write_bytes(
        b"".join(
            encoder.encode({"event_id": f"sig-{seed}-{index}", "scenario": SCENARIO, "episode": 1})
            + b"\n"
            for index in np.flatnonzero(fraud).tolist()
        )
    )
    return SignalsLog(path, labels_path, payments, frauds, len(lines))
