"""The risk models (one for all payers): River learns, NumPy scores a block at once.

Two models share one feature layout (`FeatureLayout`: the payee and payer
features of `centflow.risk.features`, then the producer's ``risk_signals`` by
name, in the order first seen):

- **Unsupervised**: a River ``preprocessing.StandardScaler`` learns what normal
  payments look like (only payments that were approved: never "normal" from a
  payment it declined or holds for review), and an event's anomaly is how far
  its scaled features lie beyond `ANOMALY_Z` standard deviations. It catches
  what no label has taught yet (a new device in a new country at ten times the
  usual amount).
- **Supervised**: a River ``linear_model.LogisticRegression`` with
  ``optim.SGD(LEARNING_RATE)``, ``l2=L2`` and River's default intercept rate,
  on the scaled features, learns from labels: a chargeback labels the payment
  it references as fraud when it arrives; a payment that reaches the label age
  without one is learned as legitimate (unless it was declined or is in
  review), a fraud weighted `POSITIVE_WEIGHT`.

What River does: all the learning. `RiskModel.learn_examples` hands River an
epoch's examples one at a time, in the order given: a normal one to the
scaler's ``learn_one`` (its running count, mean and population variance per
feature), a labelled one to the regression's ``learn_one`` (one SGD step),
scaled by the scaler as it is at that point in the order: ``(value - mean) /
std`` (std 1 where the variance is 0), clipped to ``±Z_CLIP``. River has no
batch method that keeps these semantics (``learn_many`` takes one mean
gradient step for a whole batch), so learning stays per example: about 5.8 µs
per event on the 200k-event bench log, off the decision path. The River
objects are the model's state: they are what a snapshot pickles (a snapshot
of the NumPy parameters earlier releases kept restores into River objects).

What NumPy does: the scoring. River has no block form for these models and its
per-event calls cost 15–28 µs, but both models are linear in the scaled
features, so once per epoch `Frozen` reads River's learned parameters (the
scaler's ``means`` and ``vars``, the regression's ``weights`` and
``intercept``) into arrays, and `Frozen.score` scores every row of a block in
one pass: the probability River's ``predict_proba_one`` gives for the row
scaled as above, and the anomaly from the same scaled row (a test checks them
against River on sample rows).

Deterministic: no randomness at all (River's linear models start from zero),
and examples are learned in the order the shard gives them.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np
from river import linear_model, optim, preprocessing

from centflow.errors import invariant
from centflow.risk.features import PAYEE_FEATURES, PAYER_FEATURES

MODEL_VERSION = "risk-2"
SIGNALS_TRACKED_MAX = 64
ANOMALY_Z = 3.0
Z_CLIP = 8.0
LEARNING_RATE = 0.02
L2 = 1e-4
POSITIVE_WEIGHT = 4.0
#: One legitimate payment in this many is learned (`centflow.risk.scoring`).
NEGATIVE_SAMPLE = 4
#: The regression learns a fraud `POSITIVE_WEIGHT` times and a legitimate payment
#: one time in `NEGATIVE_SAMPLE`: its odds of fraud are theirs times both. Scores
#: take that factor back out, so a probability is one of the traffic itself.
PRIOR_LOGIT = math.log(POSITIVE_WEIGHT * NEGATIVE_SAMPLE)
#: A model says nothing until it has learned this much: before, its output would
#: be its starting point (0.5), not evidence.
WARM_NORMAL_MIN = 500
WARM_LABELS_MIN = 500
WARM_POSITIVES_MIN = 10
#: The kinds of a learning example: an approved payment (teaches the scaler what
#: normal is), a payment labelled legitimate, one labelled fraud (the regression).
NORMAL, LEGITIMATE, FRAUD = 0, 1, 2
#: A feature row: the layout's columns, or only its first ones.
Row = list[float] | np.ndarray


class FeatureLayout:
    """Column names of a feature matrix: the fixed features, then signals as first seen."""

    def __init__(self, signals: list[str] | None = None) -> None:
        self.fixed = (*PAYEE_FEATURES, *PAYER_FEATURES)
        self.signals: list[str] = list(signals or [])
        self.names: tuple[str, ...] = (*self.fixed, *(f"signal:{name}" for name in self.signals))
        self._index = {name: index for index, name in enumerate(self.names)}

    def signal_column(self, name: str) -> int | None:
        """The column of a signal, adding it while there is room (None: no room)."""
        key = f"signal:{name}"
        column = self._index.get(key)
        if column is None and len(self.signals) < SIGNALS_TRACKED_MAX:
            self.signals.append(name)
            self.names = (*self.names, key)
            column = self._index[key] = len(self.fixed) + len(self.signals) - 1
        return column


class Frozen:
    """The scoring parameters of a `RiskModel` at one moment, read out of its River
    objects into NumPy arrays: the scaler's means and scales, the regression's weights
    and intercept, and whether each model has learned enough to speak (`WARM_*`)."""

    __slots__ = ("anomaly_on", "intercept", "means", "scale", "supervised_on", "weights")

    def __init__(self, model: RiskModel) -> None:
        names = model.layout.names
        means, variances = model.scaler.means, model.scaler.vars
        self.means = np.array([means.get(name, 0.0) for name in names], np.float64)
        self.scale = _scales(np.array([variances.get(name, 0.0) for name in names], np.float64))
        weights = model.regression.weights
        self.weights = np.array([weights.get(name, 0.0) for name in names], np.float64)
        self.intercept = float(model.regression.intercept)
        self.supervised_on = (
            model.learned >= WARM_LABELS_MIN and model.positives >= WARM_POSITIVES_MIN
        )
        self.anomaly_on = model.normal_learned >= WARM_NORMAL_MIN

    def score(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(supervised probability, anomaly in [0, 1], per-feature contributions) for a
        block of feature rows (columns as the layout's names; a column the parameters
        do not know yet scores as unlearned: mean 0, scale 1, weight 0; a NaN value, a
        signal the event did not send, contributes nothing, as a missing column)."""
        count, width = features.shape
        means, scale, weights = self.means, self.scale, self.weights
        if width != len(means):
            extra = max(width - len(means), 0)
            means = np.pad(means, (0, extra))[:width]
            scale = np.pad(scale, (0, extra), constant_values=1.0)[:width]
            weights = np.pad(weights, (0, extra))[:width]
        scaled = np.clip((features - means) / scale, -Z_CLIP, Z_CLIP)
        np.nan_to_num(scaled, copy=False, nan=0.0)  # an absent signal says nothing
        contributions = scaled * weights
        if self.supervised_on:
            logits = contributions.sum(axis=1) + self.intercept - PRIOR_LOGIT
            supervised = 1.0 / (1.0 + np.exp(-logits))
        else:
            supervised = np.zeros(count)
        excess = np.maximum(np.abs(scaled) - ANOMALY_Z, 0.0)
        if self.anomaly_on:
            anomaly = 1.0 - np.exp(-(excess * excess).sum(axis=1) / 8.0)
        else:
            anomaly = np.zeros(count)
        invariant(supervised.shape == (count,), "one score per row")
        return supervised, anomaly, np.maximum(contributions, excess)


