"""The synthetic log generator: deterministic, realistic, and faulty in known ways."""

from __future__ import annotations

import gzip
import hashlib
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from centflow.errors import ConfigError
from centflow.generate.logs import (
    FAULT_REASONS,
    PIPELINE_FAULTS,
    VALID_KINDS,
    GenerateStats,
    LogLine,
    generate_events,
    generate_lines,
    main,
    write_log,
)
from centflow.ingest.decode import decode_message
from centflow.ingest.events import DeadLetter, Payment
from centflow.ingest.replay import LogClock, iter_lines
from centflow.ingest.timeparse import parse_rfc3339_us
from centflow.limits import MESSAGE_BYTES_MAX
from centflow.money.amounts import minor_unit_exponent

START_US = parse_rfc3339_us("2026-11-02T09:00:00Z")
FAR_FUTURE_US = parse_rfc3339_us("2100-01-01T00:00:00Z")
WINDOW_S = 60
COUNT = 5000
SAMPLE = Path(__file__).resolve().parents[1] / "replay_data" / "sample.jsonl.gz"


def _kwargs(**overrides: Any) -> dict[str, Any]:
    return {
        "seed": 7,
        "start_us": START_US,
        "duration_s": 7200,
        "window_hint_s": WINDOW_S,
    } | overrides


@pytest.fixture(scope="module")
def log() -> tuple[list[LogLine], GenerateStats]:
    stats = GenerateStats()
    lines = list(generate_lines(COUNT, stats=stats, **_kwargs()))
    return lines, stats


def _decode(raw: bytes) -> Payment | DeadLetter:
    return decode_message(raw, "t:1", ingest_us=FAR_FUTURE_US, future_skew_us=300_000_000)


def _wire(raw: bytes) -> dict[str, Any]:
    document = msgspec.json.decode(raw)
    assert isinstance(document, dict)
    return document


def test_same_seed_gives_identical_bytes() -> None:
    first = list(generate_events(3000, **_kwargs()))
    second = list(generate_events(3000, **_kwargs()))
    assert len(first) == 3000
    assert first == second


def test_different_seed_gives_different_log() -> None:
    seven = list(generate_events(500, **_kwargs()))
    eight = list(generate_events(500, **_kwargs(seed=8)))
    assert seven != eight
    assert len(set(seven) & set(eight)) == 0


def test_events_and_labelled_lines_agree(log: tuple[list[LogLine], GenerateStats]) -> None:
    lines, _ = log
    assert [line.raw for line in lines] == list(generate_events(COUNT, **_kwargs()))


def test_every_line_is_one_line_of_bytes(log: tuple[list[LogLine], GenerateStats]) -> None:
    lines, _ = log
    assert len(lines) == COUNT
    for line in lines:
        assert isinstance(line.raw, bytes) and line.raw.strip()
        assert b"\n" not in line.raw and b"\r" not in line.raw


def test_stats_count_every_line_once(log: tuple[list[LogLine], GenerateStats]) -> None:
    lines, stats = log
    kinds = Counter(line.kind for line in lines)
    assert stats.events == COUNT
    assert stats.payments == kinds["payment"]
    assert stats.refunds == kinds["refund"]
    assert stats.chargebacks == kinds["chargeback"]
    assert stats.duplicates == kinds["duplicate"]
    assert stats.malformed == {kind: kinds[kind] for kind in FAULT_REASONS if kinds[kind]}
    assert stats.valid + stats.duplicates + stats.malformed_total == COUNT
    assert stats.as_dict()["valid"] == stats.valid


def test_rates_are_roughly_as_documented(log: tuple[list[LogLine], GenerateStats]) -> None:
    _, stats = log
    assert 0.02 <= stats.refunds / COUNT <= 0.045
    assert 0.001 <= stats.chargebacks / COUNT <= 0.012
    assert 0.005 <= stats.duplicates / COUNT <= 0.02
    assert 0.008 <= stats.malformed_total / COUNT <= 0.025
    assert 0.015 <= stats.out_of_order / COUNT <= 0.05
    assert 0.001 <= stats.late / COUNT <= 0.012
    assert 0.02 <= stats.with_splits / stats.payments <= 0.09
    assert 0.02 <= stats.sub_minor_amounts / stats.payments <= 0.09
    assert stats.extra_fields > 0 and stats.offset_timestamps > 0


