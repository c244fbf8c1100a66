"""The decision of every event, in a payer shard: features, models, rules, limits.

`RiskShard` is an `centflow.risk.shard.AsOfShard`: each event is described as
of the start of its ingestion second, so its score does not depend on arrival
order, the number of workers or a crash and resume. For each event it

1. builds the feature row: the payee features that came with it (payee shard),
   the payer features (`centflow.risk.features.PayerBook`), and the producer's
   ``risk_signals`` as they are;
2. scores the block with both models at once (`centflow.risk.model.RiskModel`)
   and applies the rules that carry what models do poorly on packed bursts
   (`RULES`): ``card_testing``, ``velocity``, ``account_takeover``;
3. combines them into one score in [0, 1]: the strongest rule, else the
   supervised probability raised by the anomaly; the decision is ``decline`` at
   `RiskConfig.decline_at` and above, ``review`` at `review_at` and above;
4. applies the payer's tier limits (`centflow.risk.tiers`): over a limit is at
   least ``review`` with reason ``tier_limit``, whatever the models say.

Reasons are the rules that fired and the features that pushed the score most.
Refunds and chargebacks have score 0 and follow their payment: approved if it
was, ``decline`` (reason ``reference_declined``) if it was declined, since it
never moved money, and ``review`` (reason ``reference_in_review``) while it is
held. Admission guarantees a reversal names its payment's payer, so both meet
in this shard; payments not approved are remembered for the de-duplication
horizon, beyond which admission refuses the reversal anyway. A chargeback
labels the payment it references as fraud.

**Failure is never approval.** If describing a block fails, each event is tried
alone; an event that still fails goes to ``review`` with reason
``model_error`` and is counted (`model_errors`).

Learning happens as groups commit (in ingestion order, off the decision path):
approved payments teach what normal looks like; a payment is learned as
legitimate once `label_age_s` has passed without a chargeback (never if it was
declined or is in review), and as fraud when its chargeback commits, as long
as its features are held (`HELD_MAX`, and up to `LABEL_KEEP_FACTOR` label ages).
"""

from __future__ import annotations

import logging
import zlib
from collections import deque
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from centflow.config import RiskConfig
from centflow.errors import invariant
from centflow.ingest.columns import PAYMENT_SCHEMA
from centflow.money.amounts import minor_unit_exponent
from centflow.risk.features import (
    PAYEE_FEATURES,
    PAYER_FEATURES,
    PayerBook,
    is_tiny,
)
from centflow.risk.model import MODEL_VERSION, RiskModel
from centflow.risk.shard import AsOfShard, Group
from centflow.risk.tiers import TierLimits

LOG = logging.getLogger(__name__)
HELD_MAX = 2_000_000  # payments whose features wait for their label, per shard
LABEL_KEEP_FACTOR = 4
NORMAL_SAMPLE = 4  # one approved payment in this many teaches "normal" (by event id hash)
NEGATIVE_SAMPLE = 4  # one legitimate payment in this many is learned as legitimate
REASONS_MAX = 3
_FIXED = (*PAYEE_FEATURES, *PAYER_FEATURES)
_COLUMN = {name: index for index, name in enumerate(_FIXED)}
_DECISION_COLUMNS = ("decision", "risk_score", "model_version", "reasons")

RULES = ("card_testing", "velocity", "account_takeover")
RULE_SCORE = {"card_testing": 0.96, "velocity": 0.93, "account_takeover": 0.94}


