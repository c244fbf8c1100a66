"""The Parquet dataset: one writer per partition, atomic files, exactly-once effect.

Layout: ``DIR/parquet/<table>/part-<writer>-<sequence>.parquet``. Each of the
`WRITER_PARTITION_COUNT` writer partitions (spread over the workers) buffers
rows per table and writes a file when a buffer is full, at every recovery
snapshot, and at the end. A file is written under a temporary name, fsynced
and renamed, so a reader never sees half a file.

Idempotence. A writer's recovery state is the sequence number of its next
file. Bytewax replays everything after the last snapshot when it resumes, so
on resume a writer first deletes its files numbered at or above the restored
sequence: they hold exactly the output that is about to be produced again.
The dataset therefore holds each row once after any crash and resume. (The
DuckDB load still keeps one row per key, as a second line of defence.)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pyarrow.parquet as pq
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from centflow.errors import invariant
from centflow.limits import SINK_BUFFER_ROWS_MAX, WRITER_PARTITION_COUNT
from centflow.tables import TABLES
from sinks.arrow import rows_to_table

TableRows = tuple[str, list[tuple]]  # (table name, row tuples)
# zstd level 1 without dictionaries: a quarter of the default level's CPU cost, smaller files for our
# id-heavy columns, and DuckDB reads it all the same.
PARQUET_ZSTD_LEVEL = 1
_FILE_PATTERN = re.compile(r"part-(w\d+)-(\d{8})\.parquet")


def writer_key(index: int) -> str:
    """Routing key of writer partition `index` (wraps around).

    >>> writer_key(3), writer_key(11)
    ('w03', 'w03')
    """
    return f"w{index % WRITER_PARTITION_COUNT:02d}"


class _WriterPartition(StatefulSinkPartition[TableRows, int]):
    def __init__(self, root: Path, writer: str, next_sequence: int) -> None:
        self._root = root
        self._writer = writer
        self._sequence = next_sequence
        self._buffers: dict[str, list[tuple]] = {table: [] for table in TABLES}
        for table in TABLES:
            (root / table).mkdir(parents=True, exist_ok=True)
        self._discard_unsnapshotted()

    def _discard_unsnapshotted(self) -> None:
        """Delete this writer's files written after the snapshot being resumed from."""
        for table in TABLES:
            for path in (self._root / table).iterdir():
                match = _FILE_PATTERN.fullmatch(path.name)
                stale_temporary = path.name.startswith(f".part-{self._writer}-")
                if stale_temporary or (match and match.group(1) == self._writer and int(match.group(2)) >= self._sequence):
                    path.unlink()

    def write_batch(self, values: list[TableRows]) -> None:
        for table, rows in values:
            buffer = self._buffers[table]
            buffer.extend(rows)
            if len(buffer) >= SINK_BUFFER_ROWS_MAX:
                self._flush(table)

    def _flush(self, table: str) -> None:
        rows = self._buffers[table]
        if not rows:
            return
        arrow_table = rows_to_table(table, rows)
        name = f"part-{self._writer}-{self._sequence:08d}.parquet"
        temporary = self._root / table / f".{name}.tmp"
        with temporary.open("wb") as stream:
            pq.write_table(arrow_table, stream, compression="zstd", compression_level=PARQUET_ZSTD_LEVEL, use_dictionary=False)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, self._root / table / name)
        invariant(pq.read_metadata(self._root / table / name).num_rows == len(rows), f"{name} lost rows on write")
        self._sequence += 1
        self._buffers[table] = []

    def snapshot(self) -> int:
        for table in TABLES:
            self._flush(table)
        return self._sequence

    def close(self) -> None:
        for table in TABLES:
            self._flush(table)


class ParquetSink(FixedPartitionedSink[TableRows, int]):
    """Writes ``(writer key, (table, rows))`` items into the Parquet dataset under `root`."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def list_parts(self) -> list[str]:
        return [writer_key(index) for index in range(WRITER_PARTITION_COUNT)]

    def part_fn(self, item_key: str) -> int:
        return int(item_key[1:])

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _WriterPartition:
        return _WriterPartition(self._root, for_part, resume_state or 0)
