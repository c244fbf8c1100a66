"""Stopping and crashing: SIGTERM or Ctrl-C stop a run cleanly (exit 0, state kept) and
the rerun ends with the tables of an uninterrupted run; a Kafka run of two worker
processes killed with SIGKILL, process group and all, loses and doubles nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from centflow.generate.logs import write_log
from centflow.ingest.timeparse import parse_rfc3339_us
from centflow.ops.kafka import client_config, produce_log
from centflow.ops.status import read_status
from tests.test_pipeline import WINDOW, _snapshots, centflow, tables

EVENTS = 60_000
WAIT_S = 120.0
STOP_WAIT_S = 90.0


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lifecycle") / "log.jsonl.gz"
    write_log(
        path,
        EVENTS,
        seed=23,
        start_us=parse_rfc3339_us("2026-11-02T09:00:00Z"),
        duration_s=4 * 3600,
    )
    return path


@pytest.fixture(scope="module")
def clean_tables(log: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple]]:
    out = tmp_path_factory.mktemp("clean")
    centflow("run", "--replay", str(log), "--out", str(out), *WINDOW)
    return tables(out)


def _read(out: Path) -> int:
    return sum(status.messages for status in read_status(out) if status.kind == "input")


def _wait_until_reading(process: subprocess.Popen[str], out: Path, messages: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and process.poll() is None:
        if _read(out) >= messages and _snapshots(out / "recovery") > 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"the run did not get going (exit {process.poll()})")


@pytest.mark.parametrize(
    ("stop_signal", "to_group"),
    [(signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["sigterm-to-the-runner", "ctrl-c-to-the-process-group"],
)
def test_a_stopped_replay_exits_0_and_its_rerun_gives_the_uninterrupted_tables(
    log, clean_tables, tmp_path, stop_signal, to_group
):
    args = ["run", "--replay", str(log), "--out", str(tmp_path), "--snapshot-s", "1", *WINDOW]
    runner = subprocess.Popen(
        [sys.executable, "-m", "centflow", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C reaches
    )
    try:
        _wait_until_reading(runner, tmp_path, 5_000)
        if to_group:
            os.killpg(runner.pid, stop_signal)
        else:
            os.kill(runner.pid, stop_signal)
        stdout, stderr = runner.communicate(timeout=STOP_WAIT_S)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait(10)
    assert runner.returncode == 0, stderr[-3000:]
    said = " ".join(stderr.split())  # the console wraps long lines
    assert f"stopped on {stop_signal.name} at the end of an epoch" in said
    assert "run the same command again to resume" in said
    assert "Traceback" not in stderr
    assert "pass  ledger sums to zero per currency" in stdout  # the report of what is written
    read = _read(tmp_path)
    assert 0 < read < EVENTS and not any(
        status.ended for status in read_status(tmp_path) if status.kind == "input"
    ), "the run ended before it could be stopped"
    logs = "".join(path.read_text() for path in (tmp_path / "logs").glob("*.log"))
    assert "Traceback" not in logs and "interrupt" not in logs.lower()
    rerun = centflow(*args)
    assert "pipeline finished" in rerun.stderr
    assert tables(tmp_path) == clean_tables


@pytest.mark.kafka
def test_a_kafka_run_of_two_processes_killed_with_sigkill_loses_and_doubles_nothing(
    log, kafka_bootstrap, fresh_topic, tmp_path
):
    """Killed mid-stream with SIGKILL, the runner and both workers at once, then run
    again: the tables of an uninterrupted run of the same topic, row for row."""
    topic = fresh_topic(partitions=4)
    produce_log(log, client_config(kafka_bootstrap), topic)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    args = [
        "run",
        "--kafka",
        kafka_bootstrap,
        "--topic",
        topic,
        "--dlq-topic",
        f"{topic}.dlq",
        "--decisions-topic",
        f"{topic}.decisions",
        "--until-idle",
        "--idle-s",
        "2",
        "--workers",
        "2",
        "--snapshot-s",
        "1",
        *WINDOW,
    ]
    victim = subprocess.Popen(
        [sys.executable, "-m", "centflow", *args, "--out", str(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and victim.poll() is None:
            if _read(killed) >= 10_000 and _snapshots(killed / "recovery") > 0:
                break
            time.sleep(0.05)
    finally:
        os.killpg(victim.pid, signal.SIGKILL)  # the runner and both workers, mid-stream
        victim.wait(30)
    assert victim.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert _snapshots(killed / "recovery") > 0, "no snapshot was taken before the kill"
    assert _gone(str(killed)), "a worker of the killed run lives on"
    centflow(*args, "--out", str(killed))  # the same command again: resumes from its state
    centflow(*args, "--out", str(clean))
    assert tables(killed) == tables(clean)


def _gone(marker: str, timeout_s: float = 10.0) -> bool:
    """Whether no process has `marker` in its command line (within `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = subprocess.run(
            ["ps", "-eo", "args"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.splitlines()
        if not any(marker in line for line in lines):
            return True
        time.sleep(0.2)
    return False