def rule_scores(features: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """(strongest rule score per row, 0 where none; one boolean mask per rule)."""

    def column(name: str) -> np.ndarray:
        return features[:, _COLUMN[name]]

    new_payer = column("payer_history") == 0
    card_testing = (
        (column("payee_new_payers_1m") >= 4)
        & (column("payee_tiny_share_1m") >= 0.5)
        & (column("tiny") > 0)
        & new_payer
    )
    velocity = (column("payer_payments_1m") >= 8) | (column("payer_payments_10m") >= 30)
    takeover = (
        (column("payer_history") >= np.log1p(5))
        & (column("new_device") > 0)
        & (column("new_country") > 0)
        & (column("payer_amount_z") >= 2.5)
    )
    masks = [card_testing, velocity, takeover]
    score = np.zeros(len(features))
    for name, mask in zip(RULES, masks, strict=True):
        score = np.where(mask, np.maximum(score, RULE_SCORE[name]), score)
    return score, masks


#: (ingestion µs, event id, feature row, approved)
HeldEntry = tuple[int, str, list[float], bool]


class _Held:
    """Payments whose features wait for their label, in commit order."""

    __slots__ = ("by_id", "late", "queue")

    def __init__(self) -> None:
        self.queue: deque[HeldEntry] = deque()  # awaiting the label age
        self.late: deque[HeldEntry] = deque()  # learned as legitimate, kept for a late label
        self.by_id: dict[str, HeldEntry] = {}


class RiskShard(AsOfShard):
    """Scores and decides the events of one payer shard (see the module docstring)."""

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
        self.book = PayerBook()
        self.model = RiskModel()
        self.held = _Held()
        self.labelled: set[str] = set()
        self.model_errors = 0
        if state is not None:
            self.restore_sequencer(state[0])
            self.book = PayerBook(state[1])
            self.model = state[2]
            for entry in state[3]:
                self._hold(*entry)
            for entry in state[6]:
                self.held.late.append(entry)
                self.held.by_id[entry[1]] = entry
            self.labelled = set(state[4])
            self.model_errors = state[5]
            self.unapproved = dict(state[7])

    # -- describing (scoring) a group

    def _describe(self, group: Group) -> None:
        try:
            group.payload = self._score(group.events, group.context, group.as_of_us)
        except Exception:  # a bug in one event's features must not stop or approve anything
            LOG.exception("risk scoring failed for a block; scoring its events one by one")
            group.payload = self._score_one_by_one(group)

    def _score_one_by_one(self, group: Group) -> tuple[Any, ...]:
        parts = []
        for row in range(group.events.num_rows):
            events = group.events.slice(row, 1)
            context = None if group.context is None else group.context[row : row + 1]
            try:
                parts.append(self._score(events, context, group.as_of_us))
            except Exception:
                LOG.exception("risk scoring failed for event %s", events["event_id"][0])
                self.model_errors += 1
                parts.append(_model_error(events))
        features = [part[0] for part in parts]
        width = max(len(f[0]) if len(f) else 0 for f in features) if features else 0
        padded = [np.pad(f, ((0, 0), (0, width - f.shape[1]))) if f.size else np.zeros((len(f), width)) for f in features]  # fmt: skip
        return (
            np.concatenate(padded) if padded else np.zeros((0, width)),
            [value for part in parts for value in part[1]],
            np.concatenate([part[2] for part in parts]),
            [value for part in parts for value in part[3]],
        )

    def _score(
        self, events: pa.RecordBatch, context: np.ndarray | None, as_of_us: int
    ) -> tuple[np.ndarray, list[str], np.ndarray, list[str | None]]:
        """(feature rows, decisions, scores, reasons) of a group's events."""
        count = events.num_rows
        features = self._features(events, context, as_of_us)
        supervised, anomaly, contributions = self.model.score(features)
        rules, masks = rule_scores(features)
        score = np.maximum(rules, 1.0 - (1.0 - supervised) * (1.0 - 0.5 * anomaly))
        is_payment = pc.equal(events["type"], "payment").to_numpy(zero_copy_only=False)
        score = np.where(is_payment, np.clip(score, 0.0, 1.0), 0.0)
        decisions = np.where(
            score >= self.risk.decline_at,
            "decline",
            np.where(score >= self.risk.review_at, "review", "approve"),
        ).astype(object)
        over = self._over_limits(events, as_of_us) & is_payment
        decisions[over & (decisions == "approve")] = "review"
        reasons = self._reasons(contributions, masks, over, is_payment, score)
        if not is_payment.all():
            self._follow_payments(events, is_payment, decisions, reasons)
        invariant(len(decisions) == count and len(reasons) == count, "one decision per event")
        return features, decisions.tolist(), score, reasons

    def _features(
        self, events: pa.RecordBatch, context: np.ndarray | None, as_of_us: int
    ) -> np.ndarray:
        count = events.num_rows
        payee = context if context is not None else np.zeros((count, len(PAYEE_FEATURES)))
        columns = [
            events[name].to_pylist()
            for name in ("payer_id", "amount_micros", "payee_id", "device_id", "ip", "country", "currency")
        ]  # fmt: skip
        features = self.book.features
        payer_rows = [
            features(payer, as_of_us, amount, payee_id, device, ip, country, is_tiny(amount, minor_unit_exponent(currency)))
            for payer, amount, payee_id, device, ip, country, currency in zip(*columns, strict=True)
        ]  # fmt: skip
        fixed = np.hstack(
            [payee, np.array(payer_rows, np.float64).reshape(count, len(PAYER_FEATURES))]
        )
        signals = events["risk_signals"]
        if signals.null_count == count:
            return fixed
        layout = self.model.layout
        extra: list[tuple[int, int, float]] = []
        for row, pairs in enumerate(signals.to_pylist()):
            for name, value in pairs or ():
                column = layout.signal_column(name)
                if column is not None:
                    extra.append((row, column, value))
        full = np.zeros((count, len(layout.names)))
        full[:, : fixed.shape[1]] = fixed
        for row, column, value in extra:
            full[row, column] = value
        return full

    def _over_limits(self, events: pa.RecordBatch, as_of_us: int) -> np.ndarray:
        columns = [events[name].to_pylist() for name in ("payer_id", "amount_micros", "currency")]
        return np.array(
            [
                self.tiers.over(self.book, payer, amount, currency, as_of_us)
                for payer, amount, currency in zip(*columns, strict=True)
            ],
            np.bool_,
        ).reshape(events.num_rows)

    def _reasons(
        self,
        contributions: np.ndarray,
        masks: list[np.ndarray],
        over: np.ndarray,
        is_payment: np.ndarray,
        score: np.ndarray,
    ) -> list[str | None]:
        """Rules that fired, ``tier_limit``, and (when the score alone would not
        approve) the features that pushed it most."""
        names = self.model.layout.names
        top = np.argsort(-contributions, axis=1)[:, :REASONS_MAX] if contributions.size else None
        out: list[str | None] = []
        for row in range(len(score)):
            if not is_payment[row]:
                out.append("reversal")
                continue
            parts = [name for name, mask in zip(RULES, masks, strict=True) if mask[row]]
            if over[row]:
                parts.append("tier_limit")
            if top is not None and score[row] >= self.risk.review_at:
                parts.extend(names[col] for col in top[row] if contributions[row, col] > 0)
            out.append(";".join(parts[: REASONS_MAX + 1]) or None)
        return out

    def _follow_payments(
        self,
        events: pa.RecordBatch,
        is_payment: np.ndarray,
        decisions: np.ndarray,
        reasons: list[str | None],
    ) -> None:
        """Give each reversal its payment's fate (see the module docstring); a payment
        of the same group counts too (the group is in canonical order)."""
        ids = events["event_id"].to_pylist()
        references = events["ref_event_id"].to_pylist()
        fates = {
            ids[row]: decisions[row]
            for row in np.flatnonzero(is_payment & (decisions != "approve")).tolist()
        }
        for row in np.flatnonzero(~is_payment).tolist():
            reference = references[row]
            fate = fates.get(reference) or self.unapproved.get(reference, (0, None))[1]
            if fate == "decline":
                decisions[row], reasons[row] = "decline", "reference_declined"
            elif fate == "review":
                decisions[row], reasons[row] = "review", "reference_in_review"

    # -- committing a group: state and learning

    def _commit(self, group: Group) -> None:
        events = group.events
        features, decisions, _scores, _reasons = group.payload
        columns = [
            events[name].to_pylist()
            for name in ("type", "event_id", "payer_id", "ingest_us", "amount_micros", "currency", "payee_id", "device_id", "ip", "country", "ref_event_id")
        ]  # fmt: skip
        self._learn_matured(group.as_of_us)
        self._forget_unapproved(group.as_of_us)
        fraud_rows: list[list[float]] = []
        commit = self.book.commit
        normal_rows: list[list[float]] = []
        for row, (kind, event_id, payer, ingest, amount, currency, payee, device, ip, country, reference) in enumerate(zip(*columns, strict=True)):  # fmt: skip
            if kind == "payment":
                declined = decisions[row] == "decline"
                commit(payer, ingest, amount, currency, payee, device, ip, country, declined)
                approved = decisions[row] == "approve"
                if not approved:
                    self.unapproved[event_id] = (ingest, decisions[row])
                vector = features[row].tolist()
                if approved and zlib.crc32(event_id.encode()) % NORMAL_SAMPLE == 0:
                    normal_rows.append(vector)
                self._hold(ingest, event_id, vector, approved)
            elif kind == "chargeback" and reference is not None:
                held = self.held.by_id.pop(reference, None)
                if held is not None and reference not in self.labelled:  # at most once
                    self.labelled.add(reference)
                    fraud_rows.append(held[2])
        if normal_rows:
            self.model.learn_normal(normal_rows)
        if fraud_rows:
            self.model.learn(fraud_rows, fraud=True)

    def _forget_unapproved(self, as_of_us: int) -> None:
        unapproved = self.unapproved
        cutoff_us = as_of_us - self.reference_keep_us
        while unapproved:
            oldest = next(iter(unapproved))
            if unapproved[oldest][0] >= cutoff_us:
                break
            del unapproved[oldest]

    def _hold(self, ingest_us: int, event_id: str, vector: list[float], approved: bool) -> None:
        entry = (ingest_us, event_id, vector, approved)
        self.held.queue.append(entry)
        self.held.by_id[event_id] = entry
        while len(self.held.by_id) > HELD_MAX:
            self._release_oldest()

    def _release_oldest(self) -> None:
        entry = (self.held.late or self.held.queue).popleft()
        if self.held.by_id.get(entry[1]) is entry:
            del self.held.by_id[entry[1]]

    def _learn_matured(self, as_of_us: int) -> None:
        """Learn as legitimate the held payments that reached the label age unlabelled;
        keep their features a while longer for a late chargeback (`LABEL_KEEP_FACTOR`)."""
        age_us = self.risk.label_age_us
        held = self.held
        rows: list[list[float]] = []
        while held.queue and held.queue[0][0] + age_us < as_of_us:
            entry = held.queue.popleft()
            _, event_id, vector, approved = entry
            if held.by_id.get(event_id) is not entry:
                continue  # labelled already (chargeback) or replaced
            if approved and zlib.crc32(event_id.encode()) % NEGATIVE_SAMPLE == 1:
                rows.append(vector)
            held.late.append(entry)
        keep_us = age_us * LABEL_KEEP_FACTOR
        while held.late and held.late[0][0] + keep_us < as_of_us:
            entry = held.late.popleft()
            if held.by_id.get(entry[1]) is entry:
                del held.by_id[entry[1]]
        if rows:
            self.model.learn(rows, fraud=False)

    def snapshot(self) -> tuple[Any, ...]:
        return (
            self.sequencer_state(),
            self.book.state(),
            self.model,
            list(self.held.queue),
            sorted(self.labelled),
            self.model_errors,
            list(self.held.late),
            list(self.unapproved.items()),
        )


def _model_error(
    events: pa.RecordBatch,
) -> tuple[np.ndarray, list[str], np.ndarray, list[str | None]]:
    return np.zeros((events.num_rows, 0)), ["review"], np.array([1.0]), ["model_error"]


def with_decisions(events: pa.RecordBatch, payload: tuple[Any, ...]) -> pa.RecordBatch:
    """A group's events with the decision columns filled from its payload."""
    _features, decisions, scores, reasons = payload
    count = events.num_rows
    values = {
        "decision": pa.array(decisions, pa.string()),
        "risk_score": pa.array(np.asarray(scores, np.float64)),
        "model_version": pa.repeat(pa.scalar(MODEL_VERSION), count),
        "reasons": pa.array(reasons, pa.string()),
    }
    for name in _DECISION_COLUMNS:
        events = events.set_column(PAYMENT_SCHEMA.get_field_index(name), name, values[name])
    return events