def test_every_fault_kind_appears_and_oversize_is_rare(
    log: tuple[list[LogLine], GenerateStats],
) -> None:
    _, stats = log
    assert set(stats.malformed) == set(FAULT_REASONS)
    assert stats.malformed["oversize"] <= COUNT // 5000
    small = GenerateStats()
    for _ in generate_lines(4999, stats=small, **_kwargs()):
        pass
    assert "oversize" not in small.malformed


def test_reversals_reference_earlier_payments_and_never_exceed_them(
    log: tuple[list[LogLine], GenerateStats],
) -> None:
    lines, _ = log
    payments: dict[str, dict[str, Any]] = {}
    reversed_amounts: defaultdict[str, Decimal] = defaultdict(Decimal)
    reversals = 0
    for line in lines:
        if line.kind == "payment":
            wire = _wire(line.raw)
            payments[wire["event_id"]] = wire
        elif line.kind in ("refund", "chargeback"):
            reversals += 1
            wire = _wire(line.raw)
            assert wire["type"] == line.kind
            payment = payments[wire["ref_event_id"]]  # earlier in the log
            for name in ("payer_id", "payee_id", "currency"):
                assert wire[name] == payment[name], name
            assert parse_rfc3339_us(wire["occurred_at"]) > parse_rfc3339_us(payment["occurred_at"])
            reversed_amounts[wire["ref_event_id"]] += Decimal(wire["amount"])
            assert reversed_amounts[wire["ref_event_id"]] <= Decimal(payment["amount"])
    assert reversals > 100
    assert any(  # some payments are reversed in full, some in part
        total == Decimal(payments[ref]["amount"]) for ref, total in reversed_amounts.items()
    )
    assert any(total < Decimal(payments[ref]["amount"]) for ref, total in reversed_amounts.items())


def test_pipeline_faults_break_exactly_their_rule(log: tuple[list[LogLine], GenerateStats]) -> None:
    """The faults only admission can see: an unseen reference, a payee that does not
    match the payment's, a refund above what is left of the payment."""
    lines, _ = log
    payments: dict[str, dict[str, Any]] = {}
    left: dict[str, Decimal] = {}
    seen: Counter[str] = Counter()
    for line in lines:
        wire = _wire(line.raw) if line.kind in VALID_KINDS or line.kind in PIPELINE_FAULTS else {}
        if line.kind == "payment":
            payments[wire["event_id"]] = wire
            left[wire["event_id"]] = Decimal(wire["amount"])
        elif line.kind in ("refund", "chargeback"):
            left[wire["ref_event_id"]] -= Decimal(wire["amount"])
        elif line.kind in PIPELINE_FAULTS:
            seen[line.kind] += 1
            assert wire["type"] == "refund"
            reference = wire["ref_event_id"]
            if line.kind == "unknown_reference":
                assert reference not in payments
                assert all(
                    reference != _wire(other.raw)["event_id"]
                    for other in lines
                    if other.kind == "payment"
                )
                continue
            payment = payments[reference]
            assert (wire["payer_id"], wire["payee_id"]) == (
                payment["payer_id"],
                payment["payee_id"],
            )
            if line.kind == "reference_mismatch":
                assert wire["currency"] != payment["currency"]
                assert Decimal(wire["amount"]) <= left[reference]
            else:
                assert wire["currency"] == payment["currency"]
                assert Decimal(wire["amount"]) > left[reference]
    assert set(seen) == PIPELINE_FAULTS


def test_duplicates_repeat_an_earlier_line_byte_for_byte(
    log: tuple[list[LogLine], GenerateStats],
) -> None:
    lines, _ = log
    duplicates = 0
    for index, line in enumerate(lines):
        if line.kind == "duplicate":
            duplicates += 1
            earlier = [
                other for other in lines[max(0, index - 25) : index] if other.kind in VALID_KINDS
            ]
            assert line.raw in [other.raw for other in earlier]
    assert duplicates > 0


