"""Fraud scenarios, diurnal pacing, the FX-rate stream and the payee directory of the generator."""

from __future__ import annotations

import gzip
import json
import statistics
from collections import Counter, defaultdict
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import msgspec
import pytest
from jsonschema import Draft202012Validator

from centflow.errors import ConfigError
from centflow.generate.logs import (
    _CURRENCIES,
    SCENARIOS,
    GenerateStats,
    LogLine,
    ScenarioLabel,
    generate_events,
    generate_lines,
    main,
    write_fx_rates,
    write_log,
    write_payee_directory,
)
from centflow.ingest.admission import AdmissionShard
from centflow.ingest.decode import decode_message
from centflow.ingest.events import Payment
from centflow.ingest.replay import iter_lines
from centflow.ingest.timeparse import parse_rfc3339_us
from tests.factories import envelope

START_US = parse_rfc3339_us("2026-11-02T09:00:00Z")
COUNT = 70_000  # two episodes of each scenario
DURATION_S = 8 * 3600  # about 2.4 lines a second: bursts fit in a minute or two
FORMAT_CHECKER = Draft202012Validator.FORMAT_CHECKER
SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
UNITS_PER_USD = {code: spec[1] for code, spec in _CURRENCIES.items()}
VALID = ("payment", "refund", "chargeback")


def _kwargs(**overrides: Any) -> dict[str, Any]:
    return {"seed": 11, "start_us": START_US, "duration_s": DURATION_S} | overrides


class Log:
    """A generated log with scenarios, its wire objects, and its labels by episode."""

    def __init__(self, lines: list[LogLine], stats: GenerateStats) -> None:
        self.lines = lines
        self.stats = stats
        self.wires: list[dict[str, Any] | None] = []  # the valid lines' objects, by position
        self.position: dict[str, int] = {}
        for index, line in enumerate(lines):
            wire = msgspec.json.decode(line.raw) if line.kind in VALID else None
            self.wires.append(wire)
            if wire is not None:
                self.position[wire["event_id"]] = index
        self.labelled = {label.event_id: label for label in stats.labels}
        self.episodes: defaultdict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
        for label in stats.labels:
            wire = self.wires[self.position[label.event_id]]
            assert wire is not None
            self.episodes[(label.scenario, label.episode)].append(wire)

    def of(self, scenario: str) -> list[list[dict[str, Any]]]:
        return [wires for (name, _), wires in sorted(self.episodes.items()) if name == scenario]

    def before(self, wire: dict[str, Any]) -> list[dict[str, Any]]:
        """The ordinary (unlabelled) valid events earlier in the log."""
        return [
            other
            for other in self.wires[: self.position[wire["event_id"]]]
            if other is not None and other["event_id"] not in self.labelled
        ]


@pytest.fixture(scope="module")
def log() -> Log:
    stats = GenerateStats()
    lines = list(generate_lines(COUNT, scenarios=SCENARIOS, stats=stats, **_kwargs()))
    return Log(lines, stats)


def _usd(wire: dict[str, Any]) -> float:
    return float(wire["amount"]) / UNITS_PER_USD[wire["currency"]]


def _seconds(wire: dict[str, Any]) -> float:
    return parse_rfc3339_us(wire["occurred_at"]) / 1e6


def _span_s(wires: list[dict[str, Any]]) -> float:
    times = [_seconds(wire) for wire in wires]
    return max(times) - min(times)


def test_every_scenario_has_episodes_and_labels_are_counted(log: Log) -> None:
    stats = log.stats
    assert len(log.lines) == stats.events == COUNT
    assert stats.episodes == dict.fromkeys(SCENARIOS, 2)
    assert {scenario for scenario, _ in log.episodes} == set(SCENARIOS)
    assert sum(stats.scenario_events.values()) == len(stats.labels) == len(log.labelled)
    assert Counter(label.scenario for label in stats.labels) == stats.scenario_events
    assert len({episode for _, episode in log.episodes}) == len(log.episodes) == 8
    assert stats.valid + stats.duplicates + stats.malformed_total == COUNT
    assert stats.fraud_chargebacks > 0
    assert len(stats.labels) < COUNT * 0.01  # a few episodes mixed into ordinary traffic
    assert "labels" not in stats.as_dict() and stats.as_dict()["episodes"] == stats.episodes


