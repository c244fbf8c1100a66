"""Analysts read ``OUT/centflow.duckdb`` read-only while the pipeline runs (`sinks.duckdb`).

A reader polls the file, opening it read-only again and again, while a replay
runs in a subprocess and reloads the tables, and ``centflow recon`` reloads them
again; another reader keeps one connection open all along. Every time, whatever
load the reader opened is whole: each batch has its events and its ledger
entries, and each currency of a batch's ledger sums to zero. The loads replace
the file (several files are seen), and the open reader blocks none of them.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parent.parent
SAMPLE_LOG = REPO / "replay_data" / "sample.jsonl.gz"
RELOADS = 3
TIMEOUT_S = 300

# One row of counts; all but `batches` must be zero in any load a reader sees.
WHOLE_SQL = """
SELECT
    (SELECT count(*) FROM settlement_batches) AS batches,
    (SELECT count(*) FROM settlement_batches AS b
     LEFT JOIN (SELECT batch_id, count(*) AS events FROM payments
                WHERE batch_id IS NOT NULL GROUP BY batch_id) AS p USING (batch_id)
     WHERE b.event_count <> coalesce(p.events, 0)) AS event_counts_off,
    (SELECT count(*) FROM (SELECT batch_id, currency FROM ledger_entries
                           GROUP BY ALL HAVING sum(amount) <> 0)) AS ledgers_not_zero,
    (SELECT count(*) FROM settlement_batches ANTI JOIN ledger_entries USING (batch_id))
        AS batches_without_entries,
    (SELECT count(*) FROM (SELECT DISTINCT batch_id FROM ledger_entries)
     ANTI JOIN settlement_batches USING (batch_id)) AS entries_without_batch,
    (SELECT count(*) FROM (SELECT DISTINCT batch_id FROM payments WHERE batch_id IS NOT NULL)
     ANTI JOIN settlement_batches USING (batch_id)) AS events_without_batch
"""


def whole(connection: duckdb.DuckDBPyConnection) -> int:
    """The number of batches, after checking every one is whole."""
    batches, *faults = connection.execute(WHOLE_SQL).fetchall()[0]
    assert faults == [0] * len(faults), dict(
        zip(("event_counts", "ledgers", "no entries", "no batch", "no batch"), faults, strict=True)
    )
    return int(batches)


def centflow(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "centflow", *map(str, args)]


def test_readers_see_whole_loads_while_a_replay_runs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    database = out / "centflow.duckdb"
    first = subprocess.run(
        centflow("run", "--replay", SAMPLE_LOG, "--out", out),
        capture_output=True, text=True, timeout=TIMEOUT_S, check=False, cwd=REPO,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr[-2000:]
    held = duckdb.connect(str(database), read_only=True)  # an analyst who never lets go
    expected = whole(held)
    assert expected > 0
    # The same replay again (it resumes, and loads at its end), then reloads by `centflow recon`.
    script = " && ".join(
        [subprocess.list2cmdline(centflow("run", "--replay", SAMPLE_LOG, "--out", out))]
        + [subprocess.list2cmdline(centflow("recon", "--out", out))] * RELOADS
    )
    # Its output goes to files: a pipe nobody reads while the loop runs would fill
    # (the reports are longer than a pipe holds) and stop the writer until the deadline.
    said, errors = tmp_path / "writer.out", tmp_path / "writer.err"
    with said.open("w") as stdout_file, errors.open("w") as stderr_file:
        writer = subprocess.Popen(
            ["bash", "-c", script], cwd=REPO, stdout=stdout_file, stderr=stderr_file, text=True
        )
    reads, files = 0, set()
    deadline = time.monotonic() + TIMEOUT_S
    while writer.poll() is None and time.monotonic() < deadline:
        files.add(database.stat().st_ino)
        with duckdb.connect(str(database), read_only=True) as reader:
            assert whole(reader) == expected
        reads += 1
    writer.wait(timeout=TIMEOUT_S)
    stdout, stderr = said.read_text(), errors.read_text()
    assert writer.returncode == 0, stderr[-2000:]
    assert stdout.count("DuckDB: ") == 1 + RELOADS
    files.add(database.stat().st_ino)
    assert whole(held) == expected  # the open reader still reads the load it opened
    held.close()
    with duckdb.connect(str(database), read_only=True) as reader:
        assert whole(reader) == expected
    assert reads >= 10, f"only {reads} reads while the pipeline ran"
    assert len(files) >= 2, "the loads should have replaced the file while it was read"
    assert not list(out.glob(".centflow.duckdb.*"))  # no building file left behind


def test_recon_during_a_run_reports_the_last_load(tmp_path: Path) -> None:
    """While a run holds OUT, `centflow recon` does not load a dataset still being written."""
    import fcntl

    out = tmp_path / "out"
    first = subprocess.run(
        centflow("run", "--replay", SAMPLE_LOG, "--out", out),
        capture_output=True, text=True, timeout=TIMEOUT_S, check=False, cwd=REPO,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr[-2000:]
    before = (out / "centflow.duckdb").stat().st_ino
    with (out / ".centflow.lock").open("a+") as lock:  # as a running `centflow run` holds it
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.truncate(0)
        lock.write("pid 4242\n")
        lock.flush()
        report = subprocess.run(
            centflow("recon", "--out", out),
            capture_output=True, text=True, timeout=TIMEOUT_S, check=False, cwd=REPO,
        )  # fmt: skip
    assert report.returncode == 0, report.stderr[-2000:]
    said = " ".join(report.stderr.split())
    assert "a run is writing" in said and "(pid 4242)" in said, said
    assert "pass  ledger sums to zero" in report.stdout
    assert (out / "centflow.duckdb").stat().st_ino == before  # not reloaded
    again = subprocess.run(
        centflow("recon", "--out", out),
        capture_output=True, text=True, timeout=TIMEOUT_S, check=False, cwd=REPO,
    )  # fmt: skip
    assert again.returncode == 0 and (out / "centflow.duckdb").stat().st_ino != before
