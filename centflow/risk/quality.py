"""Risk quality: how well the pipeline's scores and decisions separate fraud from the rest.

Pure functions of arrays (NumPy only), exact where the definition is a count,
used by ``make bench-risk`` (`centflow.ops.bench_risk`). Nothing here reads a
file, a clock or a random source.

**Populations.** A *fraud* event is one the generator's labels file names
(``<log>.labels.jsonl``: event id, scenario, episode); a *legitimate* event is
an unlabelled ``payment``. Unlabelled refunds and chargebacks are neither: a
chargeback is a label itself, and reversals are not scored (score 0, they
follow their payment). Every scenario is measured on its own fraud events plus
all legitimate payments; ``all`` pools every scenario. The fraud events of
``refund-abuse`` are refunds, which the pipeline scores 0 by design, so
``all payments`` pools only the labelled payments (`quality_table`).

**Definitions** (`fraud` is a boolean array, `scores` floats, a higher score
meaning more suspect; each returns NaN when its population lacks a class):

- `roc_auc`: the probability that a random fraud event scores above a random
  legitimate one, ties counted as half (the Mann-Whitney U statistic over
  ``P * N``). Computed from integer counts per distinct score, one division
  at the end.
- `average_precision`: the step-wise area under the precision-recall curve, as
  scikit-learn's ``average_precision_score`` defines it:
  ``sum_k (R_k - R_{k-1}) * P_k`` over the distinct scores ``t_k`` taken as
  thresholds in descending order (flagging ``score >= t_k``), which equals the
  mean, over fraud events, of the precision at the threshold of each one's
  own score. No interpolation.
- `recall_at_fpr`: the largest recall of any threshold ``t`` among the
  observed scores (flagging every event with ``score >= t``: ties are flagged
  together) whose false-positive rate is at most the cap; 0 when even the
  highest score flags too many legitimate events (the threshold above every
  score flags nothing). The cap is read as the decimal it prints as (0.001 is
  exactly 1/1000), and compared in integers.
- `false_decline_rate`: the share of legitimate events decided ``decline``.
- `episodes_stopped`: an episode (a card-testing burst, for example: the
  events of one attack as the labels file numbers them) is *stopped* if any of
  its first `attempts_max` events, in event order, was decided ``review`` or
  ``decline``. Returns (stopped, episodes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from centflow.errors import invariant

FPR_MAX = 0.001  # recall is reported at a false-positive rate of 0.1 %
ATTEMPTS_MAX = 20  # an episode must be stopped within its first 20 events
FLAGGED = ("review", "decline")
LEGITIMATE = ""  # the scenario of an unlabelled event
ALL = "all"
ALL_PAYMENTS = "all payments"


def _classes(scores: np.ndarray, fraud: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores in descending order, with the fraud and legitimate events at each.

    >>> _classes(np.array([0.2, 0.9, 0.2]), np.array([True, False, False]))
    (array([0.9, 0.2]), array([0, 1]), array([1, 1]))
    """
    invariant(
        scores.shape == fraud.shape, "one label per score: %s vs %s", scores.shape, fraud.shape
    )
    invariant(not np.isnan(scores).any(), "a score is NaN")
    values, inverse = np.unique(-scores, return_inverse=True)  # ascending -score: descending score
    positives = np.bincount(inverse, weights=fraud, minlength=len(values)).astype(np.int64)
    totals = np.bincount(inverse, minlength=len(values)).astype(np.int64)
    invariant(int(totals.sum()) == len(scores), "every event is counted once")
    return -values, positives, totals - positives