def _scales(variances: np.ndarray) -> np.ndarray:
    """A feature's standard deviation, or 1 where it has none."""
    return np.where(variances > 0, np.sqrt(np.maximum(variances, 0.0)), 1.0)


def _regression() -> linear_model.LogisticRegression:
    return linear_model.LogisticRegression(optimizer=optim.SGD(LEARNING_RATE), l2=L2)


class RiskModel:
    """The unsupervised and supervised models (see the module docstring):
    River's `scaler` and `regression`, keyed by the layout's names, and how many
    examples each has learned."""

    def __init__(self) -> None:
        self.layout = FeatureLayout()
        self.scaler = preprocessing.StandardScaler()
        self.regression = _regression()
        self.learned = 0
        self.positives = 0
        self.normal_learned = 0

    def score(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`Frozen.score` with the parameters as they are now."""
        return self.frozen().score(features)

    def frozen(self) -> Frozen:
        """The scoring parameters as they are now (see `Frozen`)."""
        return Frozen(self)

    def learn_examples(self, kinds: Sequence[int], rows: Sequence[Row]) -> None:
        """Learn examples in River, one at a time in the order given: `NORMAL` ones in
        the scaler, `LEGITIMATE` and `FRAUD` ones in the regression, each scaled by the
        scaler as it is then (after the normal examples before it). A row may be
        shorter than the layout, or hold NaN (columns it had no value for: not given to
        River)."""
        invariant(len(kinds) == len(rows), "one kind per example")
        if not rows:
            return
        names = self.layout.names
        invariant(max(len(row) for row in rows) <= len(names), "a row wider than the layout")
        invariant(set(kinds) <= {NORMAL, LEGITIMATE, FRAUD}, "unknown example kind")
        scaler_learn = self.scaler.learn_one
        regression_learn = self.regression.learn_one
        # River updates the scaler's dictionaries in place: read as of each example
        mean_of, variance_of, sqrt = self.scaler.means.get, self.scaler.vars.get, math.sqrt
        normal = positives = 0
        for kind, values in zip(kinds, _python_rows(rows), strict=True):
            if kind == NORMAL:
                scaler_learn(
                    {
                        name: value
                        for name, value in zip(names, values, strict=False)
                        if value == value
                    }
                )  # NaN (a signal the event did not send) is not given to River
                normal += 1
                continue
            scaled = {}
            for name, value in zip(names, values, strict=False):
                if value != value:  # NaN: absent
                    continue
                variance = variance_of(name, 0.0)
                deviation = value - mean_of(name, 0.0)
                z = deviation / sqrt(variance) if variance > 0 else deviation  # std 1 if none
                scaled[name] = Z_CLIP if z > Z_CLIP else -Z_CLIP if z < -Z_CLIP else z
            fraud = kind == FRAUD
            regression_learn(scaled, fraud, POSITIVE_WEIGHT if fraud else 1.0)
            positives += fraud
        self.normal_learned += normal
        self.learned += len(rows) - normal
        self.positives += positives

    def __getstate__(self) -> dict[str, bytes]:
        return {
            "blob": pickle.dumps(
                (
                    self.layout.signals,
                    self.scaler,
                    self.regression,
                    self.learned,
                    self.positives,
                    self.normal_learned,
                )
            )
        }

    def __setstate__(self, state: dict[str, bytes]) -> None:
        if "arrays" in state:  # a snapshot of the NumPy parameters of earlier releases
            self._set_arrays(pickle.loads(state["arrays"]))
            return
        (
            signals,
            self.scaler,
            self.regression,
            self.learned,
            self.positives,
            self.normal_learned,
        ) = pickle.loads(state["blob"])
        self.layout = FeatureLayout(signals)

    def _set_arrays(self, arrays: tuple[Any, ...]) -> None:
        """River objects holding parameters kept as NumPy arrays, one per column (the
        scaler's counts, means and variances, the regression's weights and intercept)."""
        signals, counts, means, variances, weights, intercept, *tallies = arrays
        self.layout = FeatureLayout(signals)
        names = self.layout.names[: len(counts)]
        seen = [index for index, count in enumerate(counts.tolist()) if count > 0]
        self.scaler = preprocessing.StandardScaler._from_state(
            {names[index]: int(counts[index]) for index in seen},
            {names[index]: float(means[index]) for index in seen},
            {names[index]: float(variances[index]) for index in seen},
        )
        self.regression = _regression()
        self.regression._weights.update(dict(zip(names, weights.tolist(), strict=True)))
        self.regression.intercept = float(intercept)
        self.learned, self.positives, self.normal_learned = tallies


def _python_rows(rows: Sequence[Row]) -> list[list[float]]:
    """Rows as lists of Python floats (what River's dictionaries hold)."""
    if all(isinstance(row, np.ndarray) for row in rows) and len({len(row) for row in rows}) == 1:
        return np.stack(rows).tolist()
    return [row.tolist() if isinstance(row, np.ndarray) else list(row) for row in rows]
