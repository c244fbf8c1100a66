"""CPU cost of the money stage (settlement, fees, ledger) per event, on a log.

``python -m centflow.ops.bench_money LOG`` decodes the log (outside the
measurement), approves every valid event, and feeds one `SettlementShard` the
events in the pipeline's blocks of 16,384, each with the log clock's
watermark, then closes every window. The figure is the process CPU time spent
in `SettlementShard.settle` (windows, netting, fees, payouts, ledger postings,
the Arrow tables the sinks receive) divided by the events settled: the money
stage alone, with no Bytewax, no decoding and no writing. It runs with the
shipped fee schedule and with none, so the cost fees add is seen beside a
baseline made in the same process, and, given ``--fx-rates`` and
``--payee-directory``, once more with FX on top of the fees. `make bench`
reports it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from centflow.config import FxConfig
from centflow.ingest.decode import decode_message
from centflow.ingest.events import Payment
from centflow.ingest.replay import iter_lines
from centflow.limits import WATERMARK_END_US
from centflow.money.fees import DEFAULT_SCHEDULE, FeeTerms, schedule_terms
from centflow.money.fx import FxBook, fx_book
from centflow.money.settlement import SettlementShard
from centflow.progress import Envelope

BLOCK_EVENTS = 16_384
FUTURE_SKEW_US = 2**62


def approved_blocks(log: Path, events_max: int | None = None) -> list[Envelope]:
    """The log's valid events, approved, as the settlement stage receives them."""
    from centflow.ingest.columns import to_batch

    blocks: list[Envelope] = []
    pending: list[Payment] = []
    clock_us = 0
    for name, number, raw in iter_lines(log):
        decoded = decode_message(raw, f"{name}:{number}", clock_us, FUTURE_SKEW_US)
        if not isinstance(decoded, Payment):
            continue
        clock_us = max(clock_us, decoded.occurred_us)
        decoded.ingest_us = max(decoded.ingest_us, decoded.occurred_us)
        decoded.decision = "approve"
        decoded.risk_score = 0.0
        decoded.model_version = "bench"
        pending.append(decoded)
        if len(pending) == BLOCK_EVENTS:
            blocks.append(Envelope("log", 0, clock_us, to_batch(pending)))
            pending = []
        if events_max is not None and len(blocks) * BLOCK_EVENTS + len(pending) >= events_max:
            break
    if pending:
        blocks.append(Envelope("log", 0, clock_us, to_batch(pending)))
    return blocks


def settle_cpu_s(
    blocks: list[Envelope],
    window_s: int,
    lateness_s: int,
    fees: dict[tuple[str, str], FeeTerms],
    fx: FxBook | None = None,
) -> tuple[float, int, int]:
    """(CPU seconds in `settle`, events settled, batches) for one pass over `blocks`."""
    shard = SettlementShard(["log"], window_s * 1_000_000, lateness_s * 1_000_000, fees=fees, fx=fx)
    settled = batches = 0
    spent = 0.0
    for block in [*blocks, Envelope("log", 0, WATERMARK_END_US, blocks[0].events.slice(0, 0))]:
        started = time.process_time()
        out = shard.settle([block])
        spent += time.process_time() - started
        settled += out.event_count
        batches += sum(table.num_rows for table in out.batches)
    return spent, settled, batches


def measure(
    log: Path,
    window_s: int,
    lateness_s: int,
    repeat: int = 3,
    events_max: int | None = None,
    fx: FxConfig | None = None,
) -> dict[str, Any]:
    """Median CPU µs per event of the money stage, with the shipped schedule and with
    none (and with FX too when `fx` names a payee directory)."""
    blocks = approved_blocks(log, events_max)
    figures: dict[str, Any] = {}
    schedule = schedule_terms(DEFAULT_SCHEDULE)
    variants: list[tuple[str, dict, FxBook | None]] = [
        ("money", schedule, None),
        ("money_no_fees", {}, None),
    ]
    book = fx_book(fx) if fx is not None else None
    if book is not None:
        variants.append(("money_fx", schedule, book))
    for name, fees, with_fx in variants:
        runs = sorted(
            settle_cpu_s(blocks, window_s, lateness_s, fees, with_fx) for _ in range(repeat)
        )
        spent, settled, batches = runs[len(runs) // 2]
        figures[f"{name}_us_per_event"] = spent / max(settled, 1) * 1e6
        figures[f"{name}_events"] = settled
        figures[f"{name}_batches"] = batches
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path)
    parser.add_argument("--window-s", type=int, default=3_600)
    parser.add_argument("--lateness-s", type=int, default=120)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--events", type=int, default=None, help="stop after this many events")
    parser.add_argument("--fx-rates", type=Path, default=None)
    parser.add_argument("--payee-directory", type=Path, default=None)
    args = parser.parse_args()
    fx = None
    if args.payee_directory is not None:
        fx = FxConfig(str(args.fx_rates) if args.fx_rates else None, str(args.payee_directory))
    figures = measure(args.log, args.window_s, args.lateness_s, args.repeat, args.events, fx)
    for name in ("money", "money_no_fees", "money_fx"):
        if f"{name}_events" not in figures:
            continue
        print(
            f"{name}: {figures[f'{name}_us_per_event']:.2f} µs CPU per event "
            f"({figures[f'{name}_events']:,} events, {figures[f'{name}_batches']:,} batches)"
        )


if __name__ == "__main__":
    main()
