"""The Evaluator's TFMA config: one label per head, metrics and thresholds per head (recommender.heads)."""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.proto import config_pb2

from recommender import features, heads
from recommender.heads import Head, HeadThreshold

PLOT_BUCKETS = 20


def metric_threshold(threshold: HeadThreshold) -> tfma.MetricThreshold:
    """Value bound plus a change bound against the baseline (last blessed) model.

    TFMA's change threshold compares candidate - baseline with `absolute`:
    for higher-is-better metrics the difference must stay >= -max_regression,
    for lower-is-better ones <= +max_regression.
    """
    if threshold.higher_is_better:
        value = tfma.GenericValueThreshold(lower_bound={"value": threshold.bound})
        change = tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER,
            absolute={"value": -threshold.max_regression},
        )
    else:
        value = tfma.GenericValueThreshold(upper_bound={"value": threshold.bound})
        change = tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.LOWER_IS_BETTER,
            absolute={"value": threshold.max_regression},
        )
    return tfma.MetricThreshold(value_threshold=value, change_threshold=change)


def make_eval_config(
    thresholds: Mapping[str, HeadThreshold], declared: tuple[Head, ...] = heads.HEADS
) -> tfma.EvalConfig:
    """Every head evaluated on the raw eval split through `serving_tf_example`,
    with its kind's metrics and its threshold (`thresholds` names every head).

    A model is blessed only if every head's thresholded metric passes.
    """
    heads.check_names(thresholds, "thresholds", declared)
    metrics_specs = []
    for head in declared:
        threshold = thresholds[head.name]
        configs = [
            tfma.MetricConfig(class_name=name)
            for name in head.kind.tfma_metrics
            if name != threshold.metric
        ]
        # Blessing is decided on the overall slice; slices are reported, not
        # gated (a tier of a few dozen examples is too noisy to block a model).
        configs.append(tfma.MetricConfig(
            class_name=threshold.metric,
            per_slice_thresholds=[config_pb2.PerSliceMetricThreshold(
                slicing_specs=[tfma.SlicingSpec()], threshold=metric_threshold(threshold)
            )],
        ))
        # Binned mean prediction vs mean label: the report's calibration and
        # predicted-vs-actual plots.
        configs.append(tfma.MetricConfig(class_name="CalibrationPlot", config=f'"num_buckets": {PLOT_BUCKETS}'))
        metrics_specs.append(tfma.MetricsSpec(output_names=[head.name], metrics=configs))
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name=features.SERVING_TF_EXAMPLE,
                preprocessing_function_names=[features.TRANSFORM_FEATURES],
                label_keys={head.name: head.name for head in declared},
            )
        ],
        # Overall, and by the transform graph's user and item tiers (unseen users
        # and items among them).
        slicing_specs=[tfma.SlicingSpec()] + [
            tfma.SlicingSpec(feature_keys=[name]) for name in features.SLICE_FEATURES.values()
        ],
        metrics_specs=metrics_specs,
    )
