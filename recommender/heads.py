"""Every model head, declared once.

A head is its name (a label column of the same name, see `recommender.features`),
its kind and its default gate. The kind says everything the code derives for
it: the Keras activation, loss and per-epoch metric, how its bias starts at the
labels' base rate, the TFMA metrics the Evaluator reports, the range every
served value must lie in, and the report's plot. The model, the eval config,
the default thresholds, the report and the serving check all read `HEADS`;
adding a head is one `Head` here plus its label column in the schema and data.

Nothing here imports TensorFlow: the kinds name Keras and TFMA classes, and the
code that builds them looks the names up.
"""

from __future__ import annotations

import dataclasses
import enum
import re

from recommender import features


class BaseRate(enum.StrEnum):
    """How a head's output bias starts from its training labels' mean."""

    LOGIT = "logit"  # a sigmoid head: the bias is the mean's log-odds
    MEAN = "mean"  # a linear head: the bias is the mean itself


# Which way each TFMA metric a head may be gated on improves.
HIGHER_IS_BETTER = {
    "AUC": True, "AUCPrecisionRecall": True, "BinaryAccuracy": True, "Precision": True, "Recall": True,
    "BinaryCrossentropy": False, "RootMeanSquaredError": False, "MeanAbsoluteError": False,
    "MeanSquaredError": False, "MeanAbsolutePercentageError": False,
}


@dataclasses.dataclass(frozen=True)
class HeadThreshold:
    """When one head's model is good enough to bless.

    `metric` is a TFMA metric class name whose direction is known (see
    HIGHER_IS_BETTER); `higher_is_better` must state that direction, so a
    threshold that would bless the worse model is refused. The model must reach
    `bound` (a lower bound when higher is better, else an upper bound) and may be
    at most `max_regression` worse than the last blessed model, in the metric's units.
    """

    metric: str
    higher_is_better: bool
    bound: float
    max_regression: float

    @property
    def metric_key(self) -> str:
        """The name TFMA gives the metric's values ("RootMeanSquaredError" -> "root_mean_squared_error")."""
        return re.sub(r"(?<!^)(?=[A-Z][a-z])", "_", self.metric).lower()

    def __post_init__(self) -> None:
        if self.metric not in HIGHER_IS_BETTER:
            raise ValueError(
                f"threshold metric {self.metric!r} has no known direction; use one of {sorted(HIGHER_IS_BETTER)}"
            )
        if HIGHER_IS_BETTER[self.metric] != self.higher_is_better:
            way = "higher" if HIGHER_IS_BETTER[self.metric] else "lower"
            raise ValueError(
                f"threshold on {self.metric} says higher_is_better={self.higher_is_better}, but {way} "
                f"{self.metric} is better: the gate would bless the worse model"
            )
        if self.max_regression < 0:
            raise ValueError(f"max_regression must be >= 0, got {self.max_regression}")


@dataclasses.dataclass(frozen=True)
class HeadKind:
    """What a kind of head is, in Keras, TFMA, serving and the report.

    `keras_loss`, `keras_metric`: tf_keras.losses / tf_keras.metrics class
    names (`keras_metric_name` names the metric in the training logs);
    `tfma_metrics`: TFMA metric classes the Evaluator reports; `output_range`:
    (low, high) every served value lies in, None for unbounded; `plot`: the
    report's binned mean prediction vs. mean label plot, as (title, x label,
    y label).
    """

    activation: str | None
    keras_loss: str
    keras_metric: str
    keras_metric_name: str
    base_rate: BaseRate
    tfma_metrics: tuple[str, ...]
    output_range: tuple[float, float] | None
    plot: tuple[str, str, str]


# Calibration is mean prediction over mean label; Precision and Recall use 0.5.
BINARY = HeadKind(
    activation="sigmoid", keras_loss="BinaryCrossentropy", keras_metric="AUC", keras_metric_name="auc",
    base_rate=BaseRate.LOGIT,
    tfma_metrics=("ExampleCount", "AUC", "AUCPrecisionRecall", "BinaryCrossentropy", "Calibration",
                  "Precision", "Recall", "BinaryAccuracy"),
    output_range=(0.0, 1.0),
    plot=("Calibration", "mean predicted probability", "observed rate"),
)
REGRESSION = HeadKind(
    activation=None, keras_loss="MeanSquaredError", keras_metric="RootMeanSquaredError",
    keras_metric_name="rmse", base_rate=BaseRate.MEAN,
    tfma_metrics=("RootMeanSquaredError", "MeanAbsoluteError", "MeanPrediction", "MeanLabel"),
    output_range=None,
    plot=("Predicted vs. actual", "mean prediction", "mean actual"),
)


@dataclasses.dataclass(frozen=True)
class Head:
    """One head: `name` is also its label column and its output in every signature.

    `threshold` is the default gate (PipelineConfig.thresholds overrides it),
    `loss_weight` the default weight of its loss in the total
    (ModelConfig.loss_weights overrides it), `slice_metrics` the TFMA metric
    keys the report's slice table shows for it, `ranking_weight` its default
    weight in the `recommend` signature's log-space score (RankingConfig.weights
    overrides it; see recommender.recommend).
    """

    name: str
    kind: HeadKind
    threshold: HeadThreshold
    loss_weight: float
    slice_metrics: tuple[str, ...]
    ranking_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.threshold.metric not in self.kind.tfma_metrics:
            raise ValueError(f"head {self.name}: its threshold metric {self.threshold.metric} is not one its kind reports")


HEADS: tuple[Head, ...] = (
    # Would the user like the item. Bound: a constant predictor's AUC is 0.5.
    Head(
        features.BINARY_RATING, BINARY, HeadThreshold("AUC", True, bound=0.7, max_regression=0.01),
        loss_weight=1.0, slice_metrics=("example_count", "auc"), ranking_weight=1.0,
    ),
    # The purchase estimate. Bound: a constant predictor's RMSE on the bundled data is 0.275.
    # Its MSE on the [0, 1] scale is ~15 times smaller than the like cross-entropy:
    # unweighted, the shared embeddings would serve mostly the binary head.
    Head(
        features.PURCHASE_PROBABILITY, REGRESSION,
        HeadThreshold("RootMeanSquaredError", False, bound=0.22, max_regression=0.01),
        loss_weight=100.0, slice_metrics=("root_mean_squared_error", "mean_absolute_error"),
        ranking_weight=1.0,
    ),
)
NAMES = tuple(head.name for head in HEADS)


def check_names(given, what: str, heads: tuple[Head, ...] = HEADS) -> None:
    """ValueError unless the keys of `given` are exactly the heads' names."""
    names = [head.name for head in heads]
    if set(given) != set(names):
        raise ValueError(f"{what} must name exactly the heads {names}, got {sorted(given)}")
