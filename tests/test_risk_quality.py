"""The risk-quality metrics (`centflow.risk.quality`) and the ``make bench-risk`` harness.

Hand-built cases pin each definition; hypothesis compares every metric with a
brute-force Python twin written from its definition (pairwise for AUC, the
mean precision at each fraud event's own score for average precision, every
threshold for recall at a false-positive cap); one small log goes through the
real pipeline by the function the bench uses.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

import duckdb
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from centflow.generate.logs import SCENARIOS
from centflow.ops.bench_risk import (
    BENCH_SEEDS,
    SECTION_TITLE,
    TUNING_SEEDS,
    BenchResult,
    main,
    markdown,
    measure_seed,
    replace_section,
)
from centflow.ops.bench_signals import measure as measure_signals
from centflow.risk.quality import (
    ALL,
    ALL_PAYMENTS,
    FLAGGED,
    Outcomes,
    average_precision,
    episodes_stopped,
    false_decline_rate,
    quality_table,
    recall_at_fpr,
    roc_auc,
)
from sinks.duckdb import DATABASE_NAME

FAST = settings(max_examples=300, deadline=None)
# Few distinct values, so that ties are common; and any float in [0, 1].
scores_tied = st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9, 0.96, 1.0])
scores_any = st.floats(0.0, 1.0, allow_nan=False)
samples = st.lists(st.tuples(st.one_of(scores_tied, scores_any), st.booleans()), max_size=40)


# -- brute-force twins, straight from the definitions


def auc_pairwise(scores: list[float], fraud: list[bool]) -> float:
    positives = [s for s, y in zip(scores, fraud, strict=True) if y]
    negatives = [s for s, y in zip(scores, fraud, strict=True) if not y]
    if not positives or not negatives:
        return math.nan
    wins = sum(Fraction(1) if p > n else Fraction(1, 2) if p == n else Fraction(0) for p in positives for n in negatives)  # fmt: skip
    return float(wins / (len(positives) * len(negatives)))


def ap_by_definition(scores: list[float], fraud: list[bool]) -> float:
    """The mean over fraud events of the precision of flagging ``score >= own score``."""
    pairs = list(zip(scores, fraud, strict=True))
    positives = [s for s, y in pairs if y]
    if not positives:
        return math.nan
    total = Fraction(0)
    for own in positives:
        flagged = [y for s, y in pairs if s >= own]
        total += Fraction(sum(flagged), len(flagged))
    return float(total / len(positives))


def recall_every_threshold(scores: list[float], fraud: list[bool], cap: float) -> float:
    pairs = list(zip(scores, fraud, strict=True))
    positives = sum(fraud)
    negatives = len(fraud) - positives
    if not positives or not negatives:
        return math.nan
    best = Fraction(0)  # the threshold above every score flags nothing
    for threshold in set(scores):
        false_flagged = sum(1 for s, y in pairs if s >= threshold and not y)
        if Fraction(false_flagged, negatives) <= Fraction(repr(cap)):
            best = max(best, Fraction(sum(1 for s, y in pairs if s >= threshold and y), positives))
    return float(best)


def stopped_by_definition(
    episodes: list[str], order: list[int], decisions: list[str], attempts: int
) -> tuple[int, int]:
    events: defaultdict[str, list[tuple[int, str]]] = defaultdict(list)
    for name, rank, decision in zip(episodes, order, decisions, strict=True):
        events[name].append((rank, decision))
    stopped = sum(
        any(decision in FLAGGED for _, decision in sorted(burst)[:attempts])
        for burst in events.values()
    )
    return stopped, len(events)


def same(left: float, right: float) -> bool:
    return (math.isnan(left) and math.isnan(right)) or left == pytest.approx(right, rel=1e-12)


# -- hand-built cases


def test_the_scikit_learn_example():
    """The example of scikit-learn's documentation: AUC 0.75, average precision 0.8333."""
    scores, fraud = [0.1, 0.4, 0.35, 0.8], [False, False, True, True]
    assert roc_auc(scores, fraud) == 0.75
    assert average_precision(scores, fraud) == pytest.approx(5 / 6, rel=1e-15)


