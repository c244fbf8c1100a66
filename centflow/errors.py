"""The one exception tree of centflow, and `invariant`.

Three kinds of failure, never mixed::

    CentflowError                  root: every error centflow raises on purpose
    ├── InvalidEvent               bad input from outside; carries a stable `reason`
    │                              code; caught at the decode step only and turned
    │                              into a dead letter (never reaches a user as a trace)
    ├── ConfigError                a bad flag, file or setting; shown as one line
    ├── InfrastructureError        broker, disk, subprocess
    │   ├── TransientError         worth retrying (broker not up yet, timeout)
    │   └── TerminalError          retrying will not help (topic missing, auth)
    └── InvariantViolation         a bug: state that must never exist; crashes the
                                   worker so recovery resumes from the last snapshot

`invariant` is used instead of ``assert`` because ``python -O`` strips asserts.
"""

from __future__ import annotations


class CentflowError(Exception):
    """Root of every error centflow raises on purpose."""


class InvalidEvent(CentflowError):
    """Bad input from outside, with a stable reason code and a detail for humans."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ConfigError(CentflowError):
    """A bad flag, setting or file; its message is one line with a hint."""


class InfrastructureError(CentflowError):
    """The broker, the disk or a worker process failed."""


class TransientError(InfrastructureError):
    """A failure that a deliberate retry may cure (broker starting, timeout)."""


class TerminalError(InfrastructureError):
    """A failure no retry will cure (missing topic, refused authentication)."""


class InvariantViolation(CentflowError):
    """A bug: a state that must never exist was reached."""


def invariant(condition: bool, message: str, *args: object) -> None:
    """Crash with `InvariantViolation` unless `condition` holds.

    The message is formatted (``message % args``) only on failure, so hot
    paths pay nothing for it.

    >>> invariant(1 + 1 == 2, "arithmetic works")
    >>> invariant(False, "ledger unbalanced: %s %s", "USD", "0.01")
    Traceback (most recent call last):
    ...
    centflow.errors.InvariantViolation: ledger unbalanced: USD 0.01
    """
    if not condition:
        raise InvariantViolation(message % args if args else message)
