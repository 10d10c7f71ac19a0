"""Blessing, decided by the pipeline's Evaluator executor with the pipeline's eval config,
on models exported by the pipeline's export code: a constant model is not blessed;
a model clearly worse than the baseline on one head only is not blessed; a first
model with no baseline is judged by the value thresholds alone. The executor's
batched metrics equal those of TFX's own executor (TFMA's per-example evaluator)."""

import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from tfx.components.evaluator.executor import Executor as TfxEvaluatorExecutor
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from components.batched_evaluation import Executor as EvaluatorExecutor
from data.synthetic import SyntheticSpec, generate_rows
from pipeline.config import HeadThreshold, default_thresholds
from pipeline.eval_config import make_eval_config
from recommender import export, features
from recommender.model import ModelConfig
from recommender.training import split_labels
from tests.support import labelled_example, transform_and_train

pytestmark = pytest.mark.slow
OOV = 5


class ConstantModel(tf_keras.Model):
    """Predicts the same values for every row."""

    def __init__(self, liked: float, purchase: float):
        super().__init__()
        self.liked, self.purchase = liked, purchase

    def call(self, inputs, training=None):
        rows = tf.shape(inputs[features.transformed_name(features.USER_ID)])[0]
        return {
            features.BINARY_RATING: tf.fill([rows, 1], self.liked),
            features.PURCHASE_PROBABILITY: tf.fill([rows, 1], self.purchase),
        }


class ConstantPurchaseHead(tf_keras.Model):
    """`model`, with its purchase_probability head replaced by a constant."""

    def __init__(self, model: tf_keras.Model, purchase: float):
        super().__init__()
        self.model, self.purchase = model, purchase

    def call(self, inputs, training=None):
        outputs = dict(self.model(inputs, training=training))
        head = outputs[features.PURCHASE_PROBABILITY]
        outputs[features.PURCHASE_PROBABILITY] = tf.fill(tf.shape(head), self.purchase)
        return outputs


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Eval examples and three exported models: good, constant, good-but-one-head-constant."""
    root = tmp_path_factory.mktemp("blessing")
    rows = generate_rows(SyntheticSpec(num_users=200, num_items=150, num_interactions=10_000, seed=7))
    train_idx, eval_idx = np.arange(8_000), np.arange(8_000, 10_000)
    tft_output, good, columns = transform_and_train(root, rows, train_idx, ModelConfig(epochs=20), OOV)

    mean_purchase = float(np.mean(rows[features.PURCHASE_PROBABILITY][train_idx]))
    models = {
        "good": good,
        "constant": ConstantModel(0.5, mean_purchase),
        "one_head_worse": ConstantPurchaseHead(good, mean_purchase),
    }
    for name, model in models.items():
        model(split_labels({k: tf.constant(v[:2]) for k, v in columns.items()})[0])  # build
        export.export_model(model, tft_output, str(root / "models" / name / "Format-Serving"))

    eval_dir = root / "examples" / "Split-eval"
    eval_dir.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(eval_dir / "data.gz"), options="GZIP") as writer:
        for i in eval_idx:
            writer.write(labelled_example(rows, i))
    return root


def _judge(root, tmp_path, candidate, baseline=None, thresholds=None, executor=EvaluatorExecutor, extra_metric=None):
    """Runs the pipeline's (or another) Evaluator executor, with `extra_metric` (a TFMA class name)
    added to the purchase head's metrics; returns (blessed, failed metric keys)."""
    examples = standard_artifacts.Examples()
    examples.uri = str(root / "examples")
    examples.split_names = json.dumps(["eval"])

    def model(name, artifact_id):
        artifact = standard_artifacts.Model()
        artifact.uri, artifact.id = str(root / "models" / name), artifact_id
        return artifact

    evaluation, blessing = standard_artifacts.ModelEvaluation(), standard_artifacts.ModelBlessing()
    evaluation.uri, blessing.uri = str(tmp_path / "evaluation"), str(tmp_path / "blessing")
    inputs = {"examples": [examples], "model": [model(candidate, 1)]}
    if baseline is not None:
        inputs["baseline_model"] = [model(baseline, 2)]
    eval_config = make_eval_config(thresholds or default_thresholds())
    if extra_metric:
        (spec,) = [m for m in eval_config.metrics_specs if features.PURCHASE_PROBABILITY in m.output_names]
        spec.metrics.add(class_name=extra_metric)
    executor().Do(
        inputs,
        {"evaluation": [evaluation], "blessing": [blessing]},
        {"eval_config": proto_utils.proto_to_json(eval_config), "example_splits": json.dumps(["eval"])},
    )
    import tensorflow_model_analysis as tfma

    result = tfma.load_validation_result(evaluation.uri)
    failed = {
        (f.metric_key.output_name, f.metric_key.name, f.metric_key.is_diff)
        for s in result.metric_validations_per_slice for f in s.failures
    }
    return bool(blessing.get_int_custom_property("blessed")), failed


