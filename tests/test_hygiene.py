"""Data hygiene: no card number in a table, no secret in a message, outputs owner-only."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import duckdb
import msgspec
import pytest

from centflow.errors import ConfigError
from centflow.ingest.decode import decode_block, decode_message
from centflow.ingest.events import Payment, RawMessage
from centflow.ingest.pan import contains_pan, luhn_ok, mask_pans
from centflow.ops.kafka import load_client_settings, redact_text, redacted_settings

VISA = "4111111111111111"  # a test card number (passes Luhn)
BASE = {
    "event_id": "evt-1",
    "type": "payment",
    "occurred_at": "2026-11-02T09:00:01Z",
    "payer_id": "payer-1",
    "payee_id": "payee-1",
    "amount": "1.00",
    "currency": "USD",
    "rail": "card",
    "country": "US",
}
SKEW_US = 300_000_000
INGEST_US = 1_800_000_000_000_000


@pytest.mark.parametrize(
    "text",
    [
        VISA,
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "card-5500-0000-0000-0004",
        "378282246310005",  # 15 digits (Amex)
        "4222222222222",  # 13 digits
    ],
)
def test_card_numbers_with_spaces_or_dashes_are_found(text):
    digits = "".join(char for char in text if char.isdigit())
    assert luhn_ok(digits)
    assert contains_pan(text)


@pytest.mark.parametrize(
    "text",
    [
        "payer-1",
        "4111111111111112",  # fails Luhn
        "422222222222",  # 12 digits
        "41111111111111111110",  # 20 digits (Luhn-valid, but no card is that long)
        "4111--1111-1111-1111",  # two separators in a row: not one run
        "550e8400-e29b-41d4-a716-446655440000",  # a UUID
        "2026-11-02T09:00:01Z",
    ],
)
def test_ordinary_ids_and_other_digit_strings_pass(text):
    assert not contains_pan(text)


def test_bounds_are_13_and_19_digits():
    def luhn_number(length: int) -> str:
        body = "4" + "0" * (length - 2)
        return next(body + check for check in "0123456789" if luhn_ok(body + check))

    assert [contains_pan(luhn_number(n)) for n in (12, 13, 19, 20)] == [False, True, True, False]


def test_masking_keeps_the_last_four_digits_and_the_separators():
    assert mask_pans(b'"4111 1111 1111 1111"') == b'"**** **** **** 1111"'
    assert mask_pans(b'{"amount": "1.00"}') == b'{"amount": "1.00"}'


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("payer_id", "4111 1111 1111 1111"),
        ("payee_id", VISA),
        ("event_id", VISA),
        ("device_id", f"dev-{VISA}"),
        ("ref_event_id", "4111-1111-1111-1111"),
        ("splits", [{"party_id": VISA, "bps": 10000}]),
    ],
)
def test_a_card_number_in_an_id_is_a_masked_pan_in_id_dead_letter(field, value):
    raw = msgspec.json.encode({**BASE, field: value})
    letter = decode_message(raw, "f:1", INGEST_US, SKEW_US)
    assert not isinstance(letter, Payment)
    assert letter.reason == "pan_in_id"
    assert VISA not in letter.raw.decode() and "1111111111" not in letter.detail
    assert b"1111" in letter.raw  # the last four digits stay, for whoever must trace it
    batch, dead = decode_block([RawMessage("f:1", INGEST_US, raw)], SKEW_US)
    assert batch.num_rows == 0 and dead == [letter]  # the block decoder agrees


def test_a_card_number_wins_over_other_faults_and_escapes_are_masked_too():
    broken = msgspec.json.encode({**BASE, "payer_id": VISA, "amount": "bad"})
    assert decode_message(broken, "f:1", INGEST_US, SKEW_US).reason == "pan_in_id"
    missing = msgspec.json.encode({key: v for key, v in BASE.items() if key != "amount"})
    missing = missing.replace(b'"payer-1"', f'"{VISA}"'.encode())
    assert decode_message(missing, "f:1", INGEST_US, SKEW_US).reason == "pan_in_id"
    escaped = json.dumps({**BASE, "payer_id": VISA}).replace("4111", "\\u0034111").encode()
    letter = decode_message(escaped, "f:1", INGEST_US, SKEW_US)
    assert letter.reason == "pan_in_id"
    assert VISA not in json.dumps(json.loads(letter.raw))


def test_secrets_are_redacted_wherever_settings_are_shown():
    settings = {"sasl.username": "svc", "sasl.password": "hunter2", "ssl.key.password": "k3y"}
    assert redacted_settings(settings) == {
        "sasl.username": "svc",
        "sasl.password": "[redacted]",
        "ssl.key.password": "[redacted]",
    }
    assert "hunter2" not in redact_text("bad value hunter2", settings)
    with pytest.raises(ConfigError) as refused:
        load_client_settings(None, ["sasl.password hunter2"])
    assert "hunter2" not in str(refused.value)


def test_no_secret_reaches_the_command_line_output(tmp_path):
    properties = tmp_path / "client.properties"
    properties.write_text("sasl.password=hunter2\nssl.key.password hunter3\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "centflow",
            "run",
            "--kafka",
            "127.0.0.1:1",
            "--kafka-config",
            str(properties),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and "client.properties:2" in result.stderr
    assert "hunter" not in result.stderr + result.stdout
    bad_value = subprocess.run(
        [
            sys.executable,
            "-m",
            "centflow",
            "run",
            "--kafka",
            "127.0.0.1:1",
            "-X",
            "sasl.password=hunter2",
            "-X",
            "security.protocol=hunter2",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad_value.returncode == 2 and "security.protocol" in bad_value.stderr
    assert "hunter2" not in bad_value.stderr + bad_value.stdout


def _text_of_every_table(database: Path) -> str:
    with duckdb.connect(str(database), read_only=True) as db:
        names = [row[0] for row in db.execute("SHOW TABLES").fetchall()]
        return "\n".join(repr(db.execute(f'SELECT * FROM "{name}"').fetchall()) for name in names)


def test_a_run_keeps_card_numbers_out_of_its_tables_and_its_outputs_owner_only(tmp_path):
    events = [
        {**BASE, "event_id": "evt-ok"},
        {**BASE, "event_id": "evt-card", "payer_id": "4111 1111 1111 1111"},
        {**BASE, "event_id": "evt-dash", "payee_id": "5500-0000-0000-0004"},
    ]
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps(event) + "\n" for event in events))
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "centflow",
            "run",
            "--replay",
            str(log),
            "--out",
            str(out),
            "--window-s",
            "60",
            "--lateness-s",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with duckdb.connect(str(out / "centflow.duckdb"), read_only=True) as db:
        assert db.execute("SELECT event_id FROM payments").fetchall() == [("evt-ok",)]
        dead = db.execute("SELECT reason, raw, detail FROM dead_letters ORDER BY raw").fetchall()
    assert [reason for reason, _, _ in dead] == ["pan_in_id", "pan_in_id"]
    raws = sorted(bytes(raw) for _, raw, _ in dead)
    assert b"**** **** **** 1111" in raws[0] + raws[1]
    assert b"****-****-****-0004" in raws[0] + raws[1]
    everything = _text_of_every_table(out / "centflow.duckdb")
    for digits in ("4111 1111 1111", "5500-0000-0000", "411111111111", "550000000000"):
        assert digits not in everything
    parquet = b"".join(path.read_bytes() for path in (out / "parquet").rglob("*.parquet"))
    assert b"4111 1111 1111" not in parquet and b"5500-0000-0000" not in parquet
    # owner only: every directory 0700 and every file 0600 (no group or other bits)
    paths = [out, *out.rglob("*")]
    assert len(paths) > 10
    loose = [
        f"{path} {stat.filemode(path.stat().st_mode)}"
        for path in paths
        if path.stat().st_mode & 0o077
    ]
    assert not loose, loose
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
