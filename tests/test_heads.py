"""A head is one declaration: a third head, declared here only, gets the rest."""

import re

import numpy as np
import pytest

from pipeline.config import default_thresholds
from pipeline.eval_config import make_eval_config
from recommender import features, heads
from recommender.config import ModelConfig
from recommender.heads import BINARY, REGRESSION, Head, HeadKind, HeadThreshold
from recommender.model import TrainingData, build_model
from results.report import head_section

USER = features.transformed_name(features.USER_ID)
ITEM = features.transformed_name(features.ITEM_ID)

CLICKED = Head(
    "clicked", BINARY, HeadThreshold("AUCPrecisionRecall", True, bound=0.3, max_regression=0.02),
    loss_weight=0.5, slice_metrics=("auc_precision_recall",),
)
THREE = (*heads.HEADS, CLICKED)


def _data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    inputs = {USER: rng.integers(0, 10, (n, 1)), ITEM: rng.integers(0, 8, (n, 1))}
    labels = {
        features.BINARY_RATING: rng.integers(0, 2, (n, 1)).astype(np.float32),
        features.PURCHASE_PROBABILITY: rng.random((n, 1)).astype(np.float32),
        # Learnable from the item alone, with a 25% base rate.
        "clicked": (inputs[ITEM] % 4 == 0).astype(np.float32),
    }
    return inputs, labels


def test_a_third_head_gets_a_trained_output_with_its_kinds_loss_and_base_rate():
    inputs, labels = _data()
    config = ModelConfig(
        factorized=False, hidden_units=(16,), l2=0.0, learning_rate=1e-2
    )
    model = build_model(10, 8, config, TrainingData.from_batches([(inputs, labels)]), heads=THREE)
    outputs = model(inputs)
    assert set(outputs) == {features.BINARY_RATING, features.PURCHASE_PROBABILITY, "clicked"}
    clicked = outputs["clicked"].numpy()
    assert clicked.shape == (256, 1) and np.all((clicked > 0) & (clicked < 1))
    # The bias starts at the labels' log-odds, as its kind (binary) says.
    rate = float(labels["clicked"].mean())
    assert float(model.heads["clicked"].bias.numpy()[0]) == pytest.approx(np.log(rate / (1 - rate)), rel=1e-5)
    assert model.compiled_loss._user_losses["clicked"].__class__.__name__ == BINARY.keras_loss
    before = model.evaluate(inputs, labels, verbose=0, return_dict=True)
    model.fit(inputs, labels, epochs=40, batch_size=64, verbose=0)
    after = model.evaluate(inputs, labels, verbose=0, return_dict=True)
    assert after["clicked_loss"] < 0.5 * before["clicked_loss"]
    assert after["clicked_auc"] > 0.95  # the kind's per-epoch metric, under the kind's name
    with pytest.raises(ValueError, match="loss_weights must name exactly the heads"):
        build_model(10, 8, ModelConfig(loss_weights={features.BINARY_RATING: 1.0}), heads=THREE)


def test_a_third_head_gets_its_default_threshold_and_an_eval_config():
    thresholds = default_thresholds(THREE)
    assert thresholds["clicked"] == CLICKED.threshold
    config = make_eval_config(thresholds, THREE)
    assert dict(config.model_specs[0].label_keys) == {head.name: head.name for head in THREE}
    (spec,) = [s for s in config.metrics_specs if list(s.output_names) == ["clicked"]]
    names = [m.class_name for m in spec.metrics]
    assert sorted(set(names) - {"CalibrationPlot"}) == sorted(BINARY.tfma_metrics)
    (gated,) = [m for m in spec.metrics if m.per_slice_thresholds]
    assert gated.class_name == "AUCPrecisionRecall"
    threshold = gated.per_slice_thresholds[0].threshold
    assert threshold.value_threshold.lower_bound.value == 0.3
    assert threshold.change_threshold.absolute.value == -0.02
    with pytest.raises(ValueError, match="thresholds must name exactly the heads"):
        make_eval_config(default_thresholds(), THREE)


def test_a_third_head_gets_a_report_section(tmp_path):
    overall = {("", "clicked", "auc_precision_recall", False): 0.61, ("", "clicked", "auc", False): 0.83}
    section = head_section(CLICKED, overall, [(0.2, 0.25, 40.0), (0.7, 0.6, 10.0)], tmp_path)
    assert "<h2>clicked</h2>" in section and "0.6100" in section and "0.8300" in section
    assert re.search(r"<img src='clicked.png' alt='Calibration plot for clicked'>", section)
    assert (tmp_path / "clicked.png").read_bytes()[:4] == b"\x89PNG"


def test_a_head_whose_threshold_its_kind_does_not_report_is_refused():
    with pytest.raises(ValueError, match="is not one its kind reports"):
        Head("watch_time", REGRESSION, HeadThreshold("AUC", True, 0.5, 0.1), 1.0, ())
    assert isinstance(REGRESSION, HeadKind)