def test_first_model_without_baseline_is_judged_by_value_thresholds(world, tmp_path):
    blessed, failed = _judge(world, tmp_path, "good")
    assert blessed, failed
    import tensorflow_model_analysis as tfma

    slices = {
        tuple((k.column, k.bytes_value) for k in m.slice_key.single_slice_keys)
        for m in tfma.load_metrics(str(tmp_path / "evaluation"))
    }
    assert () in slices  # overall
    assert (("user_activity", b"many"),) in slices
    assert any(s and s[0][0] == "item_popularity" for s in slices)


def test_constant_model_is_not_blessed(world, tmp_path):
    blessed, failed = _judge(world, tmp_path, "constant")
    assert not blessed
    assert (features.BINARY_RATING, "auc", False) in failed
    assert (features.PURCHASE_PROBABILITY, "root_mean_squared_error", False) in failed


def test_worse_than_baseline_on_one_head_is_not_blessed(world, tmp_path):
    # Loose value bounds: only the comparison with the baseline can fail.
    thresholds = {
        features.BINARY_RATING: HeadThreshold("AUC", True, bound=0.5, max_regression=0.01),
        features.PURCHASE_PROBABILITY: HeadThreshold("RootMeanSquaredError", False, 0.5, 0.01),
    }
    blessed, failed = _judge(world, tmp_path, "one_head_worse", baseline="good", thresholds=thresholds)
    assert not blessed
    assert failed == {(features.PURCHASE_PROBABILITY, "root_mean_squared_error", True)}
    blessed, failed = _judge(world, tmp_path / "same", "good", baseline="good", thresholds=thresholds)
    assert blessed, failed  # an equally good model passes the change thresholds


@pytest.mark.parametrize(("candidate", "baseline"), [("one_head_worse", "good"), ("constant", None)])
def test_batched_metrics_plots_and_verdict_equal_tfmas_own(world, tmp_path, candidate, baseline):
    """Every metric (diffs against the baseline included), every plot bucket, every failed
    threshold and the blessing: the pipeline's executor against TFX's, on the same inputs."""
    import tensorflow_model_analysis as tfma

    from results.evaluation import evaluation_metrics

    thresholds = {
        features.BINARY_RATING: HeadThreshold("AUC", True, bound=0.7, max_regression=0.01),
        features.PURCHASE_PROBABILITY: HeadThreshold("RootMeanSquaredError", False, 0.3, 0.01),
    }
    outcomes, metrics, plots = {}, {}, {}
    for name, executor in (("batched", EvaluatorExecutor), ("tfma", TfxEvaluatorExecutor)):
        outcomes[name] = _judge(world, tmp_path / name, candidate, baseline, thresholds, executor)
        metrics[name] = evaluation_metrics(str(tmp_path / name / "evaluation"))
        plots[name] = {
            (str(p.slice_key), kv.key.model_name, kv.key.output_name): [
                (b.num_weighted_examples.value, b.total_weighted_label.value, b.total_weighted_refined_prediction.value)
                for b in kv.value.calibration_histogram_buckets.buckets
            ]
            for p in tfma.load_plots(str(tmp_path / name / "evaluation")) for kv in p.plot_keys_and_values
        }
    assert outcomes["batched"] == outcomes["tfma"]
    assert metrics["batched"].keys() == metrics["tfma"].keys() and len(metrics["tfma"]) > 1  # the same slices
    for slice_name, table in metrics["tfma"].items():
        assert metrics["batched"][slice_name].keys() == table.keys(), slice_name
        if baseline:
            assert any(is_diff for (_, _, _, is_diff) in table)
        for key, value in table.items():
            assert metrics["batched"][slice_name][key] == pytest.approx(value, rel=1e-6, abs=1e-6, nan_ok=True), (slice_name, key)
    assert plots["batched"].keys() == plots["tfma"].keys() and plots["tfma"]
    for key, buckets in plots["tfma"].items():
        assert np.allclose(plots["batched"][key], buckets, rtol=1e-6, atol=1e-9, equal_nan=True), key


def test_a_metric_without_a_batched_form_is_computed_by_tfma(world, tmp_path):
    """The executor hands the whole evaluation to TFX's own when a config asks for more."""
    import tensorflow_model_analysis as tfma

    blessed, failed = _judge(world, tmp_path, "good", extra_metric="MeanSquaredLogarithmicError")
    assert blessed, failed
    names = {kv.key.name for m in tfma.load_metrics(str(tmp_path / "evaluation")) for kv in m.metric_keys_and_values}
    assert {"mean_squared_logarithmic_error", "root_mean_squared_error", "auc"} <= names
