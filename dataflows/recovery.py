"""Bytewax recovery partitions: the one piece of Bytewax the command line needs.

`centflow.ops.runner` prepares an output directory before any worker starts, and
keeps no Bytewax import of its own (``centflow/`` is engine-free), so it asks
here for the recovery databases to be made.
"""

from __future__ import annotations

from pathlib import Path

from bytewax.recovery import init_db_dir


def init_recovery(directory: Path, partitions: int) -> None:
    """Create `partitions` empty recovery databases in `directory` (which must exist)."""
    init_db_dir(directory, partitions)
