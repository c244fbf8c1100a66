"""``centflow run --log-format json``: every stderr line one JSON object (ts in RFC 3339
UTC, level, event, message, fields), a summary whose counts are the DuckDB tables', no
secret in any line; a bad format, from a flag or the environment, is one line."""

from __future__ import annotations

import io
import json
import logging
import warnings
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from centflow.generate.logs import write_log
from centflow.ingest.timeparse import parse_rfc3339_us
from centflow.ops import logs
from tests.factories import centflow

EVENTS = 3_000
LEVELS = {"info", "warning", "error", "critical"}
SECRET = "hunter2-very-secret"


def json_lines(stderr: str) -> list[dict]:
    """Every stderr line parsed; a line that is not one JSON object fails the test."""
    lines = stderr.splitlines()
    assert lines, "no line on stderr"
    parsed = []
    for line in lines:
        value = json.loads(line)
        assert isinstance(value, dict), line
        assert {"ts", "level", "event", "message"} <= value.keys(), line
        assert value["ts"].endswith("Z"), line
        moment = datetime.fromisoformat(value["ts"])
        assert moment.tzinfo is not None and moment.utcoffset() == UTC.utcoffset(None), line
        assert value["level"] in LEVELS and value["event"] in logs.EVENTS, line
        assert isinstance(value["message"], str) and value["message"], line
        parsed.append(value)
    return parsed


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("logs") / "log.jsonl.gz"
    write_log(path, EVENTS, seed=11, start_us=parse_rfc3339_us("2026-11-02T09:00:00Z"), duration_s=3600)  # fmt: skip
    return path


def test_a_json_replay_writes_only_json_lines_whose_summary_counts_are_the_tables(
    log: Path, tmp_path: Path
):
    result = centflow("run", "--replay", str(log), "--out", str(tmp_path), "--window-s", "60", "--log-format", "json")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "\r" not in result.stderr and "\x1b" not in result.stderr  # no live bar, no colour
    lines = json_lines(result.stderr)
    events = [line["event"] for line in lines]
    assert events[0] == "run_started" and events[-1] == "exit" and lines[-1]["status"] == 0
    assert events.count("run_finished") == 1 and events.count("summary") == 1
    progress = [line for line in lines if line["event"] == "progress"]
    assert progress and progress[-1]["read"] == progress[-1]["total"] == EVENTS
    summary = next(line for line in lines if line["event"] == "summary")
    assert summary["ok"] is True and all(failures == 0 for failures in summary["checks"].values())
    connection = duckdb.connect(str(tmp_path / "centflow.duckdb"), read_only=True)
    try:
        for table, rows in summary["tables"].items():
            assert connection.execute(f"SELECT count(*) FROM {table}").fetchone() == (rows,), table
        (payments, settled) = connection.execute(
            "SELECT count(*), count(batch_id) FROM payments"
        ).fetchone()
        (dead,) = connection.execute("SELECT count(*) FROM dead_letters").fetchone()
    finally:
        connection.close()
    outcomes = summary["outcomes"]
    assert sum(n for name, n in outcomes.items() if name.startswith("dead letter: ")) == dead
    assert sum(n for name, n in outcomes.items() if not name.startswith("dead letter: ")) == payments  # fmt: skip
    assert sum(n for name, n in outcomes.items() if name.endswith(" settled")) == settled
    assert payments + dead == EVENTS and settled > 0
    assert progress[-1]["settled"] > 0


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--log-format", "xml"], {}),
        ([], {"CENTFLOW_PIPELINE_LOG_FORMAT": "yaml"}),
    ],
    ids=["flag", "environment"],
)
def test_a_bad_log_format_is_one_line(log: Path, tmp_path: Path, args, env):
    result = centflow("run", "--replay", str(log), "--out", str(tmp_path), *args, env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("centflow: error: --log-format") and result.stderr.count("\n") == 1  # fmt: skip
    assert "is not one of text, json" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "recovery").exists()


def test_an_error_in_json_is_an_error_line_then_the_exit_status_and_shows_no_secret(
    tmp_path: Path,
):
    """A broker that is not there: the one-line error and the status as JSON, and the
    password given in -X appears in no line."""
    result = centflow(
        "run", "--kafka", "127.0.0.1:1", "--out", str(tmp_path),
        "-X", f"sasl.password={SECRET}", "-X", "sasl.username=svc",
        env={"CENTFLOW_PIPELINE_LOG_FORMAT": "json"},
    )  # fmt: skip
    assert result.returncode == 2
    assert SECRET not in result.stderr + result.stdout
    lines = json_lines(result.stderr)
    assert [line["event"] for line in lines] == ["error", "exit"]
    assert lines[0]["level"] == "error" and "cannot reach Kafka" in lines[0]["message"]
    assert lines[0]["status"] == lines[1]["status"] == 2


def test_a_json_line_never_carries_a_secret_field_or_value():
    stream = io.StringIO()
    logs.configure("json", {"sasl.password": SECRET, "sasl.username": "svc"}, stream=stream)
    try:
        logs.emit(
            logging.WARNING,
            "warning",
            f"the broker said: bad password {SECRET}",
            kafka={"sasl.password": SECRET, "sasl.username": "svc"},
            nested=[{"ssl.key.password": "other"}, f"x{SECRET}y"],
        )
    finally:
        logs.configure("text")
    (line,) = stream.getvalue().splitlines()
    assert SECRET not in line and "other" not in line
    value = json.loads(line)
    assert value["kafka"] == {"sasl.password": "[redacted]", "sasl.username": "svc"}
    assert value["nested"] == [{"ssl.key.password": "[redacted]"}, "x[redacted]y"]
    assert value["message"] == "the broker said: bad password [redacted]"
    assert value["level"] == "warning" and value["event"] == "warning"


def test_a_python_warning_in_json_is_a_warning_line_and_text_mode_gives_warnings_back():
    stream = io.StringIO()
    logs.configure("json", stream=stream)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("the disk is nearly full", RuntimeWarning, stacklevel=1)
    finally:
        logs.configure("text")
    (line,) = stream.getvalue().splitlines()
    value = json.loads(line)
    assert value["level"] == "warning" and value["event"] == "warning"
    assert "the disk is nearly full" in value["message"] and value["logger"] == "py.warnings"
    with pytest.warns(RuntimeWarning, match="back to Python"):
        warnings.warn("back to Python", RuntimeWarning, stacklevel=1)
    assert stream.getvalue().count("\n") == 1
