"""The batched Evaluator's slicing is TFMA's, and it names what it cannot compute.

Its metrics against TFMA's own evaluator: tests/test_blessing.py.
"""

import numpy as np
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.slicer import slicer_lib

from components import batched_evaluation
from pipeline.eval_config import make_eval_config
from recommender.heads import HeadThreshold

TIERS = np.array([b"few", b"some", b"many"], dtype=object)


def _config(baseline: bool):
    config = make_eval_config({
        "binary_rating": HeadThreshold("AUC", True, bound=0.5, max_regression=0.1),
        "purchase_probability": HeadThreshold("RootMeanSquaredError", False, 1.0, 0.1),
    })
    config.slicing_specs.add(feature_keys=["item_id"])  # a raw feature no model transforms
    return tfma.utils.update_eval_config_with_defaults(config, has_baseline=baseline, rubber_stamp=True)


def test_a_row_is_in_every_slice_any_model_puts_it_in_as_tfma_slices():
    """With a baseline whose vocabularies differ, one row can be in two tiers of one feature."""
    config = _config(baseline=True)
    rng = np.random.default_rng(3)
    rows = 200
    candidate, baseline = (rng.choice(TIERS, size=(rows, 1)) for _ in range(2))
    items = rng.choice(np.array([b"i1", b"i2", b"i3"], dtype=object), size=(rows, 1))
    names = [spec.name for spec in config.model_specs]
    extract = {
        tfma.constants.INPUT_KEY: np.zeros(rows, dtype=object),
        tfma.constants.FEATURES_KEY: {"item_id": items, "user_id": items},
        tfma.constants.TRANSFORMED_FEATURES_KEY: {
            names[0]: {"user_activity": candidate, "item_popularity": candidate},
            names[1]: {"user_activity": baseline, "item_popularity": baseline},
        },
    }
    masks = batched_evaluation._slice_masks(extract, config)

    specs = [slicer_lib.SingleSliceSpec(spec=s) for s in config.slicing_specs]
    expected: dict[tuple, set[int]] = {}
    for i in range(rows):
        dicts = [{k: v[i] for k, v in extract[tfma.constants.TRANSFORMED_FEATURES_KEY][n].items()} for n in names]
        raw = {k: v[i] for k, v in extract[tfma.constants.FEATURES_KEY].items()}
        for key in slicer_lib.get_slices_for_features_dicts(dicts, raw, specs):
            expected.setdefault(key, set()).add(i)
    assert {key: set(np.flatnonzero(mask)) for key, mask in masks.items()} == expected
    assert (candidate != baseline).any()  # some rows are in two tiers
    assert any(len(rows_) > 0 for key, rows_ in expected.items() if key and key[0][0] == "item_id")


def test_the_pipelines_configs_are_batched_and_others_are_named():
    assert batched_evaluation.unsupported(_config(baseline=True)) is None
    assert batched_evaluation.unsupported(_config(baseline=False)) is None

    with_intervals = _config(baseline=False)
    with_intervals.options.compute_confidence_intervals.value = True
    assert "confidence intervals" in batched_evaluation.unsupported(with_intervals)

    crossed = _config(baseline=False)
    crossed.slicing_specs.add(feature_keys=["user_activity", "item_popularity"])
    assert "slicing spec" in batched_evaluation.unsupported(crossed)

    other_metric = _config(baseline=False)
    other_metric.metrics_specs[0].metrics.add(class_name="MultiClassConfusionMatrixPlot")
    assert "without a batched form" in batched_evaluation.unsupported(other_metric)