def test_event_ids_are_unique_except_duplicates(log: tuple[list[LogLine], GenerateStats]) -> None:
    lines, _ = log
    ids = []
    for line in lines:
        if line.kind == "duplicate":
            continue
        try:
            document = msgspec.json.decode(line.raw)
        except (msgspec.DecodeError, UnicodeDecodeError):  # not JSON, or not UTF-8
            continue
        if isinstance(document, dict) and "event_id" in document:
            ids.append(document["event_id"])
    assert len(ids) == len(set(ids)) > COUNT * 0.95


def test_amounts_are_strings_at_the_currency_precision(
    log: tuple[list[LogLine], GenerateStats],
) -> None:
    lines, _ = log
    fraction_digits: Counter[tuple[str, bool]] = Counter()
    currencies = set()
    for line in lines:
        if line.kind not in VALID_KINDS:
            continue
        wire = _wire(line.raw)
        amount, currency = wire["amount"], wire["currency"]
        assert isinstance(amount, str) and Decimal(amount) > 0
        currencies.add(currency)
        digits = len(amount.partition(".")[2])
        if currency == "JPY":
            assert "." not in amount, amount
        assert digits <= 6
        exponent = minor_unit_exponent(currency)
        fraction_digits[(currency, digits > exponent)] += 1
        if digits <= exponent and currency != "JPY":
            assert digits == exponent, amount  # minor-unit amounts are written in full ("0.10")
    assert currencies == {"USD", "EUR", "GBP", "JPY", "BHD", "BRL", "INR"}
    sub_minor = sum(count for (_, finer), count in fraction_digits.items() if finer)
    assert 0.02 <= sub_minor / sum(fraction_digits.values()) <= 0.09


def test_amounts_are_heavy_tailed_micro_payments(log: tuple[list[LogLine], GenerateStats]) -> None:
    lines, _ = log
    usd = sorted(
        Decimal(wire["amount"])
        for wire in (_wire(line.raw) for line in lines if line.kind == "payment")
        if wire["currency"] == "USD"
    )
    below_half = sum(1 for amount in usd if amount <= Decimal("0.50"))
    assert below_half / len(usd) > 0.5
    assert any(amount < Decimal("0.01") for amount in usd)  # sub-cent
    assert usd[-1] >= 500