def test_labels_are_exactly_the_scenario_lines(log: Log) -> None:
    """Each label names one valid line; the lines only scenarios make (payers and payees
    outside the log's pools) are all labelled, but the chargebacks disputing them later."""
    stats = log.stats
    kinds = Counter(log.lines[log.position[label.event_id]].kind for label in stats.labels)
    assert set(kinds) == {"payment", "refund"}
    payer_pool = max(10, round(COUNT * 4000 / 5000))
    unlabelled_outsiders = 0
    for wire in log.wires:
        if wire is None or wire["type"] != "payment":
            continue
        payer = int(wire["payer_id"].rpartition("-")[2])
        payee = int(wire["payee_id"].rpartition("-")[2])
        if payer > payer_pool or payee > stats.payees:
            unlabelled_outsiders += wire["event_id"] not in log.labelled
    assert unlabelled_outsiders == 0
    chargebacks_of_fraud = [
        wire
        for wire in log.wires
        if wire is not None
        and wire["type"] == "chargeback"
        and wire["ref_event_id"] in log.labelled
    ]
    assert len(chargebacks_of_fraud) >= stats.fraud_chargebacks
    assert not any(wire["event_id"] in log.labelled for wire in chargebacks_of_fraud)


def test_scenario_lines_decode_and_pass_admission(log: Log) -> None:
    events = []
    for label in log.stats.labels:
        raw = log.lines[log.position[label.event_id]].raw
        assert isinstance(decode_message(raw, "t:1", 2**62, 0), Payment)
    for line in log.lines:
        result = decode_message(line.raw, "t:1", 2**62, 0)
        if isinstance(result, Payment):
            events.append(result)
    shards: dict[str, AdmissionShard] = {}  # routed by payee, as the pipeline does
    by_payee: defaultdict[str, list[Payment]] = defaultdict(list)
    for event in events:
        by_payee[event.payee_id].append(event)
    admitted: set[str] = set()
    for payee_id, payee_events in by_payee.items():
        shard = shards.setdefault(payee_id, AdmissionShard(["p0"], 2**62))
        accepted, _ = shard.admit([envelope("p0", 2**62 + 1, payee_events)])
        admitted.update(accepted["event_id"].to_pylist())
    assert set(log.labelled) <= admitted
    fraud_chargebacks = {
        wire["event_id"]
        for wire in log.wires
        if wire is not None
        and wire["type"] == "chargeback"
        and wire["ref_event_id"] in log.labelled
    }
    assert fraud_chargebacks <= admitted


def test_card_testing_is_a_burst_of_tiny_payments_from_fresh_cards(log: Log) -> None:
    for wires in log.of("card-testing"):
        assert len(wires) >= 20
        assert {wire["type"] for wire in wires} == {"payment"}
        assert {wire["rail"] for wire in wires} == {"card"}
        assert len({wire["payee_id"] for wire in wires}) == 1
        assert len({wire["payer_id"] for wire in wires}) == len(wires)
        assert len({wire["device_id"] for wire in wires}) == len(wires)
        assert all(0 < _usd(wire) <= 1.0 for wire in wires)
        assert _span_s(wires) <= 120
        earlier = log.before(wires[0])
        seen_payers = {wire["payer_id"] for wire in earlier}
        seen_devices = {wire.get("device_id") for wire in earlier}
        assert not seen_payers & {wire["payer_id"] for wire in wires}
        assert not seen_devices & {wire["device_id"] for wire in wires}
        scores = [wire["risk_signals"]["bin_score"] for wire in wires if "risk_signals" in wire]
        assert len(scores) >= len(wires) / 2 and min(scores) >= 0.6


