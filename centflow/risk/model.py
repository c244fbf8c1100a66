"""The risk models of one payer shard: they learn and score a block at a time, in NumPy.

Two models share one feature layout (`FeatureLayout`: the payee and payer
features of `centflow.risk.features`, then the producer's ``risk_signals`` by
name, in the order first seen):

- **Unsupervised**: a standard scaler learns what normal payments look like
  (only payments that were approved: never "normal" from a payment it declined
  or holds for review), and an event's anomaly is how far its scaled features
  lie beyond `ANOMALY_Z` standard deviations. It catches what no label has
  taught yet (a new device in a new country at ten times the usual amount).
- **Supervised**: a logistic regression on the scaled features learns from
  labels: a chargeback labels the payment it references as fraud when it
  arrives; a payment that reaches the label age without one is learned as
  legitimate (unless it was declined or is in review).

The arithmetic is River's, example for example: the scaler is River's
``StandardScaler`` (a running mean and population variance per feature), the
regression River's ``LogisticRegression`` with ``SGD(LEARNING_RATE)``, ``l2=L2``
and its default intercept rate, one ``learn_one`` step per labelled example
scaled as of that example. River's per-event calls cost 15–28 µs, and River has
no block form that keeps these semantics (its ``learn_many`` takes one mean
gradient step for a whole batch). So the parameters live here as NumPy arrays,
`learn` takes a batch of examples in order (the scaler's states as of each
example come from cumulative sums, the regression steps through its examples
in a tight loop), and `Frozen.score` scores every row of a block in one pass.
Tests check both against River itself.

Deterministic: no randomness at all (the regression starts from zero), and
examples are learned in the order the shard gives them.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence

import numpy as np

from centflow.errors import invariant
from centflow.risk.features import PAYEE_FEATURES, PAYER_FEATURES

MODEL_VERSION = "risk-2"
SIGNALS_TRACKED_MAX = 64
ANOMALY_Z = 3.0
Z_CLIP = 8.0
LEARNING_RATE = 0.02
INTERCEPT_LEARNING_RATE = 0.01  # River's LogisticRegression default
L2 = 1e-4
POSITIVE_WEIGHT = 4.0
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
    """The scoring parameters of a `RiskModel` at one moment: the scaler's means and
    scales, the regression's weights and intercept, and whether each model has learned
    enough to speak (`WARM_*`)."""

    __slots__ = ("anomaly_on", "intercept", "means", "scale", "supervised_on", "weights")

    def __init__(self, model: RiskModel) -> None:
        self.means = model.means.copy()
        self.scale = _scales(model.variances)
        self.weights = model.weights.copy()
        self.intercept = model.intercept
        self.supervised_on = (
            model.learned >= WARM_LABELS_MIN and model.positives >= WARM_POSITIVES_MIN
        )
        self.anomaly_on = model.normal_learned >= WARM_NORMAL_MIN

    def score(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(supervised probability, anomaly in [0, 1], per-feature contributions) for a
        block of feature rows (columns as the layout's names; a column the parameters
        do not know yet scores as unlearned: mean 0, scale 1, weight 0)."""
        count, width = features.shape
        means, scale, weights = self.means, self.scale, self.weights
        if width != len(means):
            extra = max(width - len(means), 0)
            means = np.pad(means, (0, extra))[:width]
            scale = np.pad(scale, (0, extra), constant_values=1.0)[:width]
            weights = np.pad(weights, (0, extra))[:width]
        scaled = np.clip((features - means) / scale, -Z_CLIP, Z_CLIP)
        contributions = scaled * weights
        if self.supervised_on:
            logits = contributions.sum(axis=1) + self.intercept
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
    """A feature's standard deviation, or 1 where it has none (River's scaler)."""
    return np.where(variances > 0, np.sqrt(np.maximum(variances, 0.0)), 1.0)