def test_payees_are_skewed_and_mostly_single_currency(
    log: tuple[list[LogLine], GenerateStats],
) -> None:
    lines, stats = log
    wires = [_wire(line.raw) for line in lines if line.kind == "payment"]
    by_payee = Counter(wire["payee_id"] for wire in wires)
    top_tenth = sum(count for _, count in by_payee.most_common(len(by_payee) // 10))
    assert top_tenth / len(wires) > 0.5
    assert 150 <= len(by_payee) <= 250 and stats.payees == 200
    assert 1500 <= len({wire["payer_id"] for wire in wires}) <= 2500
    currencies: dict[str, Counter[str]] = {}
    for wire in wires:
        currencies.setdefault(wire["payee_id"], Counter())[wire["currency"]] += 1
    main_share = sum(counter.most_common(1)[0][1] for counter in currencies.values()) / len(wires)
    assert main_share > 0.85


def test_optional_fields_and_offsets_occur(log: tuple[list[LogLine], GenerateStats]) -> None:
    lines, _ = log
    wires = [_wire(line.raw) for line in lines if line.kind == "payment"]
    assert any("+05:30" in wire["occurred_at"] for wire in wires)
    assert any("-03:00" in wire["occurred_at"] for wire in wires)
    assert sum(wire["occurred_at"].endswith("Z") for wire in wires) / len(wires) > 0.8
    assert any(wire.get("channel") == "app" for wire in wires)
    assert any("device_id" in wire for wire in wires) and any("ip" in wire for wire in wires)
    signals = [wire["risk_signals"] for wire in wires if "risk_signals" in wire]
    assert signals and all(
        isinstance(value, float) for entry in signals for value in entry.values()
    )
    splits = [wire["splits"] for wire in wires if "splits" in wire]
    assert splits
    for split in splits:
        assert sum(part["bps"] for part in split) == 10_000


def test_decoding_gives_payments_and_the_expected_dead_letters(
    log: tuple[list[LogLine], GenerateStats],
) -> None:
    lines, _ = log
    reasons: Counter[str] = Counter()
    for line in lines:
        result = _decode(line.raw)
        if line.kind in VALID_KINDS or line.kind == "duplicate" or line.kind in PIPELINE_FAULTS:
            assert isinstance(result, Payment), (line.kind, result)
        else:
            assert isinstance(result, DeadLetter), (line.kind, line.raw[:200])
            assert result.reason == FAULT_REASONS[line.kind] == line.reason, (
                line.kind,
                result.detail,
            )
            reasons[result.reason] += 1
    assert set(reasons) == {
        FAULT_REASONS[kind] for kind in FAULT_REASONS if kind not in PIPELINE_FAULTS
    }


def test_event_time_advances_with_faults_behind_the_log_clock(
    log: tuple[list[LogLine], GenerateStats],
) -> None:
    """Measured as the pipeline will: against the log clock of `centflow.ingest.replay`."""
    lines, stats = log
    clock = LogClock()
    behind_s = []
    for line in lines:
        ingest_us = clock.advance(line.raw)
        if line.kind in VALID_KINDS:
            occurred_us = parse_rfc3339_us(_wire(line.raw)["occurred_at"])
            behind_s.append((ingest_us - occurred_us) / 1e6)
    assert START_US + 7100 * 1_000_000 <= clock.now_us <= START_US + 7200 * 1_000_000
    late = [seconds for seconds in behind_s if seconds >= 2.5 * WINDOW_S]
    out_of_order = [seconds for seconds in behind_s if 1.25 <= seconds < 2.5 * WINDOW_S]
    assert len(late) == stats.late > 0
    assert len(out_of_order) == stats.out_of_order > 0
    assert min(late) >= 3 * WINDOW_S - 1 and max(late) <= 10 * WINDOW_S + 2
    assert max(out_of_order) <= 15
    assert max(seconds for seconds in behind_s if seconds < 1.25) < 1  # jitter of whole seconds


def test_without_faults_every_line_is_a_unique_valid_event() -> None:
    stats = GenerateStats()
    lines = list(generate_lines(2000, stats=stats, faults=False, **_kwargs()))
    assert {line.kind for line in lines} <= set(VALID_KINDS)
    assert stats.duplicates == stats.malformed_total == stats.late == stats.out_of_order == 0
    results = [_decode(line.raw) for line in lines]
    payments = [result for result in results if isinstance(result, Payment)]
    assert len(payments) == len({payment.event_id for payment in payments}) == 2000
    clock = LogClock()
    for line in lines:  # in order, up to the jitter of whole-second timestamps
        before_us = clock.now_us
        clock.advance(line.raw)
        assert parse_rfc3339_us(_wire(line.raw)["occurred_at"]) > before_us - 1_000_000


def test_write_log_plain_and_gzip_round_trip(tmp_path: Path) -> None:
    expected = list(generate_events(1200, **_kwargs()))
    for name in ("log.jsonl", "log.jsonl.gz"):
        path = tmp_path / "out" / name
        stats = write_log(path, 1200, **_kwargs())
        assert stats.events == 1200
        assert [raw for _, _, raw in iter_lines(path)] == expected
        data = path.read_bytes()
        text = gzip.decompress(data) if name.endswith(".gz") else data
        assert text == b"\n".join(expected) + b"\n"
        assert not list(path.parent.glob(".*partial"))
    first = (tmp_path / "out" / "log.jsonl.gz").read_bytes()
    write_log(tmp_path / "out" / "log.jsonl.gz", 1200, **_kwargs())
    assert (
        tmp_path / "out" / "log.jsonl.gz"
    ).read_bytes() == first  # no time or name in the header


def test_oversize_line_exceeds_the_message_limit(log: tuple[list[LogLine], GenerateStats]) -> None:
    lines, _ = log
    oversize = [line for line in lines if line.kind == "oversize"]
    assert len(oversize) == 1 and len(oversize[0].raw) > MESSAGE_BYTES_MAX
    assert all(len(line.raw) <= MESSAGE_BYTES_MAX for line in lines if line.kind != "oversize")


def test_bad_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        generate_events(-1, **_kwargs())
    with pytest.raises(ConfigError):
        generate_events(10, **_kwargs(duration_s=0))
    assert list(generate_events(0, **_kwargs())) == []


def test_command_line_writes_the_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "small.jsonl.gz"
    assert main([str(path), "--events", "300", "--seed", "7"]) == 0
    assert [raw for _, _, raw in iter_lines(path)] == list(generate_events(300, **_kwargs()))
    assert '"events": 300' in capsys.readouterr().err


def test_shipped_sample_is_what_the_documented_command_generates() -> None:
    """replay_data/README.md: `python -m centflow.generate.logs replay_data/sample.jsonl.gz --events 5000
    --seed 7 --start 2026-11-02T09:00:00Z --duration-s 7200 --window-hint-s 60`."""
    shipped = [raw for _, _, raw in iter_lines(SAMPLE)]
    assert shipped == list(generate_events(COUNT, **_kwargs()))


def test_shipped_fx_inputs_are_what_the_documented_command_writes(tmp_path: Path) -> None:
    """replay_data/README.md: the same command with ``--fx-rates
    replay_data/sample.fx-rates.jsonl.gz --payee-directory replay_data/sample.payees.jsonl``."""
    from centflow.generate.logs import write_fx_rates, write_payee_directory

    rates, payees = tmp_path / "rates.jsonl.gz", tmp_path / "payees.jsonl"
    write_fx_rates(rates, seed=7, start_us=START_US, duration_s=7200)
    write_payee_directory(payees, seed=7, events=COUNT)
    shipped = SAMPLE.parent
    assert gzip.decompress(rates.read_bytes()) == gzip.decompress(
        (shipped / "sample.fx-rates.jsonl.gz").read_bytes()
    )
    assert payees.read_bytes() == (shipped / "sample.payees.jsonl").read_bytes()


# SHA-256 of generate_events(...) lines, each followed by "\n", as the generator wrote them
# before scenarios, diurnal pacing and FX rates were added: they must not change a default log.
DEFAULT_OUTPUT_SHA256 = {
    (7, 5000, True): "6f68c47c803e18922991026330f285a355685d2a752a22c9b0426d5562f6ff61",
    (1, 3000, True): "b6cccfe803823d6e7180e7094bf0b1a08588598d90f4884a88cd1c106c74b1da",
    (123, 3000, False): "055e169d2c160062bdd5d454741b92362ccc1c16abba46ee89d1f155176b6d22",
    (42, 20000, True): "912c213c09685b44625a761b59f1000f847545f1b9681249a8689829ffef99f8",
    (0, 2500, False): "0f8e79829dbee62ed72ec96f90af7b804e808c34541907978206c2883ec8eea1",
}


@pytest.mark.parametrize(("seed", "count", "faults"), sorted(DEFAULT_OUTPUT_SHA256))
def test_default_output_is_unchanged(seed: int, count: int, faults: bool) -> None:
    digest = hashlib.sha256()
    arguments = _kwargs(seed=seed, faults=faults)
    for raw in generate_events(count, **arguments):
        digest.update(raw + b"\n")
    assert digest.hexdigest() == DEFAULT_OUTPUT_SHA256[(seed, count, faults)]
    explicit = generate_events(count, scenarios=(), diurnal=False, **arguments)
    assert (
        hashlib.sha256(b"".join(raw + b"\n" for raw in explicit)).hexdigest()
        == (DEFAULT_OUTPUT_SHA256[(seed, count, faults)])
    )
