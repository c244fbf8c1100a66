"""Stopping a run cleanly: a stop request that every worker's sources hear.

``centflow run`` stops cleanly on SIGTERM or SIGINT (Ctrl-C): the current
epoch is finished, a last snapshot is taken, the sinks are flushed, and the
command exits 0; the same command run again resumes from there. How:

1. The runner catches the signal and writes `STOP_FILE` into the output
   directory (`request_stop`). A Ctrl-C in a terminal also reaches the worker
   processes themselves (they share the runner's process group); they do not
   die of it: `install_stop_handlers` turns SIGINT and SIGTERM into the same
   request. Workers start with both signals ignored (`ignore_stop_signals`,
   run between fork and exec), so a signal that arrives while a worker is still
   importing cannot kill it half-started.
2. Each input partition asks `StopWatch.requested` before it reads a batch (a
   flag, and every `STOP_POLL_S` one look for the file and at the parent
   process). Once asked, it ends, *without* the end-of-input watermark: for
   the dataflow, input has ended; for the domain, no window closes, nothing is
   judged as final. Bytewax then drains what is in flight, calls every step's
   end-of-input hook (the settlement shards write their files, the decision
   publisher flushes), takes its last snapshot, and exits 0.
3. A rerun finds the partitions' positions in that snapshot and reads on.

A second signal, or a stop that takes longer than `STOP_GRACE_S`, kills the
workers at once (`RunInterrupted`, exit 130 after SIGINT, 143 after SIGTERM):
that is a crash, and the rerun resumes from the last snapshot taken before it,
which recovery makes safe too. A worker whose runner is gone (killed alone)
stops the same clean way, instead of running on unwatched.

This module is imported by every worker, so it imports nothing heavy.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from types import FrameType

STOP_FILE = "stop.request"
STOP_POLL_S = 0.2
STOP_GRACE_S = 120.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_CODE_BY_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}

_requested_by_signal = False


class RunInterrupted(Exception):
    """The workers were killed before their last snapshot (a second signal, or a
    stop that took too long); `exit_code` is 128 + the signal's number."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def request_stop(out_dir: Path) -> None:
    """Ask the workers of the run in `out_dir` to stop at the end of an epoch."""
    (out_dir / STOP_FILE).write_text(f"stop requested by pid {os.getpid()}\n")


def clear_stop(out_dir: Path) -> None:
    """Forget an earlier run's stop request (a new run starts unasked)."""
    (out_dir / STOP_FILE).unlink(missing_ok=True)


def ignore_stop_signals() -> None:
    """Ignore SIGINT and SIGTERM (in a worker, between fork and exec: the ignored
    state survives exec until `install_stop_handlers` replaces it)."""
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)


def _note_signal(number: int, frame: FrameType | None) -> None:
    global _requested_by_signal
    _requested_by_signal = True


def install_stop_handlers() -> None:
    """In a worker process: SIGINT and SIGTERM ask for a clean stop instead of
    interrupting (Bytewax checks for signals between steps; the handler only
    sets a flag). Only the main thread may install handlers; elsewhere no-op."""
    try:
        for number in STOP_SIGNALS:
            signal.signal(number, _note_signal)
    except ValueError:  # not the main thread
        pass


class StopWatch:
    """Whether this worker's run was asked to stop: cheap enough to ask per batch.

    Asked: a stop signal reached this process, the runner wrote `STOP_FILE`
    into `out_dir`, or the process that started this one is gone.
    """

    def __init__(self, out_dir: Path | None) -> None:
        self._file = None if out_dir is None else out_dir / STOP_FILE
        self._parent_pid = os.getppid()
        self._next_look_s = 0.0
        self._asked = False

    def requested(self) -> bool:
        if self._asked or _requested_by_signal:
            self._asked = True
            return True
        now_s = time.monotonic()
        if now_s < self._next_look_s:
            return False
        self._next_look_s = now_s + STOP_POLL_S
        orphaned = os.getppid() != self._parent_pid
        self._asked = orphaned or (self._file is not None and self._file.exists())
        return self._asked
