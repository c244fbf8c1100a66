"""Live status files: how far each input partition has got, for progress displays.

Each source partition of a running dataflow writes a small JSON file,
``DIR/status/<partition>.json`` (at most every `STATUS_INTERVAL_S`, written
atomically), with the messages it has read and its watermark. ``centflow run``
reads them to draw its progress bar and live summary. They are informational
only: nothing in the pipeline reads them back, so they cannot change a result.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import msgspec

STATUS_INTERVAL_S = 0.5
STATUS_DIR_NAME = "status"


class PartitionStatus(msgspec.Struct):
    """Progress of one input partition (kind ``input``) or settlement shard (``settled``)."""

    partition: str
    messages: int
    watermark_us: int
    ended: bool = False
    kind: str = "input"
    first_s: float = 0.0  # wall-clock time of the first update with messages (Unix seconds)
    last_s: float = 0.0  # wall-clock time of this update


class StatusWriter:
    """Writes one partition's status file, at most every `STATUS_INTERVAL_S`."""

    def __init__(self, out_dir: Path | None, partition: str, kind: str = "input") -> None:
        self._kind = kind
        self._path = (
            None
            if out_dir is None
            else out_dir / STATUS_DIR_NAME / (partition.replace("/", "_") + ".json")
        )
        self._partition = partition
        self._written_s = 0.0
        self._first_s = 0.0
        if self._path is not None:
            self._path.parent.mkdir(parents=True, exist_ok=True)

    def update(self, messages: int, watermark_us: int, ended: bool = False) -> None:
        if self._path is None:
            return
        if messages and not self._first_s:
            self._first_s = time.time()
        now_s = time.monotonic()
        if not ended and now_s - self._written_s < STATUS_INTERVAL_S:
            return
        self._written_s = now_s
        temporary = self._path.with_suffix(".tmp")
        temporary.write_bytes(
            msgspec.json.encode(
                PartitionStatus(
                    self._partition,
                    messages,
                    watermark_us,
                    ended,
                    self._kind,
                    self._first_s,
                    time.time(),
                )
            )
        )
        os.replace(temporary, self._path)


def read_status(out_dir: Path) -> list[PartitionStatus]:
    """Every partition's latest status (files being replaced are skipped)."""
    statuses = []
    for path in sorted((out_dir / STATUS_DIR_NAME).glob("*.json")):
        try:
            statuses.append(msgspec.json.decode(path.read_bytes(), type=PartitionStatus))
        except (OSError, msgspec.DecodeError):
            continue
    return statuses
