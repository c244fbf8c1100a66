"""What ``centflow run`` tells its operator on stderr: text for a terminal, or JSON lines.

``--log-format text`` (the default) prints plain lines under a live progress
bar. ``--log-format json`` (``[pipeline] log_format``,
``CENTFLOW_PIPELINE_LOG_FORMAT``) turns the bar off and writes every line the
run emits, progress, warnings, errors, the summary and the final status, as
one JSON object per line on stderr, for a log shipper to read::

    {"ts": "2026-12-07T12:00:01.250Z", "level": "info", "event": "progress",
     "message": "read 5,000 of 20,000 messages", "read": 5000, "total": 20000}

Every object has ``ts`` (RFC 3339, UTC, milliseconds), ``level`` (``info``,
``warning``, ``error``, ``critical``), ``event`` (a stable name: `EVENTS`
lists them) and ``message`` (the text line the text format prints), then the
event's own fields. A bug keeps its traceback, in a ``traceback`` field.

Secrets never reach a line: a field whose name is a secret client setting
(`centflow.ops.kafka.is_secret_setting`) is replaced by ``[redacted]``, at
any depth, and the value of every secret setting the run was given
(`configure`'s ``secrets``) is cut out of every string, the message included.

The records go through the standard library's `logging`, to the ``centflow.run``
logger (its own handler, not propagated: the application's root logger is
left alone, and librdkafka's logger stays silent). This module imports nothing
heavy.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

import msgspec

LOG_FORMATS = ("text", "json")
LOG_FORMAT_DEFAULT = "text"
LOGGER_NAME = "centflow.run"
REDACTED = "[redacted]"
FIELD_DEPTH_MAX = 8  # nesting followed when redacting a field's value
#: The events a run emits, each with the fields it carries beside ts, level, event, message.
EVENTS = {
    "run_started": "input, partitions, workers, out, until_idle (and kafka: its redacted settings)",
    "progress": "read, total, settled, rate_per_s, event_clock",
    "run_finished": "seconds",
    "reviews_waiting": "payments (held for review, not yet resolved)",
    "run_stopped": "signal, seconds, out",
    "process_done": "process_id, processes: a cluster's process other than 0 is done",
    "summary": "database, ok, outcomes, checks, tables (rows per table), repeated_event_ids",
    "warning": "what the run warns about (a Python warning too: logger, the warning's text)",
    "message": "any other line, e.g. of a library",
    "error": "status (2): a one-line error, or a failed worker or check",
    "interrupted": "status (130 or 143): the workers were killed before their last snapshot",
    "bug": "status (1), traceback",
    "exit": "status: the command's exit status, the last line of every run",
}

_logger = logging.getLogger(LOGGER_NAME)
_logger.addHandler(logging.NullHandler())
_logger.propagate = False
_logger.setLevel(logging.INFO)
_state: dict[str, Any] = {"format": LOG_FORMAT_DEFAULT, "warnings_handler": None}


def check_log_format(text: str) -> str:
    """`text` if it names a log format; else a one-line ConfigError.

    >>> check_log_format("json")
    'json'
    """
    from centflow.errors import ConfigError

    if text not in LOG_FORMATS:
        raise ConfigError(f"--log-format {text!r} is not one of {', '.join(LOG_FORMATS)}")
    return text


def _is_secret(key: str) -> bool:
    from centflow.ops.kafka import is_secret_setting

    return is_secret_setting(key)


def redact(value: Any, secrets: tuple[str, ...] = (), depth: int = 0) -> Any:
    """`value` with every secret-named field replaced and every secret string cut out.

    >>> redact({"sasl.password": "hunter2", "note": "pw hunter2"}, ("hunter2",))
    {'sasl.password': '[redacted]', 'note': 'pw [redacted]'}
    """
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return value
    if depth >= FIELD_DEPTH_MAX:
        return REDACTED if isinstance(value, (Mapping, list, tuple)) else value
    if isinstance(value, Mapping):
        return {
            str(key): REDACTED if _is_secret(str(key)) else redact(item, secrets, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact(item, secrets, depth + 1) for item in value]
    return value


def _timestamp(created_s: float) -> str:
    """RFC 3339 in UTC to the millisecond, with ``Z``."""
    moment = datetime.fromtimestamp(created_s, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event_of_level(level: int) -> str:
    """The event of a line logged without one (a Python warning, a library's line)."""
    if level >= logging.ERROR:
        return "error"
    return "warning" if level >= logging.WARNING else "message"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, event, message, then the record's fields."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self._secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        line: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", None) or _event_of_level(record.levelno),
            "message": " ".join(record.getMessage().split()),
        }
        for key, value in fields.items():
            line.setdefault(key, value)
        if record.exc_info is not None:
            line["traceback"] = "".join(traceback.format_exception(*record.exc_info))
        if record.name != LOGGER_NAME:  # e.g. a Python warning caught by logging
            line["logger"] = record.name
        return msgspec.json.encode(redact(line, self._secrets), enc_hook=str).decode()


def configure(log_format: str, secrets: Mapping[str, Any] | None = None, stream: IO[str] | None = None) -> None:  # fmt: skip
    """Choose how the run's lines are written; `secrets` are client settings whose secret
    values are cut out of every JSON line (text lines show no settings at all)."""
    check_log_format(log_format)
    values = tuple(
        sorted(
            {str(v) for k, v in (secrets or {}).items() if _is_secret(str(k)) and str(v)},
            key=len,
            reverse=True,  # a secret that contains another is cut whole
        )
    )
    for handler in list(_logger.handlers):
        _logger.removeHandler(handler)
    warnings_logger = logging.getLogger("py.warnings")
    if _state["warnings_handler"] is not None:  # back to Python's own warning output
        warnings_logger.removeHandler(_state["warnings_handler"])
        warnings_logger.propagate = True
        logging.captureWarnings(False)
    _state.update(format=log_format, warnings_handler=None)
    if log_format == "json":
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(JsonFormatter(values))
        _logger.addHandler(handler)
        logging.captureWarnings(True)  # a library's warning is a JSON line too
        warnings_logger.addHandler(handler)
        warnings_logger.propagate = False
        _state["warnings_handler"] = handler
    else:
        _logger.addHandler(logging.NullHandler())


def is_json() -> bool:
    """Whether the run writes JSON lines (no progress bar, no rich text)."""
    return bool(_state["format"] == "json")


def emit(level: int, event: str, message: str, **fields: Any) -> None:
    """One line: printed as `message` in text mode (the caller prints it; see `say`),
    or a JSON object in json mode."""
    _logger.log(level, "%s", message, extra={"event": event, "fields": fields})


def say(console: Any, event: str, message: str, level: int = logging.INFO, **fields: Any) -> None:
    """A line of the run for its operator: `message` on the rich `console` in text mode,
    a JSON object with `fields` in json mode."""
    if is_json():
        emit(level, event, message, **fields)
    else:
        console.print(message)


def bug(error: BaseException) -> None:
    """A bug in json mode: one line with its traceback, instead of a bare traceback."""
    _logger.critical(
        "%s",
        f"{type(error).__name__}: {error}",
        exc_info=(type(error), error, error.__traceback__),
        extra={"event": "bug", "fields": {"status": 1}},
    )