def test_perfect_inverted_and_undefined_rankings():
    assert roc_auc([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    assert average_precision([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    assert roc_auc([0.1, 0.2, 0.9], [True, True, False]) == 0.0
    assert math.isnan(roc_auc([0.1, 0.2], [True, True]))  # no legitimate event
    assert math.isnan(roc_auc([0.1, 0.2], [False, False]))  # no fraud
    assert math.isnan(average_precision([0.1, 0.2], [False, False]))
    assert math.isnan(recall_at_fpr([0.1], [True]))
    assert math.isnan(roc_auc([], []))


def test_ties_count_as_half_and_are_flagged_together():
    # One fraud tied with one of two legitimate events, above the other: (1 + 0.5) / 2.
    assert roc_auc([0.5, 0.5, 0.1], [True, False, False]) == 0.75
    # Threshold 0.5 flags both tied events: precision 1/2 at recall 1/2; then 2/3 at 1.
    assert average_precision([0.5, 0.5, 0.1], [True, False, True]) == pytest.approx(
        0.5 * 0.5 + 0.5 * 2 / 3
    )
    # Flagging the tied fraud flags both legitimate events: over a 50 % cap, so nothing.
    assert recall_at_fpr([0.9, 0.9, 0.9], [True, False, False], fpr_max=0.5) == 0.0
    assert recall_at_fpr([0.9, 0.9, 0.9], [True, False, False], fpr_max=1.0) == 1.0


def test_recall_at_a_tenth_of_a_percent_allows_exactly_one_in_a_thousand():
    legitimate = [index / 1000 for index in range(1000)]  # the highest is 0.999
    fraud_scores = [1.0, 0.9985, 0.5]
    scores = legitimate + fraud_scores
    fraud = [False] * 1000 + [True] * 3
    # >= 0.9985 flags 1.0, 0.9985 and the legitimate 0.999: one false positive in 1000.
    assert recall_at_fpr(scores, fraud, fpr_max=0.001) == pytest.approx(2 / 3)
    assert recall_at_fpr(scores, fraud, fpr_max=0.0) == pytest.approx(1 / 3)
    assert recall_at_fpr(scores, fraud, fpr_max=0.0019) == pytest.approx(2 / 3)
    assert recall_at_fpr(scores, fraud, fpr_max=0.5) == 1.0


def test_false_declines_count_only_legitimate_declines():
    decisions = ["decline", "decline", "review", "approve", "decline"]
    fraud = [True, False, False, False, False]
    assert false_decline_rate(decisions, fraud) == 2 / 4
    assert math.isnan(false_decline_rate(["decline"], [True]))


def test_an_episode_is_stopped_only_within_its_first_attempts():
    # Burst "a": its 20th event (in event order) is held; burst "b": only its 21st is.
    decisions_a = ["approve"] * 19 + ["review"] + ["approve"] * 5
    decisions_b = ["approve"] * 20 + ["decline"] + ["approve"] * 5
    episodes = ["a"] * 25 + ["b"] * 26
    order = [*range(25), *range(26)]
    decisions = decisions_a + decisions_b
    reverse = list(reversed(range(len(episodes))))  # the input order does not matter
    assert episodes_stopped(
        [episodes[i] for i in reverse], [order[i] for i in reverse], [decisions[i] for i in reverse]
    ) == (1, 2)
    assert episodes_stopped(episodes, order, decisions, attempts_max=21) == (2, 2)
    assert episodes_stopped([], [], []) == (0, 0)


def _outcomes(rows: list[tuple[str, str, str, float, str]]) -> Outcomes:
    """(type, scenario, episode, score, decision) rows, in event order."""
    column = list(zip(*rows, strict=True))
    return Outcomes(
        event_type=np.array(column[0], object),
        scenario=np.array(column[1], object),
        episode=np.array(column[2], object),
        order=np.arange(len(rows), dtype=np.int64),
        score=np.array(column[3], np.float64),
        decision=np.array(column[4], object),
    )


def test_the_table_measures_each_scenario_against_every_legitimate_payment():
    outcomes = _outcomes(
        [
            ("payment", "", "", 0.1, "approve"),
            ("payment", "", "", 0.6, "review"),
            ("payment", "", "", 0.95, "decline"),
            ("refund", "", "", 0.0, "approve"),  # unlabelled reversal: neither class
            ("chargeback", "", "", 0.0, "approve"),
            ("payment", "card-testing", "1:card-testing:1", 0.96, "decline"),
            ("payment", "card-testing", "1:card-testing:1", 0.2, "approve"),
            ("refund", "refund-abuse", "1:refund-abuse:2", 0.0, "approve"),
        ]
    )
    rows = {row.population: row for row in quality_table(outcomes, SCENARIOS)}
    assert [*rows] == [*SCENARIOS, ALL, ALL_PAYMENTS]
    card = rows["card-testing"]
    assert (card.fraud, card.legitimate) == (2, 3)
    assert card.roc_auc == (3 + 1) / 6  # 0.96 beats all three; 0.2 beats 0.1 only
    assert card.fraud_flagged == 0.5 and card.false_decline_rate == 1 / 3
    assert card.legitimate_review_rate == 1 / 3
    assert (card.episodes_stopped, card.episodes) == (1, 1)
    assert rows["refund-abuse"].roc_auc == 0.0  # scored 0, below every legitimate payment
    assert (rows[ALL].fraud, rows[ALL].episodes) == (3, 2)
    assert (rows[ALL_PAYMENTS].fraud, rows[ALL_PAYMENTS].episodes) == (2, 1)
    assert math.isnan(rows["velocity-abuse"].roc_auc) and rows["velocity-abuse"].fraud == 0


# -- differential tests against the twins


@FAST
@given(samples)
@example([(0.5, True), (0.5, False)])
@example([(0.0, True), (1.0, False), (0.0, False)])
def test_auc_is_the_pairwise_win_rate(sample: list[tuple[float, bool]]):
    scores, fraud = [s for s, _ in sample], [y for _, y in sample]
    expected = auc_pairwise(scores, fraud)
    got = roc_auc(scores, fraud)
    assert (math.isnan(got) and math.isnan(expected)) or got == expected  # both exact


@FAST
@given(samples)
@example([(0.5, True), (0.5, False), (0.1, True)])
def test_average_precision_is_the_mean_precision_at_each_fraud_score(
    sample: list[tuple[float, bool]],
):
    scores, fraud = [s for s, _ in sample], [y for _, y in sample]
    assert same(average_precision(scores, fraud), ap_by_definition(scores, fraud))


@FAST
@given(samples, st.sampled_from([0.0, 0.001, 0.05, 0.1, 0.25, 1 / 3, 0.5, 1.0]))
def test_recall_at_fpr_is_the_best_allowed_threshold(sample: list[tuple[float, bool]], cap: float):
    scores, fraud = [s for s, _ in sample], [y for _, y in sample]
    assert same(recall_at_fpr(scores, fraud, cap), recall_every_threshold(scores, fraud, cap))


@FAST
@given(
    st.lists(
        st.tuples(
            st.sampled_from("abcd"), st.integers(0, 50), st.sampled_from(["approve", *FLAGGED])
        ),
        max_size=60,
        unique_by=lambda row: (row[0], row[1]),  # one event per place in an episode's order
    ),
    st.integers(1, 25),
)
def test_episodes_stopped_matches_its_definition(rows: list[tuple[str, int, str]], attempts: int):
    episodes, order, decisions = ([row[i] for row in rows] for i in range(3))
    assert episodes_stopped(episodes, order, decisions, attempts) == stopped_by_definition(
        episodes, order, decisions, attempts
    )


def test_a_random_scorer_gets_half_and_a_constant_one_exactly_half():
    rng = np.random.default_rng(20261207)
    fraud = rng.random(20_000) < 0.1
    scores = rng.random(20_000)
    assert abs(roc_auc(scores, fraud) - 0.5) < 0.02
    assert abs(average_precision(scores, fraud) - fraud.mean()) < 0.02  # AP ~ prevalence
    constant = np.full(20_000, 0.3)
    assert roc_auc(constant, fraud) == 0.5
    assert average_precision(constant, fraud) == pytest.approx(fraud.mean())
    assert recall_at_fpr(constant, fraud) == 0.0  # flagging any means flagging all


# -- the harness


def test_seeds_and_section_rules():
    assert not set(BENCH_SEEDS) & set(TUNING_SEEDS)
    with pytest.raises(SystemExit):
        main(["--seeds", "7", "101"])
    text = "# Benchmarks\n\n## 2026 run\nfigures\n\n## Where the time goes\nprose\n"
    once = replace_section(text, SECTION_TITLE, f"## {SECTION_TITLE}\nfirst\n")
    assert once.endswith(f"prose\n\n## {SECTION_TITLE}\nfirst\n")
    twice = replace_section(once, SECTION_TITLE, f"## {SECTION_TITLE}\nsecond\n")
    assert twice == once.replace("first", "second")


def test_one_small_log_through_the_real_pipeline(tmp_path: Path):
    """A 3000-line log of one seed, replayed by `centflow run` as the bench does:
    the numbers are sane and the counts are those of the labels and the tables."""
    result = measure_seed(BENCH_SEEDS[0], 3_000, tmp_path)
    labels = [json.loads(line) for line in result.log.labels_path.read_text().splitlines()]
    assert result.log.labels == len(labels) > 0
    assert {label["scenario"] for label in labels} == set(SCENARIOS)
    with duckdb.connect(str(tmp_path / f"seed-{BENCH_SEEDS[0]}" / "out" / DATABASE_NAME), read_only=True) as db:  # fmt: skip
        ids = {event_id for (event_id,) in db.execute("SELECT event_id FROM payments").fetchall()}
        payments = db.execute("SELECT count(*) FROM payments WHERE type = 'payment'").fetchall()[0][0]  # fmt: skip
    assert {label["event_id"] for label in labels} <= ids
    rows = {row.population: row for row in result.rows}
    labelled_payments = sum(1 for label in labels if label["scenario"] != "refund-abuse")
    assert rows[ALL].fraud == len(labels)
    assert rows[ALL_PAYMENTS].fraud + rows[ALL_PAYMENTS].legitimate == payments
    assert rows[ALL_PAYMENTS].fraud == labelled_payments
    assert rows[ALL].episodes == len({(label["scenario"], label["episode"]) for label in labels})
    for name in SCENARIOS:
        row = rows[name]
        assert row.fraud == sum(1 for label in labels if label["scenario"] == name)
        assert 0.0 <= row.roc_auc <= 1.0 and 0.0 <= row.average_precision <= 1.0
        assert 0.0 <= row.recall_at_fpr <= 1.0 and 0.0 <= row.false_decline_rate <= 1.0
    assert result.run.peak_rss_bytes > 2**20 and result.events_per_s > 0
    text = markdown(BenchResult([result], result.rows, 1.0, 3_000, 2.4), "test")
    assert text.startswith(f"## {SECTION_TITLE}\n") and "| 101 | card-testing |" in text


def test_a_stream_of_signals_alone_is_ranked_by_one_model_that_learns_every_label(
    tmp_path: Path,
):
    """30,000 payments, every payer new (so spread over every payer shard), one
    payee, only anonymised signals, each fraud disputed an hour later, replayed by
    `centflow run` as ``make bench-risk`` does. Models kept per payer shard, each
    learning from an eighth of the chargebacks, ranked this log at ROC AUC 0.62 and
    average precision 0.05; the one decision step reaches 0.93 and 0.28 (a constant
    or random scorer gets 0.5 and about the fraud share, 0.003)."""
    figures = measure_signals(7, 30_000, tmp_path)  # a tuning seed
    assert figures.row.fraud > 50
    assert figures.row.roc_auc >= 0.85
    assert figures.row.average_precision >= 0.15
    assert figures.row.legitimate_review_rate <= 0.01