def test_account_takeover_is_an_established_payer_gone_strange(log: Log) -> None:
    for wires in log.of("account-takeover"):
        assert 3 <= len(wires) <= 8
        assert {wire["type"] for wire in wires} == {"payment"}
        assert len({wire["payer_id"] for wire in wires}) == 1
        assert len({wire["device_id"] for wire in wires}) == 1
        assert len({wire["country"] for wire in wires}) == 1
        payer_id = wires[0]["payer_id"]
        earlier = log.before(wires[0])
        history = [wire for wire in earlier if wire["payer_id"] == payer_id]
        assert history and all(wire["type"] == "payment" for wire in history[:1])
        usual = Counter(wire["country"] for wire in history).most_common(1)[0][0]
        assert wires[0]["country"] != usual
        assert wires[0]["country"] not in {wire["country"] for wire in history}
        assert wires[0]["device_id"] not in {wire.get("device_id") for wire in earlier}
        assert not {wire["payee_id"] for wire in wires} & {wire["payee_id"] for wire in earlier}
        median = statistics.median(_usd(wire) for wire in history)
        for wire in wires:
            assert _usd(wire) >= 250 and _usd(wire) > median


def test_velocity_abuse_is_one_payer_paying_many_payees_quickly(log: Log) -> None:
    for wires in log.of("velocity-abuse"):
        assert len(wires) >= 15
        assert len({wire["payer_id"] for wire in wires}) == 1
        assert len({wire["payee_id"] for wire in wires}) == len(wires)
        assert _span_s(wires) <= 10 * 60
        payer_id = wires[0]["payer_id"]
        assert any(wire["payer_id"] == payer_id for wire in log.before(wires[0]))


def test_refund_abuse_refunds_most_recent_payments_validly(log: Log) -> None:
    reversed_amounts: defaultdict[str, Decimal] = defaultdict(Decimal)
    for wire in log.wires:  # every reversal in the log stays within its payment
        if wire is not None and wire["type"] != "payment":
            reversed_amounts[wire["ref_event_id"]] += Decimal(wire["amount"])
            payment = log.wires[log.position[wire["ref_event_id"]]]
            assert payment is not None
            assert log.position[wire["ref_event_id"]] < log.position[wire["event_id"]]
            assert reversed_amounts[wire["ref_event_id"]] <= Decimal(payment["amount"])
    for wires in log.of("refund-abuse"):
        assert len(wires) >= 3
        assert {wire["type"] for wire in wires} == {"refund"}
        payee_ids = {wire["payee_id"] for wire in wires}
        assert len(payee_ids) == 1
        references = [log.position[wire["ref_event_id"]] for wire in wires]
        assert len(set(references)) == len(wires)
        for wire in wires:
            payment = log.wires[log.position[wire["ref_event_id"]]]
            assert payment is not None and payment["type"] == "payment"
            for name in ("payer_id", "payee_id", "currency"):
                assert wire[name] == payment[name]
            assert _seconds(wire) > _seconds(payment)
        first, last = min(references), max(log.position[wire["event_id"]] for wire in wires)
        payments = [
            wire
            for wire in log.wires[first : last + 1]
            if wire is not None and wire["type"] == "payment" and wire["payee_id"] in payee_ids
        ]
        assert len(wires) / len(payments) >= 0.5


def test_scenarios_are_deterministic_and_seeded() -> None:
    def run(seed: int) -> tuple[list[bytes], list[ScenarioLabel]]:
        stats = GenerateStats()
        lines = generate_lines(
            5000, scenarios=("refund-abuse", "card-testing"), stats=stats, **_kwargs(seed=seed)
        )
        return [line.raw for line in lines], stats.labels

    first, second, other = run(5), run(5), run(6)
    assert first == second and len(first[1]) >= 20
    assert first[0] != other[0]
    assert (
        list(generate_events(5000, scenarios=("card-testing", "refund-abuse"), **_kwargs(seed=5)))
        == first[0]
    )


