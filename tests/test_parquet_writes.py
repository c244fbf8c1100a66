"""The shard writers' background files: the end of input waits for all of them at once."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pytest

from sinks import parquet


def test_the_end_waits_for_every_file_in_flight(tmp_path, monkeypatch):
    def slow_write(directory: Path, writer: str, sequence: int, table: str, columns) -> None:
        time.sleep(0.2)
        (directory / f"{writer}-{sequence}").write_text(table)

    monkeypatch.setattr(parquet, "_write_domain_table", slow_write)
    for sequence in range(4):
        parquet._submit(tmp_path, "s00", sequence, "payments", pa.table({"x": [1]}))
    parquet.wait_for_all_writes()
    assert sorted(path.name for path in tmp_path.iterdir()) == [f"s00-{n}" for n in range(4)]


def test_a_failed_file_fails_the_end(tmp_path, monkeypatch):
    def failing_write(directory: Path, writer: str, sequence: int, table: str, columns) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(parquet, "_write_domain_table", failing_write)
    parquet._submit(tmp_path, "s00", 0, "payments", pa.table({"x": [1]}))
    with pytest.raises(OSError, match="disk full"):
        parquet.wait_for_all_writes()
    parquet.wait_for_all_writes()  # reported once; nothing left in flight