def _arrays(
    scores: Sequence[float] | np.ndarray, fraud: Sequence[bool] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(scores, np.float64).reshape(-1), np.asarray(fraud, np.bool_).reshape(-1)


def roc_auc(scores: Sequence[float] | np.ndarray, fraud: Sequence[bool] | np.ndarray) -> float:
    """ROC AUC, ties counted as half (see the module docstring).

    >>> roc_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True])
    0.75
    >>> roc_auc([0.5, 0.5, 0.5], [True, False, False])
    0.5
    """
    _, positives, negatives = _classes(*_arrays(scores, fraud))
    fraud_total, legitimate_total = int(positives.sum()), int(negatives.sum())
    if not fraud_total or not legitimate_total:
        return math.nan
    # Legitimate events strictly below each distinct score (scores descend).
    below = legitimate_total - np.cumsum(negatives)
    twice_u = int((positives * (2 * below + negatives)).sum())
    invariant(0 <= twice_u <= 2 * fraud_total * legitimate_total, "U is out of range: %s", twice_u)
    return twice_u / (2 * fraud_total * legitimate_total)


def average_precision(
    scores: Sequence[float] | np.ndarray, fraud: Sequence[bool] | np.ndarray
) -> float:
    """Step-wise average precision, as scikit-learn's (see the module docstring).

    >>> round(average_precision([0.1, 0.4, 0.35, 0.8], [False, False, True, True]), 6)
    0.833333
    >>> average_precision([0.3, 0.3], [True, False])
    0.5
    """
    _, positives, negatives = _classes(*_arrays(scores, fraud))
    fraud_total = int(positives.sum())
    if not fraud_total:
        return math.nan
    true_flagged = np.cumsum(positives)
    flagged = true_flagged + np.cumsum(negatives)
    invariant(bool((flagged > 0).all()), "every threshold flags its own events")
    precision = true_flagged / flagged
    result = float((positives * precision).sum() / fraud_total)
    invariant(0.0 <= result <= 1.0 + 1e-12, "average precision out of range: %s", result)
    return min(result, 1.0)


def recall_at_fpr(
    scores: Sequence[float] | np.ndarray,
    fraud: Sequence[bool] | np.ndarray,
    fpr_max: float = FPR_MAX,
) -> float:
    """The largest recall with a false-positive rate at most `fpr_max` (module docstring).

    >>> recall_at_fpr([0.9, 0.8, 0.7, 0.1], [True, False, True, False], fpr_max=0.5)
    1.0
    >>> recall_at_fpr([0.9, 0.8, 0.7, 0.1], [True, False, True, False], fpr_max=0.0)
    0.5
    >>> recall_at_fpr([0.9, 0.9, 0.1], [True, False, False], fpr_max=0.0)
    0.0
    """
    invariant(0.0 <= fpr_max <= 1.0, "the false-positive cap is a rate: %s", fpr_max)
    _, positives, negatives = _classes(*_arrays(scores, fraud))
    fraud_total, legitimate_total = int(positives.sum()), int(negatives.sum())
    if not fraud_total or not legitimate_total:
        return math.nan
    cap = Fraction(repr(fpr_max))
    false_flagged = np.cumsum(negatives)
    allowed = false_flagged * cap.denominator <= cap.numerator * legitimate_total
    # False positives only grow as the threshold falls: the allowed thresholds are a prefix.
    count = int(allowed.sum())
    invariant(bool(allowed[:count].all()), "the allowed thresholds are a prefix")
    return int(np.cumsum(positives)[count - 1]) / fraud_total if count else 0.0


def false_decline_rate(
    decisions: Sequence[str] | np.ndarray, fraud: Sequence[bool] | np.ndarray
) -> float:
    """The share of legitimate events (``fraud`` false) decided ``decline``.

    >>> false_decline_rate(["decline", "approve", "review", "decline"], [True, False, False, False])
    0.3333333333333333
    """
    decided = np.asarray(decisions, object).reshape(-1)
    legitimate = ~np.asarray(fraud, np.bool_).reshape(-1)
    invariant(decided.shape == legitimate.shape, "one label per decision")
    total = int(legitimate.sum())
    if not total:
        return math.nan
    return int((decided[legitimate] == "decline").sum()) / total


def episodes_stopped(
    episodes: Sequence[str] | np.ndarray,
    order: Sequence[int] | np.ndarray,
    decisions: Sequence[str] | np.ndarray,
    attempts_max: int = ATTEMPTS_MAX,
) -> tuple[int, int]:
    """(episodes stopped within their first `attempts_max` events, episodes).

    `episodes` names each event's episode, `order` its place in event order
    (any integers that sort the events of one episode), `decisions` its decision.

    >>> episodes_stopped(["a", "a", "b", "b"], [2, 1, 1, 2], ["review", "approve", "approve", "decline"], attempts_max=1)
    (0, 2)
    >>> episodes_stopped(["a", "a", "b", "b"], [2, 1, 1, 2], ["review", "approve", "approve", "decline"], attempts_max=2)
    (2, 2)
    """
    invariant(attempts_max >= 1, "an episode needs at least one attempt to stop it")
    names = np.asarray(episodes, object).reshape(-1)
    ranks = np.asarray(order, np.int64).reshape(-1)
    decided = np.asarray(decisions, object).reshape(-1)
    invariant(names.shape == ranks.shape == decided.shape, "one episode and order per decision")
    if not len(names):
        return 0, 0
    _, episode_index = np.unique(names, return_inverse=True)
    rows = np.lexsort((ranks, episode_index))  # by episode, then event order
    group = episode_index[rows]
    first = np.r_[True, group[1:] != group[:-1]]  # the first event of each episode
    number = np.cumsum(first) - 1  # the episode of each sorted row, 0, 1, ...
    starts = np.flatnonzero(first)
    position = np.arange(len(rows)) - starts[number]  # 0 for each episode's first event
    flagged = np.isin(decided[rows], FLAGGED) & (position < attempts_max)
    stopped = np.zeros(len(starts), np.bool_)
    np.logical_or.at(stopped, number, flagged)
    invariant(len(starts) == int(episode_index.max()) + 1, "one start per episode")
    return int(stopped.sum()), len(starts)


@dataclass(frozen=True)
class Outcomes:
    """One row per event a run wrote (any type), with its label: parallel arrays.

    `scenario` is `LEGITIMATE` (``""``) for an unlabelled event; `episode`
    names the attack episode of a labelled one (unique across everything
    pooled: include the seed), ``""`` otherwise; `order` sorts the events of
    one episode in event order.
    """

    event_type: np.ndarray  # "payment" | "refund" | "chargeback"
    scenario: np.ndarray
    episode: np.ndarray
    order: np.ndarray  # int64
    score: np.ndarray  # float64
    decision: np.ndarray  # "approve" | "review" | "decline"

    def __post_init__(self) -> None:
        sizes = {len(column) for column in vars(self).values()}
        invariant(len(sizes) <= 1, "outcome columns differ in length: %s", sizes)

    def __len__(self) -> int:
        return len(self.score)

    @classmethod
    def joined(cls, parts: Sequence[Outcomes]) -> Outcomes:
        """The rows of several runs as one (their episodes must already be distinct)."""
        invariant(bool(parts), "nothing to join")
        joined = cls(
            event_type=np.concatenate([part.event_type for part in parts]),
            scenario=np.concatenate([part.scenario for part in parts]),
            episode=np.concatenate([part.episode for part in parts]),
            order=np.concatenate([part.order for part in parts]),
            score=np.concatenate([part.score for part in parts]),
            decision=np.concatenate([part.decision for part in parts]),
        )
        invariant(len(joined) == sum(map(len, parts)), "every row is joined once")
        return joined


@dataclass(frozen=True)
class QualityRow:
    """The figures of one population: one scenario's fraud plus every legitimate payment."""

    population: str
    fraud: int
    legitimate: int
    roc_auc: float
    average_precision: float
    recall_at_fpr: float
    fraud_flagged: float  # share of fraud events decided review or decline
    false_decline_rate: float
    legitimate_review_rate: float
    episodes: int
    episodes_stopped: int


def quality_row(
    population: str,
    outcomes: Outcomes,
    fraud_rows: np.ndarray,
    fpr_max: float = FPR_MAX,
    attempts_max: int = ATTEMPTS_MAX,
) -> QualityRow:
    """The figures of `fraud_rows` (a mask over `outcomes`) against every legitimate payment."""
    legitimate = (outcomes.scenario == LEGITIMATE) & (outcomes.event_type == "payment")
    invariant(not bool((fraud_rows & legitimate).any()), "an event is fraud and legitimate")
    chosen = fraud_rows | legitimate
    scores, decisions = outcomes.score[chosen], outcomes.decision[chosen]
    fraud = fraud_rows[chosen]
    fraud_total, legitimate_total = int(fraud.sum()), int(legitimate.sum())
    stopped, episodes = episodes_stopped(
        outcomes.episode[fraud_rows],
        outcomes.order[fraud_rows],
        outcomes.decision[fraud_rows],
        attempts_max,
    )
    legitimate_decisions = outcomes.decision[legitimate]
    return QualityRow(
        population,
        fraud_total,
        legitimate_total,
        roc_auc(scores, fraud),
        average_precision(scores, fraud),
        recall_at_fpr(scores, fraud, fpr_max),
        float(np.isin(decisions[fraud], FLAGGED).mean()) if fraud_total else math.nan,
        false_decline_rate(decisions, fraud),
        float((legitimate_decisions == "review").mean()) if legitimate_total else math.nan,
        episodes,
        stopped,
    )


def quality_table(
    outcomes: Outcomes,
    scenarios: Sequence[str],
    fpr_max: float = FPR_MAX,
    attempts_max: int = ATTEMPTS_MAX,
) -> list[QualityRow]:
    """One row per scenario, then `ALL` (every labelled event) and `ALL_PAYMENTS`
    (every labelled payment), each against every legitimate payment."""
    labelled = outcomes.scenario != LEGITIMATE
    unknown = set(np.unique(outcomes.scenario[labelled]).tolist()) - set(scenarios)
    invariant(not unknown, "labels name scenarios not asked for: %s", sorted(unknown))
    rows = [
        quality_row(name, outcomes, outcomes.scenario == name, fpr_max, attempts_max)
        for name in scenarios
    ]
    rows.append(quality_row(ALL, outcomes, labelled, fpr_max, attempts_max))
    payments = labelled & (outcomes.event_type == "payment")
    rows.append(quality_row(ALL_PAYMENTS, outcomes, payments, fpr_max, attempts_max))
    invariant(
        rows[-2].fraud == sum(row.fraud for row in rows[:-2]), "scenarios partition the fraud"
    )
    return rows
