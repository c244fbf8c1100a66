"""Every limit of centflow, named in one place (units last in names).

Changing a limit that shapes recovery state (`SHARD_COUNT`,
`WRITER_PARTITION_COUNT`) changes state keys: a run with a different value
cannot resume an old recovery directory and must start fresh.
"""

from __future__ import annotations

# Wire format (DESIGN.md)
MESSAGE_BYTES_MAX = 64 * 1024
EVENT_ID_CHARS_MAX = 64
PARTY_ID_CHARS_MAX = 64
DEVICE_ID_CHARS_MAX = 256
IP_CHARS_MAX = 256
RISK_SIGNALS_MAX = 64
RISK_SIGNAL_NAME_CHARS_MAX = 64
SPLITS_MAX = 64
BPS_WHOLE = 10_000
AMOUNT_INTEGER_DIGITS_MAX = 12
AMOUNT_FRACTION_DIGITS_MAX = 6

# Money: integer micro-units of the major unit.
MICROS_PER_UNIT = 1_000_000
# Largest DECIMAL(18,6): the largest amount any column may hold.
AMOUNT_MICROS_MAX = 10**18 - 1
# The largest gross (or refunds) of one batch: one major unit below the column's
# limit, so adding a carried remainder (always below one minor unit, at most one
# major unit) can never overflow the payout.
BATCH_MICROS_MAX = AMOUNT_MICROS_MAX - MICROS_PER_UNIT

# Time: microseconds since the Unix epoch, UTC.
MICROS_PER_SECOND = 1_000_000
MICROS_PER_MILLISECOND = 1_000
# A watermark that means "this input has ended".
WATERMARK_END_US = 2**62

# Parallelism: logical shards of keyed state (fixed: results and recovery
# state must not depend on the number of workers). Every Arrow call of the keyed
# steps runs once per shard a block reaches, so fewer, larger shards are cheaper:
# 8 instead of 16 made a one-process replay ~9% faster and ~100 MiB smaller. The
# shard count bounds the useful worker count (`WORKERS_MAX`).
SHARD_COUNT = 8
WRITER_PARTITION_COUNT = 8
# Bytewax recovery databases (SQLite) per out dir, fixed when it is made. Each is
# opened at start and committed to (with an fsync) at every snapshot, so fewer is
# faster: four cost ~0.1 s less per run than sixteen, and still spread the
# snapshot writes of up to four worker processes (more workers work too; some
# then write none).
RECOVERY_PARTITION_COUNT = 4
WORKERS_MAX = SHARD_COUNT  # a worker beyond it would own no shard

# Input batching.
SOURCE_BATCH_MESSAGES_MAX = 16_384
# Settlement takes what reaches a shard in one call at most this long after the first
# of it arrived (or at this many events): settling is off every payment's way to its
# decision, and one call per small block cost a quarter of a worker at 5,000 events/s.
SETTLE_DELAY_S = 0.5
SETTLE_ROWS_MAX = 65_536
SINK_BUFFER_ROWS_MAX = 250_000

# Settlement and de-duplication defaults (overridable by configuration).
WINDOW_LENGTH_S_DEFAULT = 3_600
WINDOW_LENGTH_S_MIN = 1
WINDOW_LENGTH_S_MAX = 7 * 24 * 3_600
LATENESS_S_DEFAULT = 300
LATENESS_S_MAX = 7 * 24 * 3_600
DEDUPE_HORIZON_S_DEFAULT = 7 * 24 * 3_600
DEDUPE_HORIZON_S_MAX = 90 * 24 * 3_600
FUTURE_SKEW_S_DEFAULT = 300
IDLE_S_DEFAULT = 5.0
IDLE_S_MAX = 3_600.0