class RiskModel:
    """The unsupervised and supervised models of one shard (see the module docstring).

    Parameters, one entry per column of the layout (a column not learned yet: 0):
    the scaler's `counts`, `means` and population `variances` over the normal
    examples that had the column, the regression's `weights` and `intercept`.
    """

    def __init__(self) -> None:
        self.layout = FeatureLayout()
        width = len(self.layout.names)
        self.counts = np.zeros(width)
        self.means = np.zeros(width)
        self.variances = np.zeros(width)
        self.weights = np.zeros(width)
        self.intercept = 0.0
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
        """Learn examples in the order given: `NORMAL` ones in the scaler, `LEGITIMATE`
        and `FRAUD` ones in the regression, each scaled as of its place in the order
        (after the normal examples before it), as River learning them one by one.
        A row may be shorter than the layout (columns it had no value for)."""
        invariant(len(kinds) == len(rows), "one kind per example")
        if not rows:
            return
        width = len(self.layout.names)
        self._widen(width)
        values, present = _matrix(rows, width)
        kind = np.asarray(kinds)
        invariant(NORMAL <= kind.min() <= kind.max() <= FRAUD, "unknown example kind")
        normal = kind == NORMAL
        means, variances = self._scaler_states(values, present & normal[:, None])
        labelled = ~normal
        if labelled.any():
            scaled = np.clip(
                (values[labelled] - means[labelled]) / _scales(variances[labelled]),
                -Z_CLIP,
                Z_CLIP,
            )
            scaled[~present[labelled]] = 0.0  # a column the example has no value for
            self._regression_steps(scaled, present[labelled], kind[labelled] == FRAUD)
        self.normal_learned += int(normal.sum())

    def _scaler_states(
        self, values: np.ndarray, learned: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The scaler's means and variances as of each row (before it), from cumulative
        sums of the rows' deviations from a shift (the mean so far, or where a column
        has none yet its first value: a constant column stays exactly constant), and
        the state after the last row kept. `learned` marks the values the scaler takes."""
        count, width = values.shape
        first = np.argmax(learned, axis=0)
        shift = np.where(self.counts > 0, self.means, values[first, np.arange(width)])
        shift = np.where(learned.any(axis=0) | (self.counts > 0), shift, 0.0)
        deviations = np.where(learned, values - shift, 0.0)
        zero = np.zeros((1, width))
        counts = self.counts + np.vstack([zero, np.cumsum(learned, axis=0)])
        sums = np.vstack([zero, np.cumsum(deviations, axis=0)])
        squares = self.counts * (self.variances + (self.means - shift) ** 2) + np.vstack(
            [zero, np.cumsum(deviations * deviations, axis=0)]
        )
        seen = counts > 0
        safe = np.where(seen, counts, 1.0)
        offset = np.where(seen, sums / safe, 0.0)
        means = np.where(seen, shift + offset, 0.0)
        variances = np.where(seen, np.maximum(squares / safe - offset * offset, 0.0), 0.0)
        self.counts, self.means, self.variances = counts[-1], means[-1], variances[-1]
        invariant(means.shape == (count + 1, width), "one scaler state per row and after")
        return means[:-1], variances[:-1]

    def _regression_steps(self, scaled: np.ndarray, present: np.ndarray, fraud: np.ndarray) -> None:
        """One SGD step of River's LogisticRegression (log loss, L2 on the weights of the
        columns the example has) per row, in order."""
        weights = self.weights
        intercept = self.intercept
        widths = present.sum(axis=1).tolist()
        for row, fraudulent, width in zip(scaled, fraud.tolist(), widths, strict=True):
            sign = 1.0 if fraudulent else -1.0
            margin = (float(weights @ row) + intercept) * sign
            if margin > 18.0:
                gradient = math.exp(-margin) * -sign
            elif margin < -18.0:
                gradient = -sign
            else:
                gradient = -sign / (math.exp(margin) + 1.0)
            if fraudulent:
                gradient *= POSITIVE_WEIGHT
            intercept -= INTERCEPT_LEARNING_RATE * gradient
            if width == len(weights):
                weights -= LEARNING_RATE * (gradient * row + L2 * weights)
            else:  # an example from before the layout grew: only its own columns
                weights[:width] -= LEARNING_RATE * (gradient * row[:width] + L2 * weights[:width])
        self.intercept = intercept
        self.learned += len(fraud)
        self.positives += int(fraud.sum())

    def _widen(self, width: int) -> None:
        """Room for columns added to the layout since the last examples."""
        extra = width - len(self.means)
        invariant(extra >= 0, "the layout only grows")
        if extra:
            self.counts, self.means, self.variances, self.weights = (
                np.pad(array, (0, extra))
                for array in (self.counts, self.means, self.variances, self.weights)
            )

    def __getstate__(self) -> dict[str, bytes]:
        return {
            "arrays": pickle.dumps(
                (
                    self.layout.signals,
                    self.counts,
                    self.means,
                    self.variances,
                    self.weights,
                    self.intercept,
                    self.learned,
                    self.positives,
                    self.normal_learned,
                )
            )
        }

    def __setstate__(self, state: dict[str, bytes]) -> None:
        (
            signals,
            self.counts,
            self.means,
            self.variances,
            self.weights,
            self.intercept,
            self.learned,
            self.positives,
            self.normal_learned,
        ) = pickle.loads(state["arrays"])
        self.layout = FeatureLayout(signals)


def _matrix(rows: Sequence[Row], width: int) -> tuple[np.ndarray, np.ndarray]:
    """(values, present) of rows of at most `width` values (a shorter row: the first
    columns only)."""
    lengths = [len(row) for row in rows]
    invariant(max(lengths) <= width, "a row wider than the layout")
    if min(lengths) == width:
        values = np.stack(rows) if isinstance(rows[0], np.ndarray) else np.array(rows, np.float64)
        return values, np.ones((len(rows), width), np.bool_)
    values = np.zeros((len(rows), width))
    present = np.zeros((len(rows), width), np.bool_)
    for index, row in enumerate(rows):
        values[index, : len(row)] = row
        present[index, : len(row)] = True
    return values, present
