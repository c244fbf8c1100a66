"""The ``centflow`` command, run as a user runs it: a subprocess of the installed script.

What these tests prove:

* every failure a user can cause (no input, two inputs, a missing replay log,
  out-of-range --window-s or --workers, an unreachable broker, an unknown flag,
  a rerun whose settings contradict the state kept in --out, ``recon`` on a
  directory without a dataset) exits with status 2, prints no traceback and no
  report, and says ``centflow: error: ...`` with the bad value, in ONE line of
  stderr (DESIGN.md / cli.py contract);
* a refused rerun leaves the earlier run's state and tables untouched;
* ``centflow run --replay`` on a tiny log exits 0, prints the reconciliation
  report, and leaves a DuckDB file with the expected rows; running the same
  command again exits 0 and changes no table.

The subprocess gets the environment of the test run without COLUMNS/LINES, as
under CI or a pipe, so rich's console falls back to its 80-column default.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from centflow.limits import SHARD_COUNT
from centflow.money.amounts import minor_unit_exponent
from centflow.ops.runner import out_dir_lock
from centflow.recon.tables import TABLES

SCRIPT = Path(sys.executable).with_name("centflow")
COMMAND = (
    [str(SCRIPT)]
    if SCRIPT.exists()
    else [sys.executable, "-c", "from centflow.ops.cli import main; main()"]
)
TIMEOUT_S = 120

EVENTS = [
    {
        "event_id": "evt-a",
        "type": "payment",
        "occurred_at": "2026-11-02T09:00:01Z",
        "payer_id": "payer-1",
        "payee_id": "payee-1",
        "amount": "0.10",
        "currency": "USD",
        "rail": "card",
        "country": "US",
    },
    {
        "event_id": "evt-b",
        "type": "payment",
        "occurred_at": "2026-11-02T09:00:20Z",
        "payer_id": "payer-2",
        "payee_id": "payee-1",
        "amount": "0.25",
        "currency": "USD",
        "rail": "card",
        "country": "US",
    },
    {
        "event_id": "evt-c",
        "type": "payment",
        "occurred_at": "2026-11-02T09:00:30Z",
        "payer_id": "payer-3",
        "payee_id": "payee-2",
        "amount": "100",
        "currency": "JPY",
        "rail": "wallet",
        "country": "JP",
    },
    {
        "event_id": "evt-d",
        "type": "payment",
        "occurred_at": "2026-11-02T09:00:40Z",
        "payer_id": "payer-4",
        "payee_id": "payee-3",
        "amount": "1.2345",
        "currency": "BHD",
        "rail": "wallet",
        "country": "BH",
    },
]
REFUND = {
    "event_id": "evt-e",
    "type": "refund",
    "ref_event_id": "evt-b",
    "occurred_at": "2026-11-02T09:01:10Z",
    "payer_id": "payer-2",
    "payee_id": "payee-1",
    "amount": "0.05",
    "currency": "USD",
    "rail": "card",
    "country": "US",
}


def write_tiny_log(path: Path) -> Path:
    """Four payments, a duplicate, a malformed line, and a refund in the next window."""
    lines = [json.dumps(event) for event in EVENTS]
    lines += [json.dumps(EVENTS[0]), "not json", json.dumps(REFUND)]
    path.write_text("\n".join(lines) + "\n")
    return path


def environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "LINES")}
    return env


def centflow(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *map(str, args)],
        cwd=cwd,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def dump(database: Path) -> dict[str, list[tuple]]:
    with duckdb.connect(str(database), read_only=True) as db:
        return {
            table: sorted(db.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
            for table in TABLES
        }


def run_tiny(log: Path, out: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """``run`` of a replay log with 60 s windows and no lateness, and more flags."""
    return centflow(
        "run",
        "--replay",
        log,
        "--out",
        out,
        "--window-s",
        "60",
        "--lateness-s",
        "0",
        *flags,
        cwd=out.parent,
    )


# Error cases ------------------------------------------------------------------

# name -> (build the arguments in a directory, fragments the message must name)
Case = tuple[Callable[[Path], list[str | Path]], tuple[str, ...]]


def _refused_rerun(directory: Path) -> list[str | Path]:
    """A first run with --window-s 60, then the same --out with --window-s 120."""
    log = write_tiny_log(directory / "tiny.jsonl")
    first = run_tiny(log, directory / "out")
    assert first.returncode == 0, first.stderr
    (directory / "before.json").write_text(
        json.dumps(dump(directory / "out" / "centflow.duckdb"), default=str)
    )
    return [
        "run",
        "--replay",
        log,
        "--out",
        directory / "out",
        "--window-s",
        "120",
        "--lateness-s",
        "0",
    ]


def _broken_gzip_log(directory: Path, damage: str) -> Path:
    """A gzipped log of many lines, cut short (``truncated``) or with garbage in its
    deflate stream (``corrupt``)."""
    import gzip

    text = b"".join(
        json.dumps({**EVENTS[0], "event_id": f"e{i}"}).encode() + b"\n" for i in range(20_000)
    )
    packed = gzip.compress(text)
    broken = (
        packed[: len(packed) // 2]
        if damage == "truncated"
        else packed[:200] + b"\xff" * 64 + packed[264:]
    )
    path = directory / f"{damage}.jsonl.gz"
    path.write_bytes(broken)
    return path


def tiny_replay(directory: Path, *flags: str) -> list[str | Path]:
    """``run`` of a tiny replay log into ``directory/out``, with more flags."""
    return [
        "run",
        "--replay",
        write_tiny_log(directory / "tiny.jsonl"),
        "--out",
        directory / "out",
        *flags,
    ]


CASES: dict[str, Case] = {
    "no input": (lambda d: ["run", "--out", d / "out"], ("--replay", "--kafka")),
    "both inputs": (
        lambda d: [
            "run",
            "--replay",
            write_tiny_log(d / "tiny.jsonl"),
            "--kafka",
            f"127.0.0.1:{free_port()}",
            "--out",
            d / "out",
        ],
        ("exactly one input",),
    ),
    "missing replay file": (
        lambda d: ["run", "--replay", d / "missing.jsonl", "--out", d / "out"],
        ("missing.jsonl", "does not exist"),
    ),
    "truncated gzip log": (
        lambda d: ["run", "--replay", _broken_gzip_log(d, "truncated"), "--out", d / "out"],
        ("truncated.jsonl.gz", "corrupt or truncated"),
    ),
    "corrupt gzip log": (
        lambda d: ["run", "--replay", _broken_gzip_log(d, "corrupt"), "--out", d / "out"],
        ("corrupt.jsonl.gz", "corrupt or truncated"),
    ),
    "window 0": (
        lambda d: tiny_replay(d, "--window-s", "0"),
        ("window", "0", "--window-s"),
    ),
    "workers 0": (
        lambda d: tiny_replay(d, "--workers", "0"),
        ("--workers 0",),
    ),
    "workers beyond the shards": (
        lambda d: tiny_replay(d, "--workers", str(SHARD_COUNT + 1)),
        (f"--workers {SHARD_COUNT + 1}", f"1..{SHARD_COUNT}"),
    ),
    "out is a file": (
        lambda d: ["run", "--replay", write_tiny_log(d / "tiny.jsonl"), "--out", d / "tiny.jsonl"],
        ("tiny.jsonl", "not a directory"),
    ),
    "follow a replay": (
        lambda d: tiny_replay(d, "--follow"),
        ("--follow", "--kafka"),
    ),
    "Kafka settings for a replay": (
        lambda d: tiny_replay(d, "-X", "security.protocol=SSL"),
        ("--kafka-setting", "--kafka"),
    ),
    "bad Kafka setting": (
        lambda d: [
            "run",
            "--kafka",
            f"127.0.0.1:{free_port()}",
            "--out",
            d / "out",
            "-X",
            "security.protocol=bogus",
        ],
        ("Kafka client settings", "security.protocol", "bogus"),
    ),
    "unreachable broker": (
        lambda d: ["run", "--kafka", f"127.0.0.1:{free_port()}", "--out", d / "out"],
        ("127.0.0.1",),
    ),
    "unknown flag": (lambda d: ["run", "--no-such-flag"], ("--no-such-flag",)),
    "bad duration": (
        lambda d: ["generate", d / "log.jsonl", "--duration", "5x"],
        ("--duration", "5x", "2h"),
    ),
    "refused rerun": (_refused_rerun, ("window_length_s", "60", "120", "--fresh")),
    "recon on an empty dir": (lambda d: ["recon", "--out", d / "empty"], ("empty", "centflow run")),
}


@pytest.fixture(scope="module")
def outcomes(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[str], tuple[subprocess.CompletedProcess[str], float, Path]]:
    """Run each error case once (the broker case takes seconds); the tests share the result."""
    done: dict[str, tuple[subprocess.CompletedProcess[str], float, Path]] = {}

    def outcome(name: str) -> tuple[subprocess.CompletedProcess[str], float, Path]:
        if name not in done:
            directory = tmp_path_factory.mktemp(name.replace(" ", "-"))
            (directory / "empty").mkdir()
            arguments, _ = CASES[name]
            args = arguments(directory)
            started_s = time.monotonic()
            result = centflow(*args, cwd=directory)
            done[name] = (result, time.monotonic() - started_s, directory)
        return done[name]

    return outcome


@pytest.mark.parametrize("name", list(CASES))
def test_user_error_exits_2_with_a_message(name: str, outcomes: Callable) -> None:
    result, seconds, _ = outcomes(name)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert result.stdout == ""  # no report
    errors = [line for line in result.stderr.splitlines() if line.startswith("centflow: error: ")]
    assert len(errors) == 1, result.stderr
    message = " ".join(result.stderr[result.stderr.index("centflow: error: ") :].split())
    for fragment in CASES[name][1]:
        assert fragment in message, message
    assert seconds < 15, f"{name} took {seconds:.1f} s"


@pytest.mark.parametrize("name", list(CASES))
def test_user_error_is_exactly_one_line(name: str, outcomes: Callable) -> None:
    result, _, _ = outcomes(name)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("centflow: error: "), result.stderr


def test_errors_before_start_leave_no_state(outcomes: Callable) -> None:
    for name in (
        "no input",
        "both inputs",
        "missing replay file",
        "truncated gzip log",
        "corrupt gzip log",
        "window 0",
        "follow a replay",
        "Kafka settings for a replay",
        "bad Kafka setting",
        "unreachable broker",
    ):
        _, _, directory = outcomes(name)
        assert not (directory / "out" / "state.json").exists(), name


def test_refused_rerun_changes_nothing(outcomes: Callable) -> None:
    result, _, directory = outcomes("refused rerun")
    assert result.returncode == 2
    out = directory / "out"
    assert json.loads((out / "state.json").read_text())["window_length_s"] == 60
    after = json.loads(json.dumps(dump(out / "centflow.duckdb"), default=str))
    assert after == json.loads((directory / "before.json").read_text())
    assert len(after["payments"]) == 5


# The success path -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    directory = tmp_path_factory.mktemp("tiny-run")
    log = write_tiny_log(directory / "tiny.jsonl")
    return run_tiny(log, directory / "out"), log


def test_run_replay_succeeds_and_reports(
    tiny_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, _ = tiny_run
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "error" not in result.stderr
    report = result.stdout
    for line in (
        "payment settled",
        "refund settled",
        "dead letter: duplicate",
        "dead letter: invalid_json",
        "pass  batches equal their events",
        "pass  ledger sums to zero per currency",
        "DuckDB:",
    ):
        assert line in report, report
    assert "FAIL" not in report


def test_run_replay_tables(tiny_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result, log = tiny_run
    assert result.returncode == 0, result.stderr
    database = log.parent / "out" / "centflow.duckdb"
    assert database.is_file()
    assert (log.parent / "out" / "parquet").is_dir()
    with duckdb.connect(str(database), read_only=True) as db:
        payments = db.execute(
            "SELECT event_id, type, amount, currency, payee_id, decision, batch_id "
            "FROM payments ORDER BY event_id"
        ).fetchall()
        assert [row[:4] for row in payments] == [
            ("evt-a", "payment", Decimal("0.10"), "USD"),
            ("evt-b", "payment", Decimal("0.25"), "USD"),
            ("evt-c", "payment", Decimal("100"), "JPY"),
            ("evt-d", "payment", Decimal("1.2345"), "BHD"),
            ("evt-e", "refund", Decimal("0.05"), "USD"),
        ]
        # --replay runs until idle and closes every window: each approved event settles.
        assert all(row[6] is not None for row in payments if row[5] == "approve")
        letters = db.execute("SELECT source, reason FROM dead_letters ORDER BY source").fetchall()
        assert letters == [("tiny.jsonl:5", "duplicate"), ("tiny.jsonl:6", "invalid_json")]
        batches = {
            row[0]: row[1:]
            for row in db.execute(
                "SELECT batch_id, payee_id, currency, event_count, gross, refunds, "
                "epoch(window_end) - epoch(window_start) FROM settlement_batches"
            ).fetchall()
        }
        settled = [row for row in payments if row[6] is not None]
        assert set(batches) == {row[6] for row in settled}
        for event_id, _, _, currency, payee_id, _, batch_id in settled:
            assert batches[batch_id][:2] == (payee_id, currency), event_id
        assert all(row[5] == 60 for row in batches.values())
        assert sum(row[2] for row in batches.values()) == len(settled)
        totals = db.execute(
            "SELECT currency, sum(gross), sum(refunds) "
            "FROM settlement_batches GROUP BY 1 ORDER BY 1"
        ).fetchall()
        assert totals == [
            ("BHD", Decimal("1.2345"), 0),
            ("JPY", Decimal("100"), 0),
            ("USD", Decimal("0.35"), Decimal("0.05")),
        ]
        assert db.execute("SELECT bool_and(balanced) FROM recon_ledger_balance").fetchall() == [
            (True,)
        ]
        assert db.execute(
            "SELECT count(*) FROM recon_batch_totals WHERE status <> 'ok'"
        ).fetchall() == [(0,)]


def test_payouts_are_rounded_to_the_minor_unit(
    tiny_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, log = tiny_run
    with duckdb.connect(str(log.parent / "out" / "centflow.duckdb"), read_only=True) as db:
        rows = db.execute(
            "SELECT batch_id, settlement_currency, net, fx_rate, payout, carry_in, carry_out "
            "FROM settlement_batches"
        ).fetchall()
    assert rows
    for batch_id, currency, net, fx_rate, payout, carry_in, carry_out in rows:
        step = Decimal(1).scaleb(-minor_unit_exponent(currency))
        assert payout % step == 0, f"{batch_id}: payout {payout} {currency}"
        assert payout >= 0, f"{batch_id}: payout {payout} {currency}"
        assert carry_out < step, f"{batch_id}: carry {carry_out} {currency}"
        assert carry_out >= 0 or payout == 0, f"{batch_id}: a receivable beside a payout"
        if fx_rate == 1:
            assert payout + carry_out == net + carry_in, batch_id


def test_identical_rerun_changes_no_table(
    tiny_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    first, log = tiny_run
    assert first.returncode == 0, first.stderr
    out = log.parent / "out"
    before = dump(out / "centflow.duckdb")
    # every table holds rows but settlement_fx (no payee directory here: nothing converts)
    assert {table for table, rows in before.items() if not rows} == {"settlement_fx"}
    again = run_tiny(log, out)
    assert again.returncode == 0, again.stderr
    assert "pass  batches equal their events" in again.stdout
    assert dump(out / "centflow.duckdb") == before


def test_an_event_id_seen_again_settles_and_is_reported(tmp_path: Path) -> None:
    """An id reused for another payee, and one repeated beyond the de-duplication
    horizon, are each settled again: the run ends well, both copies are in payments,
    and the report and `recon_event_repeats` point at them."""
    reused = {**EVENTS[0], "payee_id": "payee-9", "occurred_at": "2026-11-02T09:00:15Z"}
    late_repeat = {**EVENTS[1], "occurred_at": "2026-11-02T09:20:00Z"}
    log = tmp_path / "repeats.jsonl"
    log.write_text("\n".join(json.dumps(event) for event in [*EVENTS, reused, late_repeat]) + "\n")
    out = tmp_path / "out"
    result = run_tiny(log, out, "--dedupe-horizon-s", "600")
    assert result.returncode == 0, result.stderr
    assert "2 event id(s) settled more than once" in result.stdout
    with duckdb.connect(str(out / "centflow.duckdb"), read_only=True) as db:
        assert db.execute("SELECT count(*) FROM payments").fetchall() == [(len(EVENTS) + 2,)]
        repeats = db.execute(
            "SELECT event_id, copies, payees, reason FROM recon_event_repeats ORDER BY event_id"
        ).fetchall()
        unsettled = db.execute("SELECT count(*) FROM payments WHERE batch_id IS NULL").fetchall()
    assert repeats == [
        (EVENTS[0]["event_id"], 2, f"{EVENTS[0]['payee_id']},payee-9", "other_payee"),
        (EVENTS[1]["event_id"], 2, EVENTS[1]["payee_id"], "beyond_horizon"),
    ]
    assert unsettled == [(0,)]


def test_a_second_run_into_a_busy_out_dir_is_refused(tmp_path: Path) -> None:
    """While one run holds OUT, another (even with --fresh) stops in one line and
    touches nothing; once the holder is gone the same command runs."""
    log = write_tiny_log(tmp_path / "tiny.jsonl")
    out = tmp_path / "out"
    with out_dir_lock(out):
        refused = run_tiny(log, out, "--fresh")
        assert sorted(path.name for path in out.iterdir()) == [".centflow.lock"]
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "in use by another centflow run" in refused.stderr
    assert f"pid {os.getpid()}" in refused.stderr
    assert run_tiny(log, out).returncode == 0


def test_a_finished_replay_whose_log_grew_is_refused_not_skipped(tmp_path: Path) -> None:
    log = write_tiny_log(tmp_path / "tiny.jsonl")
    out = tmp_path / "out"
    assert run_tiny(log, out).returncode == 0
    assert run_tiny(log, out).returncode == 0  # unchanged: a quiet no-op
    before = dump(out / "centflow.duckdb")
    with log.open("a") as grown:
        grown.write(json.dumps({**EVENTS[0], "event_id": "evt-new"}) + "\n")
    refused = run_tiny(log, out)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "--fresh" in refused.stderr, refused.stderr
    assert dump(out / "centflow.duckdb") == before
    assert run_tiny(log, out, "--fresh").returncode == 0
    payments = dump(out / "centflow.duckdb")["payments"]
    assert "evt-new" in {row[0] for row in payments}


def test_no_command_prints_the_help_and_no_empty_error(tmp_path: Path) -> None:
    result = centflow(cwd=tmp_path)
    assert result.returncode == 2
    assert "Usage: centflow" in result.stdout + result.stderr
    assert "error" not in result.stderr


def test_generate_takes_a_duration_with_a_unit(tmp_path: Path) -> None:
    for name, flags in (("unit", ["--duration", "2h"]), ("seconds", ["--duration-s", "7200"])):
        result = centflow(
            "generate", tmp_path / f"{name}.jsonl", "--events", "500", *flags, cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "unit.jsonl").read_bytes() == (tmp_path / "seconds.jsonl").read_bytes()
    shorter = centflow(
        "generate", tmp_path / "short.jsonl", "--events", "500", "--duration", "30m", cwd=tmp_path
    )
    assert shorter.returncode == 0, shorter.stderr
    assert (tmp_path / "short.jsonl").read_bytes() != (tmp_path / "unit.jsonl").read_bytes()


def test_a_simulated_statement_imports_once_and_matching_finds_its_breaks(
    tiny_run: tuple[subprocess.CompletedProcess[str], Path], tmp_path: Path
) -> None:
    import shutil

    out = tmp_path / "out"
    shutil.copytree(tiny_run[1].parent / "out", out, ignore=shutil.ignore_patterns("*.lock"))
    simulated = centflow(
        "statement", "simulate", "--out", out, "--to", tmp_path / "st.csv", "--seed", "5",
        "--break-share", "1", "--breaks", tmp_path / "breaks.json", cwd=tmp_path,
    )  # fmt: skip
    assert simulated.returncode == 0, simulated.stderr
    document = json.loads((tmp_path / "breaks.json").read_text())
    assert document["injected"]
    first = centflow("recon", "import", tmp_path / "st.csv", "--out", out, cwd=tmp_path)
    again = centflow("recon", "import", tmp_path / "st.csv", "--out", out, cwd=tmp_path)
    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    assert "0 already loaded" in first.stdout and "0 entries added" in again.stdout
    matched = centflow("recon", "match", "--out", out, "--as-of", document["as_of"], cwd=tmp_path)
    assert matched.returncode == 0, matched.stderr
    expected = Counter(
        event["expected_class"] for event in document["injected"]
        if event["expected_class"] != "matched"
    )  # fmt: skip
    with duckdb.connect(str(out / "centflow.duckdb"), read_only=True) as db:
        found = Counter(
            dict(db.execute("SELECT class, count(*) FROM recon_breaks GROUP BY ALL").fetchall())
        )
    assert found == expected
    assert f"{sum(expected.values())} breaks" in matched.stdout or not expected
    # the report still reloads from Parquet, and the statement stays loaded
    report = centflow("recon", "--out", out, cwd=tmp_path)
    assert report.returncode == 0 and "pass  ledger sums to zero" in report.stdout
    with duckdb.connect(str(out / "centflow.duckdb"), read_only=True) as db:
        assert db.execute("SELECT count(*) FROM statement_entries").fetchall()[0][0] > 0
    refused = centflow("recon", "match", "--out", tmp_path / "none", cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
