"""The signals-only stream: same seed, same bytes; every payer new, one payee; every
fraud labelled and disputed an hour later; the signals tell fraud apart."""

from __future__ import annotations

import gzip
import json

import numpy as np

from centflow.generate.signals import CHARGEBACK_DELAY_S, PAYEE, SIGNALS, write_signals_log
from centflow.ingest.timeparse import parse_rfc3339_us
from centflow.limits import MICROS_PER_SECOND
from centflow.risk.quality import roc_auc


def test_a_signals_only_log_is_seeded_anonymous_and_labelled(tmp_path):
    first = write_signals_log(tmp_path / "a.jsonl.gz", 6_000, seed=3)
    again = write_signals_log(tmp_path / "b.jsonl.gz", 6_000, seed=3)
    assert gzip.decompress(first.path.read_bytes()) == gzip.decompress(again.path.read_bytes())
    events = [json.loads(line) for line in gzip.decompress(first.path.read_bytes()).splitlines()]
    payments = [event for event in events if event["type"] == "payment"]
    chargebacks = [event for event in events if event["type"] == "chargeback"]
    labels = {json.loads(line)["event_id"] for line in first.labels_path.read_text().splitlines()}
    assert len(payments) == first.payments == 6_000 and len(labels) == first.frauds > 5
    assert len({event["payer_id"] for event in payments}) == len(payments)  # every payer new
    assert {event["payee_id"] for event in events} == {PAYEE}
    assert all(len(event["risk_signals"]) == SIGNALS for event in payments)
    times = [parse_rfc3339_us(event["occurred_at"]) for event in events]
    assert times == sorted(times)  # in event order
    by_id = {event["event_id"]: event for event in payments}
    assert {event["ref_event_id"] for event in chargebacks} == labels
    for chargeback in chargebacks:
        paid_us = parse_rfc3339_us(by_id[chargeback["ref_event_id"]]["occurred_at"])
        disputed_us = parse_rfc3339_us(chargeback["occurred_at"])
        assert disputed_us - paid_us == CHARGEBACK_DELAY_S * MICROS_PER_SECOND
    # the signals carry the label: the largest absolute signal alone ranks fraud well
    fraud = np.array([event["event_id"] in labels for event in payments])
    loudest = np.array([max(map(abs, event["risk_signals"].values())) for event in payments])
    assert roc_auc(loudest, fraud) > 0.85
