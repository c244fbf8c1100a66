"""Golden replays: each shipped log, replayed with `make run`'s settings, gives the summary
stored beside it, and every line's fate is the one its generator labelled it with.

Changing a golden file needs a reason in the commit message. To rewrite them:
``UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from centflow.errors import ConfigError
from centflow.generate.logs import generate_lines
from centflow.ingest.timeparse import parse_rfc3339_us

REPLAY_DATA = Path(__file__).resolve().parent.parent / "replay_data"
SETTINGS = ["--window-s", "60", "--lateness-s", "30"]
FATES_MAX = 100
# log name -> the generator arguments of its documented command (replay_data/README.md),
# or None for a hand-written log
LOGS: dict[str, dict[str, object] | None] = {
    "edge_cases.jsonl": None,
    "fraud.jsonl.gz": {
        "count": 4000,
        "seed": 11,
        "start_us": parse_rfc3339_us("2026-11-03T08:00:00Z"),
        "duration_s": 1800,
        "window_hint_s": 60,
        "scenarios": ("card-testing", "account-takeover", "velocity-abuse", "refund-abuse"),
    },
    "sample.jsonl.gz": {
        "count": 5000,
        "seed": 7,
        "start_us": parse_rfc3339_us("2026-11-02T09:00:00Z"),
        "duration_s": 7200,
        "window_hint_s": 60,
    },
}


def summary(database: Path) -> dict[str, object]:
    """What a golden file records: events by outcome, money per currency."""
    with duckdb.connect(str(database), read_only=True) as db:
        outcomes = db.execute(
            "SELECT type || CASE WHEN batch_id IS NULL THEN ' unsettled' ELSE ' settled' END, count(*) "
            "FROM payments GROUP BY 1 UNION ALL "
            "SELECT 'dead letter: ' || reason, count(*) FROM dead_letters GROUP BY reason ORDER BY 1"
        ).fetchall()
        currencies = db.execute(
            "SELECT currency, count(*), sum(event_count), sum(late_count), sum(gross)::VARCHAR, "
            "sum(refunds)::VARCHAR, sum(net)::VARCHAR, "
            "(SELECT sum(payout) FROM settlement_batches AS p "
            " WHERE p.settlement_currency = b.currency)::VARCHAR "  # payouts: settlement currency
            "FROM settlement_batches AS b GROUP BY currency ORDER BY currency"
        ).fetchall()
        converted = db.execute(
            "SELECT currency || ' -> ' || settlement_currency, count(*), "
            "sum(fx_converted)::VARCHAR, sum(fx_spread)::VARCHAR, "
            "count(*) FILTER (WHERE status <> 'settled') FROM settlement_batches "
            "WHERE currency <> settlement_currency GROUP BY ALL ORDER BY 1"
        ).fetchall()
        balance = db.execute("SELECT bool_and(balanced) FROM recon_ledger_balance").fetchall()[0][0]
    columns = ("batches", "events", "late", "gross", "refunds", "net", "payout")
    with duckdb.connect(str(database), read_only=True) as db:
        fates = db.execute(
            "SELECT source, CASE WHEN batch_id IS NULL THEN decision || ' ' || coalesce(risk_reasons, '-') "
            "ELSE 'settled ' || batch_id END || CASE WHEN late THEN ' late' ELSE '' END "
            "FROM payments UNION ALL SELECT source, 'dead letter: ' || reason FROM dead_letters"
        ).fetchall()
    result: dict[str, object] = {}
    if len(fates) <= FATES_MAX:  # small logs pin every line's fate and every batch
        result["fates"] = dict(sorted(fates, key=lambda item: int(item[0].rpartition(":")[2])))
        with duckdb.connect(str(database), read_only=True) as db:
            batches = db.execute(
                "SELECT batch_id, payee_id || ' ' || currency || ' ' || strftime(window_start, '%H:%M') "
                "|| ' part ' || part || ': gross ' || gross || ' refunds ' || refunds || ' payout ' "
                "|| payout || ' carry ' || carry_in || ' -> ' || carry_out FROM settlement_batches"
            ).fetchall()
        result["batches"] = dict(sorted(batches))
    return result | {
        "outcomes": {name: count for name, count in outcomes},
        "currencies": {row[0]: dict(zip(columns, row[1:], strict=True)) for row in currencies},
        "ledger_balanced": balance,
        "fx": {
            pair: {"batches": n, "converted": c, "spread": sp, "held": h}
            for pair, n, c, sp, h in converted
        },
    }


@pytest.fixture(scope="module", params=sorted(LOGS))
def replayed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    name = request.param
    out = tmp_path_factory.mktemp("golden")
    command = [
        sys.executable,
        "-m",
        "centflow",
        "run",
        "--replay",
        str(REPLAY_DATA / name),
        "--out",
        str(out),
    ]
    settings = REPLAY_DATA / f"{name.removesuffix('.gz').removesuffix('.jsonl')}.toml"
    if settings.exists():
        command += ["--config", str(settings)]
    result = subprocess.run(
        [*command, *SETTINGS], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return name, out / "centflow.duckdb"


def test_replay_matches_its_golden_summary(replayed):
    name, database = replayed
    golden = REPLAY_DATA / f"{name.removesuffix('.gz').removesuffix('.jsonl')}.golden.json"
    actual = summary(database)
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n")
    assert actual == json.loads(golden.read_text())


def test_every_line_meets_the_fate_its_generator_labelled(replayed):
    """Line by line: a valid event is a payment row, a fault is a dead letter with its reason."""
    name, database = replayed
    if LOGS[name] is None:
        pytest.skip(f"{name} is hand-written: its golden summary pins every line's fate")
    expected = {
        number: line.reason
        for number, line in enumerate(generate_lines(**LOGS[name]), start=1)  # type: ignore[arg-type,misc]
    }
    with duckdb.connect(str(database), read_only=True) as db:
        dead = dict(db.execute("SELECT source, reason FROM dead_letters").fetchall())
        settled = {source for (source,) in db.execute("SELECT source FROM payments").fetchall()}
    for number, reason in expected.items():
        source = f"{name}:{number}"
        if reason:
            assert dead.get(source) == reason, source
        else:
            assert source in settled, source
    assert len(dead) + len(settled) == len(expected)


def test_labelled_fraud_events_are_valid_payments_that_settle():
    """Every event the fraud log's labels name is admitted (approved until risk scoring exists)."""
    labels = [
        json.loads(line)
        for line in (REPLAY_DATA / "fraud.jsonl.gz.labels.jsonl").read_text().splitlines()
    ]
    assert {label["scenario"] for label in labels} == {
        "card-testing",
        "account-takeover",
        "velocity-abuse",
        "refund-abuse",
    }
    from centflow.generate.logs import GenerateStats

    stats = GenerateStats()
    for _ in generate_lines(stats=stats, **LOGS["fraud.jsonl.gz"]):  # type: ignore[arg-type]
        pass
    assert [label["event_id"] for label in labels] == [label.event_id for label in stats.labels]


