"""The decision of every event, in one step for all payers: models, rules, limits.

`RiskShard` is an `centflow.risk.shard.AsOfShard`: each event is described as
of the start of its ingestion second, so its score does not depend on arrival
order, the number of workers or a crash and resume. For each event it

1. builds the feature row: the payee and payer features that came with it
   (computed in its payee and payer shards, `centflow.risk.shard`), and the
   producer's ``risk_signals`` as they are;
2. scores the block with both models at once (`centflow.risk.model.RiskModel`)
   and applies the rules that carry what models do poorly on packed bursts
   (`RULES`): ``card_testing``, ``velocity``, ``account_takeover``;
3. combines them into one score in [0, 1] (`combined_scores`): the strongest
   rule that fired, or the supervised probability raised by the anomaly, held
   under `MODEL_CEILING` so that the models alone can send to review but only
   a named rule declines; below the review threshold a rule that does not
   fire adds by how much of it holds, without deciding; the decision is ``decline`` at
   `RiskConfig.decline_at` and above, ``review`` at `review_at` and above;
4. applies the payer's tier limits (`centflow.risk.tiers`): over a limit is at
   least ``review`` with reason ``tier_limit``, whatever the models say.

Reasons are the rules that fired and the features that pushed the score most.
Chargebacks have score 0 and, as refunds do, follow their payment: approved if it
was, ``decline`` (reason ``reference_declined``) if it was declined, since it
never moved money, and ``review`` (reason ``reference_in_review``) while it is
held. A refund of an approved payment is scored by ``refund_abuse``
(`refund_abuse_scores`: its payee refunding much of what it was just paid) and
held for review when the rule holds. Admission guarantees a reversal names its
payment's payer, so both meet
in this shard; payments not approved are remembered for the de-duplication
horizon, beyond which admission refuses the reversal anyway. A chargeback
labels the payment it references as fraud.

**Failure is never approval.** A payment whose features fail goes to
``review`` with reason ``model_error`` and is counted (`model_errors`); if
scoring a whole segment fails, every payment of it does.

**One step, one model.** The step has a single key: on a stream with no usable
payer ids (every payer new, only anonymised signals) a model per payer shard
would learn from an eighth of the chargebacks, and a dataflow has no cycle to
share what each shard learned. The costly per-payer work (the payer features)
stays in the 8 payer shards; this step's own work per event is the decision and,
off the decision path, the learning. Its state grows with the payers only by
their day's spending (`centflow.risk.tiers.Spending`).

**Epochs.** The models learn, and their parameters move, only where an epoch of
ingestion time (`EPOCH_US`) starts: every example of the epochs before it is
learned then, sorted canonically (by River, one example at a time), and the
parameters are read out of River and frozen for the epoch
(`centflow.risk.model.Frozen`). So a block of groups of one epoch is scored in
one NumPy pass, learning is off the decision path, and how the input was cut
into blocks changes nothing. Labels are late anyway; a minute more is nothing.
Approved payments (a sample, `NORMAL_SAMPLE`) teach what normal looks like; a
payment is learned as legitimate once `label_age_s` has passed without a
chargeback (never if it was declined or is in review), and as fraud when its
chargeback arrives, as long as its features are held (`HELD_MAX`, and up to
`LABEL_KEEP_FACTOR` label ages).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa

from centflow.config import RiskConfig
from centflow.errors import invariant
from centflow.ingest.columns import PAYMENT_SCHEMA, empty_batch
from centflow.limits import MICROS_PER_SECOND
from centflow.risk.held import HeldPayments
from centflow.risk.model import FRAUD, LEGITIMATE, MODEL_VERSION, NEGATIVE_SAMPLE, NORMAL, RiskModel
from centflow.risk.shard import FAILED_COLUMN, FIXED_FEATURES, AsOfShard, Group, whole_block
from centflow.risk.tiers import DAY_US, Spending, TierLimits

LOG = logging.getLogger(__name__)
HELD_MAX = 2_000_000  # payments whose features wait for their label, per shard
LABEL_KEEP_FACTOR = 4
NORMAL_SAMPLE = 4  # one approved payment in this many teaches "normal" (by event id hash)
REASONS_MAX = 3
_COLUMN = {name: index for index, name in enumerate(FIXED_FEATURES)}
_DECISION_COLUMNS = ("decision", "risk_score", "model_version", "reasons")
_DECISIONS = ("approve", "review", "decline")  # by how many thresholds a score reaches
_DECIDE_COLUMNS = (
    "type",
    "event_id",
    "payer_id",
    "ingest_us",
    "amount_micros",
    "currency",
    "ref_event_id",
)

RULES = ("card_testing", "velocity", "account_takeover")
RULE_SCORE = {"card_testing": 0.95, "velocity": 0.7, "account_takeover": 0.93}
#: A rule that does not fire still ranks an event by how much of it holds: the share
#: of its conditions met, times this (below every threshold: it orders, never decides).
PARTIAL_WEIGHT = 0.45
#: The models alone can send a payment to review, never decline it: a decline needs
#: a rule (a named pattern an analyst can check), since labels are few and late.
MODEL_CEILING = 0.85


def rule_scores(features: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """(strongest rule score per row, graded below the thresholds where none fires:
    the share of the rule's conditions met, or for ``velocity`` how near both of
    its measures are; one boolean mask per rule).

    - ``card_testing``: a payer never seen before pays a tiny amount at a payee
      that has had at least 6 new payers in the last minute, mostly tiny, and
      that minute is a surge against the payee's last 10 minutes (at least 30 %
      of them in it): many fresh cards tried at one place.
    - ``velocity``: a payer pays 8 or more payees new to it within 10 minutes, at
      4.5 times (e^1.5) its own earlier rate or more. Heavy payers that always
      pay many payees are steady, not a burst. It only sends to review.
    - ``account_takeover``: a payer with history pays from a country and a device
      much younger than the account (at most 60 % of its age, on a log scale)
      an amount ten times its usual (log10 of the amount against its mean).
    """

    def column(name: str) -> np.ndarray:
        return features[:, _COLUMN[name]]

    age = column("payer_age")
    card_testing_parts = [
        column("payer_history") == 0,
        column("tiny") > 0,
        column("payee_new_payers_1m") >= 6,
        column("payee_tiny_share_1m") >= 0.7,
        column("payee_new_payers_1m") >= 0.3 * column("payee_new_payers_10m"),
    ]
    velocity_parts = [column("payer_new_payees_10m") >= 8, column("payer_burst") >= 1.5]
    takeover_parts = [
        column("payer_history") > 0,
        age - column("country_age") >= 0.5,
        age - column("device_age") >= 0.5,
        column("payer_amount_rise") >= 1.0,
    ]
    score = np.zeros(len(features))
    masks = []
    for name, parts in zip(
        RULES, (card_testing_parts, velocity_parts, takeover_parts), strict=True
    ):
        held = np.sum(parts, axis=0)
        fired = held == len(parts)
        masks.append(fired)
        closeness = held / len(parts)
        if name == "velocity":  # how near each of its two measures is to its bound
            closeness = np.clip(column("payer_new_payees_10m") / 8, 0.0, 1.0) * np.clip(
                column("payer_burst") / 1.5, 0.0, 1.0
            )
        graded = np.where(fired, RULE_SCORE[name], PARTIAL_WEIGHT * closeness)
        score = np.maximum(score, graded)
    return score, masks


def combined_scores(
    rules: np.ndarray, fired: np.ndarray, models: np.ndarray, review_at: float
) -> np.ndarray:
    """One score in [0, 1] from the rules' grades, whether a rule fired, and the
    models' score (already under `MODEL_CEILING`).

    Where a rule fires, or either part alone reaches `review_at`, the score is the
    larger of the two: that is what decides. Below it, the two combine as
    independent evidence, a noisy-or of their shares of the threshold,
    ``review_at * (1 - (1 - models / review_at) * (1 - rules / review_at))``: it
    stays below the threshold, so no decision changes, but the models still order
    the many events a partial rule alone would grade the same (every new payer's
    tiny payment, say), and a partial rule orders those the models cannot tell apart.

    >>> combined_scores(np.array([0.18, 0.18, 0.95, 0.1]), np.array([False, False, True, False]),
    ...                 np.array([0.0, 0.2, 0.3, 0.6]), 0.5).round(3).tolist()
    [0.18, 0.308, 0.95, 0.6]
    """
    deciding = fired | (models >= review_at) | (rules >= review_at)
    below = review_at * (1.0 - (1.0 - models / review_at) * (1.0 - rules / review_at))
    score = np.where(deciding, np.maximum(rules, models), below)
    return np.clip(score, 0.0, 1.0)


#: A refund is held for review (reason ``refund_abuse``) when its payee refunded at
#: least `REFUND_ABUSE_MIN` payments in the 10 minutes before its second, at least
#: `REFUND_ABUSE_SHARE` as many as it was paid in them: a payee sending back most
#: of what it just took in (to accomplices, or laundering). A busy payee with its
#: ordinary refunds stays far below the share.
REFUND_ABUSE = "refund_abuse"
REFUND_ABUSE_MIN = 2
REFUND_ABUSE_SHARE = 0.3
REFUND_ABUSE_SCORE = 0.75


def refund_abuse_scores(features: np.ndarray) -> np.ndarray:
    """The ``refund_abuse`` score of each row (meaningful for refunds): the rule's
    score where it holds, else graded by how near both of its measures are.

    >>> rows = np.zeros((3, len(FIXED_FEATURES)))
    >>> rows[:, _COLUMN["payee_refunds_10m"]] = [3, 1, 3]
    >>> rows[:, _COLUMN["payee_refund_share_10m"]] = [0.5, 0.5, 0.1]
    >>> refund_abuse_scores(rows).round(3).tolist()
    [0.75, 0.225, 0.15]
    """
    refunds = features[:, _COLUMN["payee_refunds_10m"]]
    share = features[:, _COLUMN["payee_refund_share_10m"]]
    fired = (refunds >= REFUND_ABUSE_MIN) & (share >= REFUND_ABUSE_SHARE)
    closeness = np.clip(refunds / REFUND_ABUSE_MIN, 0.0, 1.0) * np.clip(
        share / REFUND_ABUSE_SHARE, 0.0, 1.0
    )
    return np.where(fired, REFUND_ABUSE_SCORE, PARTIAL_WEIGHT * closeness)


#: A learning example waiting for its epoch: (ingestion µs, event id, kind, feature row).
Example = tuple[int, str, int, np.ndarray]
#: The models learn, and their parameters move, only at these steps of ingestion time.
EPOCH_US = 60 * MICROS_PER_SECOND
#: Spending of payers idle this long is forgotten, checked once an hour of ingestion time.
SPENDING_SWEEP_EPOCHS = 60


class RiskShard(AsOfShard):
    """Scores and decides every event, for all payers (see the module docstring)."""

    COLUMNS = (
        "type",
        "event_id",
        "payer_id",
        "ingest_us",
        "amount_micros",
        "currency",
        "ref_event_id",
        "risk_signals",
    )

    def __init__(
        self,
        origins: list[str],
        risk: RiskConfig,
        tiers: TierLimits,
        state: tuple[Any, ...] | None = None,
        reference_keep_us: int = 7 * 86_400 * 1_000_000,
    ) -> None:
        super().__init__(origins)
        self.risk = risk
        self.tiers = tiers
        self.reference_keep_us = reference_keep_us
        #: payments not approved: event id -> (ingestion µs, decision), oldest first
        self.unapproved: dict[str, tuple[int, str]] = {}
        self.model = RiskModel()
        self.spending = Spending()
        self.held = HeldPayments()
        self.labelled: set[str] = set()
        self.examples: list[Example] = []
        self.epoch: int | None = None
        self.model_errors = 0
        #: called, when set, with the groups a call has decided before it learns (an epoch
        #: starts): they need not wait for the learning (not state: never pickled)
        self.before_learning: Callable[[list[Group]], None] | None = None
        if state is not None:
            self.restore_sequencer(state[0])
            self.model = state[1]
            self.held = HeldPayments.restore(state[2])
            self.labelled = set(state[3])
            self.model_errors = state[4]
            self.unapproved = dict(state[5])
            self.spending = Spending.restore(state[6])
            self.examples = list(state[7])
            self.epoch = state[8]
        # the parameters of the current epoch: the model learns only as an epoch starts
        self.frozen = self.model.frozen()

    # -- describing (scoring and deciding) groups, an epoch at a time

    def _describe_groups(self, groups: list[Group]) -> None:
        start = published = 0
        while start < len(groups):
            epoch = groups[start].as_of_us // EPOCH_US
            end = start + 1
            while end < len(groups) and groups[end].as_of_us // EPOCH_US == epoch:
                end += 1
            if epoch != self.epoch:
                if start > published and self.before_learning is not None:
                    self.before_learning(groups[published:start])  # out before the learning
                    published = start
                self._learn(epoch * EPOCH_US, sweep=epoch % SPENDING_SWEEP_EPOCHS == 0)
                self.frozen = self.model.frozen()
                self.epoch = epoch
            self._decide_segment(groups[start:end])
            start = end

    def _decide_segment(self, groups: list[Group]) -> None:
        """Scores for all the groups' feature rows in one pass (one epoch: one set of
        parameters), then the decisions group by group."""
        contexts = [group.context for group in groups if group.context is not None]
        invariant(len(contexts) == len(groups), "every event has its features")
        fixed: np.ndarray = np.concatenate(contexts)
        count = len(fixed)
        broken = np.isnan(fixed[:, FAILED_COLUMN])
        failed = set(np.flatnonzero(broken).tolist())
        if failed:
            fixed = fixed.copy()
            fixed[broken] = 0.0
        features = self._with_signals(fixed, groups)
        try:
            scores, contributions, masks = self._scores(features)
        except Exception:  # never approval: every payment of the segment goes to review
            LOG.exception("risk scoring failed for %d events", count)
            scores, contributions = np.ones(count), np.zeros(features.shape)
            masks = [np.zeros(count, np.bool_) for _ in RULES]
            failed = set(range(count))
        self._decide(groups, features, scores, contributions, masks, failed)

    def _with_signals(self, fixed: np.ndarray, groups: list[Group]) -> np.ndarray:
        """The fixed features, then the producer's ``risk_signals`` by name."""
        first, last = groups[0], groups[-1]
        signals = (
            first.columns["risk_signals"][first.start : last.stop]
            if all(group.columns is first.columns for group in groups)
            else [pairs for group in groups for pairs in group.rows["risk_signals"]]
        )
        if not any(signals):
            return fixed
        layout = self.model.layout
        extra: list[tuple[int, int, float]] = []
        for row, pairs in enumerate(signals):
            for name, value in pairs or ():
                column = layout.signal_column(name)
                if column is not None:
                    extra.append((row, column, value))
        # a signal an event did not send is absent (NaN), as in River's dictionaries: a
        # zero would be a value, which the scaler reads as far from the mean, and whether
        # a row got one would depend on the other events of its segment
        full = np.full((len(fixed), len(layout.names)), np.nan)
        full[:, : fixed.shape[1]] = fixed
        for row, column, value in extra:
            full[row, column] = value
        return full

    def _scores(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """(score in [0, 1], per-feature contributions, rule masks) of feature rows."""
        supervised, anomaly, contributions = self.frozen.score(features)
        rules, masks = rule_scores(features)
        models = MODEL_CEILING * (1.0 - (1.0 - supervised) * (1.0 - 0.5 * anomaly))
        score = combined_scores(rules, np.any(masks, axis=0), models, self.risk.review_at)
        return score, contributions, masks

    def _decide(
        self,
        groups: list[Group],
        features: np.ndarray,
        scores: np.ndarray,
        contributions: np.ndarray,
        masks: list[np.ndarray],
        failed: set[int],
    ) -> None:
        """Decisions, scores and reasons of a segment's groups (`Group.payload`), group
        by group: each group's payments, then its reversals (which may follow a payment
        of the same group); what a payment spends counts from the next group on. The
        thresholds and the reason parts are taken for the whole segment at once."""
        count = len(features)
        review_at, decline_at = self.risk.review_at, self.risk.decline_at
        fired = np.any(masks, axis=0) if masks else np.zeros(count, np.bool_)
        level = (scores >= review_at).astype(np.int8) + (scores >= decline_at)
        flagged = (fired | (level > 0)).tolist()
        levels = level.tolist()
        score_list = scores.tolist()
        refund_list = refund_abuse_scores(features).tolist()
        names = self.model.layout.names
        over = self.tiers.over
        spending = self.spending
        unapproved = self.unapproved
        examples = self.examples
        row = 0
        for group in groups:
            rows = _slices(group, _DECIDE_COLUMNS)
            size = len(group)
            as_of_us = group.as_of_us
            kinds = rows["type"]
            decisions: list[str] = ["approve"] * size
            reasons: list[str | None] = [None] * size
            group_scores = [0.0] * size
            counted: list[tuple[str, int, str, int]] = []
            held_us: list[int] = []  # the payments whose features wait for their label
            held_ids: list[str] = []
            held_rows: list[int] = []
            held_approved: list[bool] = []
            for index, (kind, event_id, payer, ingest_us, amount, currency) in enumerate(
                zip(
                    kinds,
                    rows["event_id"],
                    rows["payer_id"],
                    rows["ingest_us"],
                    rows["amount_micros"],
                    rows["currency"],
                    strict=True,
                )
            ):
                if kind != "payment":
                    continue
                at = row + index
                reason: str | None = None
                if at in failed:
                    self.model_errors += 1
                    decision, reason, score = "review", "model_error", 1.0
                else:
                    score = score_list[at]
                    decision = _DECISIONS[levels[at]]
                    limited = over(spending, payer, amount, currency, as_of_us)
                    if limited and decision == "approve":
                        decision = "review"
                    if limited or flagged[at]:
                        reason = self._reasons(at, masks, contributions, limited, score, names)
                decisions[index], reasons[index], group_scores[index] = decision, reason, score
                if decision != "approve":
                    unapproved[event_id] = (ingest_us, decision)
                if decision != "decline":
                    counted.append((payer, ingest_us, currency, amount))
                if at not in failed:
                    vector = features[at]
                    approved = decision == "approve"
                    if approved and zlib.crc32(event_id.encode()) % NORMAL_SAMPLE == 0:
                        examples.append((ingest_us, event_id, NORMAL, vector))
                    held_us.append(ingest_us)
                    held_ids.append(event_id)
                    held_rows.append(at)
                    held_approved.append(approved)
            for payer, ingest_us, currency, amount in counted:  # seen from the next second on
                spending.add(payer, ingest_us, currency, amount)
            self.held.add(held_us, held_ids, features[held_rows], held_approved)
            if len(counted) < size:
                self._follow(rows, decisions, reasons, group_scores, refund_list[row : row + size])
            invariant(len(decisions) == size == len(reasons), "one decision per event")
            group.payload = (decisions, group_scores, reasons)
            row += size
        self.held.release_to(HELD_MAX)

    def _reasons(
        self,
        at: int,
        masks: list[np.ndarray],
        contributions: np.ndarray,
        limited: bool,
        score: float,
        names: tuple[str, ...],
    ) -> str | None:
        """The reasons of a flagged payment: the rules that fired, ``tier_limit``, and
        when the score reaches review the features that pushed it most."""
        parts = [name for name, mask in zip(RULES, masks, strict=True) if mask[at]]
        if limited:
            parts.append("tier_limit")
        if score >= self.risk.review_at:
            pushed = contributions[at]
            parts.extend(
                names[column]
                for column in np.argsort(-pushed, kind="stable")[:REASONS_MAX].tolist()
                if pushed[column] > 0
            )
        return ";".join(parts[: REASONS_MAX + 1]) or None

    def _follow(
        self,
        rows: dict[str, list[Any]],
        decisions: list[str],
        reasons: list[str | None],
        scores: list[float],
        refund_rule: list[float],
    ) -> None:
        """Reversals follow their payment's decision, a refund of an approved payment
        goes to review when ``refund_abuse`` reaches it; a chargeback labels its payment."""
        for index, (kind, reference, ingest_us) in enumerate(
            zip(rows["type"], rows["ref_event_id"], rows["ingest_us"], strict=True)
        ):
            if kind == "payment":
                continue
            fate = self.unapproved.get(reference, (0, None))[1]
            if fate == "decline":
                decisions[index], reasons[index] = "decline", "reference_declined"
            elif fate == "review":
                decisions[index], reasons[index] = "review", "reference_in_review"
            elif kind == "refund" and refund_rule[index] >= self.risk.review_at:
                decisions[index], reasons[index] = "review", REFUND_ABUSE
            else:
                reasons[index] = "reversal"
            if kind == "refund":
                scores[index] = refund_rule[index]
            if kind == "chargeback" and reference is not None:
                row = self.held.take(reference)
                if row is not None and reference not in self.labelled:  # at most once
                    self.labelled.add(reference)
                    self.examples.append((ingest_us, reference, FRAUD, row))

    def _commit(self, group: Group) -> None:
        """Nothing to commit: what a decision changes (spending, the payments not
        approved, the examples) changes as it is made, group by group."""

    # -- learning, as an epoch starts

    def _learn(self, epoch_us: int, sweep: bool) -> None:
        """Learn every example of the epochs before `epoch_us`, in canonical order (so
        how the input was cut into blocks changes nothing), after maturing the held
        payments that reached the label age unlabelled."""
        self._learn_matured(epoch_us)
        self._forget_unapproved(epoch_us)
        if sweep:
            self.spending.forget_before(epoch_us - DAY_US)
        if not self.examples:
            return
        examples = sorted(self.examples, key=lambda example: example[:3])
        self.examples = []
        self.model.learn_examples(
            [example[2] for example in examples], [example[3] for example in examples]
        )

    def _forget_unapproved(self, as_of_us: int) -> None:
        unapproved = self.unapproved
        cutoff_us = as_of_us - self.reference_keep_us
        while unapproved:
            oldest = next(iter(unapproved))
            if unapproved[oldest][0] >= cutoff_us:
                break
            del unapproved[oldest]

    def _learn_matured(self, as_of_us: int) -> None:
        """Queue as legitimate the held payments that reached the label age unlabelled;
        keep their features a while longer for a late chargeback (`LABEL_KEEP_FACTOR`)."""
        age_us = self.risk.label_age_us
        matured = self.held.mature(as_of_us, age_us, age_us * LABEL_KEEP_FACTOR, NEGATIVE_SAMPLE)
        self.examples.extend(
            (ingest_us, event_id, LEGITIMATE, row) for ingest_us, event_id, row in matured
        )

    def snapshot(self) -> tuple[Any, ...]:
        return (
            self.sequencer_state(),
            self.model,
            self.held.state(),
            sorted(self.labelled),
            self.model_errors,
            list(self.unapproved.items()),
            self.spending.state(),
            list(self.examples),
            self.epoch,
        )


def _slices(group: Group, names: tuple[str, ...]) -> dict[str, list[Any]]:
    """The group's rows of the named columns."""
    start, stop, columns = group.start, group.stop, group.columns
    return {name: columns[name][start:stop] for name in names}


def decided_events(groups: list[Group]) -> pa.RecordBatch:
    """The events of described groups as one block, with the decision columns filled."""
    if not groups:
        return empty_batch()
    events = whole_block(groups)
    count = events.num_rows

    def joined(part: int) -> list[Any]:
        return list(chain.from_iterable(group.payload[part] for group in groups))

    values = {
        "decision": pa.array(joined(0), pa.string()),
        "risk_score": pa.array(joined(1), pa.float64()),
        "model_version": pa.repeat(pa.scalar(MODEL_VERSION), count),
        "reasons": pa.array(joined(2), pa.string()),
    }
    for name in _DECISION_COLUMNS:
        events = events.set_column(PAYMENT_SCHEMA.get_field_index(name), name, values[name])
    return events