def test_small_logs_and_bad_names() -> None:
    stats = GenerateStats()
    lines = list(generate_lines(1999, scenarios=SCENARIOS, stats=stats, **_kwargs()))
    assert len(lines) == 1999 and stats.labels == [] and stats.episodes == {}
    with pytest.raises(ConfigError):
        generate_events(100, scenarios=("phishing",), **_kwargs())


def test_write_log_writes_the_labels_beside_the_log(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl.gz"
    stats = write_log(path, 4000, faults=False, scenarios=("velocity-abuse",), **_kwargs())
    labels = tmp_path / "log.jsonl.gz.labels.jsonl"
    written = [json.loads(line) for line in labels.read_text().splitlines()]
    assert written == [label._asdict() for label in stats.labels] and written
    assert {entry["scenario"] for entry in written} == {"velocity-abuse"}
    ids = {json.loads(raw)["event_id"] for _, _, raw in iter_lines(path)}
    assert {entry["event_id"] for entry in written} <= ids
    custom = tmp_path / "elsewhere" / "labels.jsonl"
    write_log(
        tmp_path / "two.jsonl",
        4000,
        faults=False,
        scenarios=("velocity-abuse",),
        labels_path=custom,
        **_kwargs(),
    )
    assert custom.read_text() == labels.read_text()
    write_log(tmp_path / "plain.jsonl", 100, **_kwargs())
    assert not (tmp_path / "plain.jsonl.labels.jsonl").exists()
    assert not list(tmp_path.rglob(".*partial"))


def _per_hour(raws: list[bytes]) -> Counter[int]:
    hours: Counter[int] = Counter()
    for raw in raws:
        at_us = parse_rfc3339_us(msgspec.json.decode(raw)["occurred_at"])
        hours[at_us // 3_600_000_000 % 24] += 1
    return hours


def test_diurnal_traffic_is_heavier_by_day() -> None:
    arguments = _kwargs(start_us=parse_rfc3339_us("2026-11-02T00:00:00Z"), duration_s=2 * 86400)
    diurnal = list(generate_events(20_000, faults=False, diurnal=True, **arguments))
    flat = list(generate_events(20_000, faults=False, **arguments))
    for raws, low, high in ((diurnal, 3.0, 8.0), (flat, 0.8, 1.25)):
        hours = _per_hour(raws)
        day = sum(hours[hour] for hour in range(11, 17)) / 6
        night = sum(hours[hour] for hour in range(1, 5)) / 4
        assert low <= day / night <= high, (day, night)
    times = [parse_rfc3339_us(msgspec.json.decode(raw)["occurred_at"]) for raw in diurnal]
    assert all(later > earlier - 1_000_000 for earlier, later in pairwise(times))
    end_us = arguments["start_us"] + 2 * 86400 * 1_000_000
    assert end_us - 60_000_000 <= max(times) <= end_us


def test_diurnal_with_scenarios_keeps_bursts_short() -> None:
    stats = GenerateStats()
    lines = list(
        generate_lines(
            60_000,
            scenarios=("card-testing",),
            diurnal=True,
            stats=stats,
            **_kwargs(duration_s=6 * 3600),
        )
    )
    by_id = {
        wire["event_id"]: wire
        for wire in (msgspec.json.decode(line.raw) for line in lines if line.kind in VALID)
    }
    episodes: defaultdict[int, list[dict[str, Any]]] = defaultdict(list)
    for label in stats.labels:
        episodes[label.episode].append(by_id[label.event_id])
    assert episodes
    for wires in episodes.values():
        assert len(wires) >= 20 and _span_s(wires) <= 120


def test_fx_rates_follow_the_schema_and_stay_realistic(tmp_path: Path) -> None:
    schema = json.loads((SCHEMAS / "fx_rate.schema.json").read_text())
    validator = Draft202012Validator(schema, format_checker=FORMAT_CHECKER)
    path = tmp_path / "fx.jsonl"
    written = write_fx_rates(path, seed=3, start_us=START_US, duration_s=7200, interval_s=60)
    rates = [json.loads(line) for line in path.read_text().splitlines()]
    quotes = set(UNITS_PER_USD) - {"USD"}
    assert written == len(rates) == 121 * len(quotes)
    for rate in rates:
        errors = list(validator.iter_errors(rate))
        assert not errors, (rate, errors[0].message)
        assert rate["base"] == "USD" and rate["quote"] in quotes
        assert len(rate["rate"].partition(".")[2]) <= 12
        assert 0.95 <= float(rate["rate"]) / UNITS_PER_USD[rate["quote"]] <= 1.05
    assert rates[0]["as_of"] == "2026-11-02T09:00:00Z"
    assert rates[-1]["as_of"] == "2026-11-02T11:00:00Z"
    assert [rate["as_of"] for rate in rates] == sorted(rate["as_of"] for rate in rates)
    walks = {quote: {r["rate"] for r in rates if r["quote"] == quote} for quote in quotes}
    assert all(len(values) > 50 for values in walks.values())  # the rates move
    again = tmp_path / "fx.jsonl.gz"
    write_fx_rates(again, seed=3, start_us=START_US, duration_s=7200)
    assert gzip.decompress(again.read_bytes()) == path.read_bytes()
    write_fx_rates(again, seed=4, start_us=START_US, duration_s=7200)
    assert gzip.decompress(again.read_bytes()) != path.read_bytes()


def test_payee_directory_lists_the_logs_payees(tmp_path: Path) -> None:
    path = tmp_path / "payees.jsonl"
    stats = GenerateStats()
    wires = [
        msgspec.json.decode(line.raw)
        for line in generate_lines(5000, stats=stats, **_kwargs(seed=7))
        if line.kind == "payment"
    ]
    assert write_payee_directory(path, seed=7, events=5000) == stats.payees
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    directory = {entry["payee_id"]: entry["settlement_currency"] for entry in entries}
    assert len(directory) == len(entries) == stats.payees
    currencies: dict[str, Counter[str]] = defaultdict(Counter)
    for wire in wires:
        currencies[wire["payee_id"]][wire["currency"]] += 1
    assert set(currencies) <= set(directory)
    main_currency = {payee: counts for payee, counts in currencies.items() if counts.total() >= 8}
    assert len(main_currency) > 50
    same = sum(
        directory[payee] == counts.most_common(1)[0][0] for payee, counts in main_currency.items()
    )
    assert 0.65 <= same / len(main_currency) < 1
    others = {
        directory[payee]
        for payee, counts in main_currency.items()
        if directory[payee] != counts.most_common(1)[0][0]
    }
    assert others <= {"USD", "EUR"}
    before = path.read_bytes()
    write_payee_directory(path, seed=7, events=5000)
    assert path.read_bytes() == before


def test_command_line_writes_log_labels_rates_and_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_path = tmp_path / "log.jsonl.gz"
    argv = [
        str(log_path),
        "--events",
        "3000",
        "--seed",
        "11",
        "--scenario",
        "card-testing",
        "--scenario",
        "account-takeover",
        "--diurnal",
        "--labels",
        str(tmp_path / "labels.jsonl"),
        "--fx-rates",
        str(tmp_path / "fx.jsonl"),
        "--payee-directory",
        str(tmp_path / "payees.jsonl"),
    ]
    assert main(argv) == 0
    expected = generate_events(
        3000,
        seed=11,
        start_us=START_US,
        duration_s=7200,
        scenarios=("card-testing", "account-takeover"),
        diurnal=True,
    )
    assert [raw for _, _, raw in iter_lines(log_path)] == list(expected)
    labels = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert {label["scenario"] for label in labels} == {"card-testing", "account-takeover"}
    assert (tmp_path / "fx.jsonl").read_text().count("\n") == 121 * 6
    assert (tmp_path / "payees.jsonl").read_text().count("\n") == 120
    summary = json.loads(capsys.readouterr().err)
    assert summary["episodes"] == {"card-testing": 1, "account-takeover": 1}