def test_the_readme_queries_run_on_a_replay(replayed, tmp_path):
    """Every analyst query in the README runs against what a replay wrote, with a
    simulated statement imported and matched (as `centflow recon match` leaves it)."""
    import shutil

    from centflow.recon.matching import reconcile
    from centflow.recon.simulate import simulate_statement
    from centflow.recon.statements import import_statement

    database = tmp_path / "centflow.duckdb"
    shutil.copy(replayed[1], database)
    try:
        simulation = simulate_statement(
            database, tmp_path / "statement.csv", seed=1, break_share=0.2
        )
    except ConfigError as error:  # edge_cases: payouts at the limit of DECIMAL(18,6)
        assert "beyond what one statement's balance can hold" in str(error)
        reconcile(database, datetime(2026, 12, 1, tzinfo=UTC))  # no statement: all missing
    else:
        import_statement(tmp_path / "statement.csv", database)
        reconcile(database, simulation.as_of, simulation.grace_days)
    readme = (REPLAY_DATA.parent / "README.md").read_text()
    start = readme.index("```sql") + len("```sql")
    block = readme[start : readme.index("```", start)]
    queries = []
    for text in block.split(";"):
        query = "\n".join(line for line in text.splitlines() if not line.strip().startswith("--"))
        if query.strip():
            queries.append(
                query.replace("'b-...'", "(SELECT min(batch_id) FROM settlement_batches)")
            )
    assert len(queries) >= 6
    with duckdb.connect(str(database), read_only=True) as db:
        for query in queries:
            db.execute(query).fetchall()
